"""Kernel helpers: the dilated kernel the tutorial builds, and its extent."""

from __future__ import annotations

from typing import Any

import numpy as np

from dilconv import _shapes
from dilconv._spec import as_array, as_int, as_pair


def dilate_taps(w: np.ndarray, dilation: tuple[int, int], axes: tuple[int, int]) -> np.ndarray:
    """Insert ``dilation - 1`` zeros between taps along ``axes`` (no validation)."""
    shape = list(w.shape)
    for axis, d in zip(axes, dilation, strict=True):
        shape[axis] = _shapes.effective_size(w.shape[axis], d)
    out = np.zeros(shape, dtype=w.dtype)
    index: list[slice] = [slice(None)] * w.ndim
    for axis, d in zip(axes, dilation, strict=True):
        index[axis] = slice(None, None, d)
    out[tuple(index)] = w
    return out


def dilate_kernel(w: Any, dilation: Any, *, axes: Any = (-2, -1)) -> np.ndarray:
    """Insert ``dilation - 1`` zeros between neighbouring taps along two axes.

    Parameters
    ----------
    w : array_like
        The kernel: ``(kh, kw)``, OIHW (``axes=(-2, -1)``, the default) or HWIO
        (``axes=(0, 1)``).
    dilation : int or (int, int)
        Spacing between taps, ``>= 1``; 1 returns a copy of ``w``.
    axes : (int, int), optional
        The two spatial axes of ``w``.

    Returns
    -------
    numpy.ndarray
        The dilated kernel, of extent ``dilation * (k - 1) + 1`` along each axis.

    Notes
    -----
    A ``d``-dilated convolution with ``w`` equals an ordinary (1-dilated)
    convolution with ``dilate_kernel(w, d)``; a 3x3 kernel becomes
    ``(2d + 1) x (2d + 1)``.

    Examples
    --------
    >>> import numpy as np
    >>> dilate_kernel(np.arange(1, 5).reshape(2, 2), 2)
    array([[1, 0, 2],
           [0, 0, 0],
           [3, 0, 4]])
    """
    arr = as_array("w", w)
    pair = as_pair("dilation", dilation, minimum=1)
    if not isinstance(axes, (tuple, list)) or len(axes) != 2:
        raise TypeError(f"axes must be a pair of ints, got {axes!r}")
    resolved = []
    for k, a in enumerate(axes):
        a = as_int(f"axes[{k}]", a, minimum=-arr.ndim)
        if a >= arr.ndim:
            raise ValueError(f"axes[{k}]={a} is out of range for w of ndim {arr.ndim}")
        resolved.append(a % arr.ndim)
    if resolved[0] == resolved[1]:
        raise ValueError(f"axes must name two different axes, got {tuple(axes)}")
    return dilate_taps(arr, pair, (resolved[0], resolved[1]))


def effective_kernel_size(k: Any, dilation: Any) -> int | tuple[int, int]:
    """Extent of a dilated kernel: ``dilation * (k - 1) + 1`` per axis.

    Parameters
    ----------
    k : int or (int, int)
        Taps along each axis.
    dilation : int or (int, int)
        Spacing between taps.

    Returns
    -------
    int or (int, int)
        An int when both arguments are ints, else a pair.

    Examples
    --------
    >>> effective_kernel_size(3, 4)
    9
    >>> effective_kernel_size((3, 5), (2, 1))
    (5, 5)
    """
    kk = as_pair("k", k, minimum=1)
    dd = as_pair("dilation", dilation, minimum=1)
    sizes = (_shapes.effective_size(kk[0], dd[0]), _shapes.effective_size(kk[1], dd[1]))
    if isinstance(k, (int, np.integer)) and isinstance(dilation, (int, np.integer)):
        return sizes[0]
    return sizes

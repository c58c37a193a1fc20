"""Moving arrays between the caller's layout and the canonical one the algorithms use.

Canonical activations (inputs, outputs and their gradients) are ``(N, H, W, C)``;
canonical weights are ``(kh, kw, C/groups, O)`` (TensorFlow's HWIO).
"""

from __future__ import annotations

import numpy as np

from dilconv._native import channels, results
from dilconv._spec import ConvSpec


def to_canonical(a: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Activations in the caller's layout and rank -> contiguous NHWC in ``spec.dtype``."""
    if spec.x_ndim == 2:
        a = a[None, :, :, None]
    elif spec.x_ndim == 3:
        a = a[None]
    if spec.x_ndim != 2 and spec.data_format == "NCHW":
        if a.dtype == spec.dtype and a.flags.c_contiguous:
            moved = channels.move_channels(a, last=True)
            if moved is not None:
                return moved
        a = a.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(a, dtype=spec.dtype)


def from_canonical(a: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Canonical NHWC activations -> the caller's layout and rank, in ``spec.out_dtype``."""
    if spec.x_ndim == 2:
        a = a[0, :, :, 0]
    else:
        if spec.data_format == "NCHW":
            moved = None
            if a.dtype == spec.out_dtype and a.flags.c_contiguous:
                moved = channels.move_channels(a, last=False)
            a = a.transpose(0, 3, 1, 2) if moved is None else moved
        if spec.x_ndim == 3:
            a = a[0]
    return np.ascontiguousarray(a, dtype=spec.out_dtype)


def weight_to_canonical(
    w: np.ndarray, spec: ConvSpec, *, strided: bool = False, as_given: bool = False
) -> np.ndarray:
    """Weights in the caller's layout -> contiguous HWIO, flipped when ``spec.flip``.

    ``strided=True`` (for the methods that pack the weights themselves: ``blocked``,
    ``winograd``): NCHW weights may come back as an HWIO view of the compiled
    transpose's ``(C/groups, kh, kw, O)`` array, whose runs of ``O`` the packings read
    as they are. On ``aspp`` (19 MiB of weights) packing then took 1.2-1.9 ms less.
    ``as_given=True`` (``winograd``, which moves them block by block as it transforms
    them): C-contiguous NCHW weights of the computing dtype come back as an HWIO view
    of the caller's array itself (:func:`output_major`), not moved at all.
    """
    if spec.x_ndim == 2:
        w = w[:, :, None, None]
    elif spec.data_format == "NCHW":
        if as_given and not spec.flip and w.dtype == spec.dtype and w.flags.c_contiguous:
            return w.transpose(2, 3, 1, 0)
        w = _oihw_to_hwio(w, spec.dtype)
    if spec.flip:
        w = w[::-1, ::-1]
    if w.dtype == spec.dtype and (w.flags.c_contiguous or (strided and channel_major(w))):
        return w
    # large weights on memory an earlier call let go of (fresh pages cost zeroing)
    hwio = results.new_result(w.shape, spec.dtype)
    np.copyto(hwio, w, casting="unsafe")
    return hwio


def channel_major(w: np.ndarray) -> bool:
    """Whether HWIO ``w`` is a view of a C-contiguous ``(C/groups, kh, kw, O)`` array.

    Examples
    --------
    >>> import numpy as np
    >>> channel_major(np.zeros((4, 3, 3, 8)).transpose(1, 2, 0, 3))
    True
    >>> channel_major(np.zeros((3, 3, 4, 8)))
    False
    """
    return not w.flags.c_contiguous and w.transpose(2, 0, 1, 3).flags.c_contiguous


def output_major(w: np.ndarray) -> bool:
    """Whether HWIO ``w`` is a view of a C-contiguous ``(O, C/groups, kh, kw)`` array
    (PyTorch's layout, as :func:`weight_to_canonical` hands it over with ``as_given``).

    Examples
    --------
    >>> import numpy as np
    >>> output_major(np.zeros((8, 4, 3, 3)).transpose(2, 3, 1, 0))
    True
    >>> output_major(np.zeros((3, 3, 4, 8)))
    False
    """
    return not w.flags.c_contiguous and w.transpose(3, 2, 0, 1).flags.c_contiguous


def _oihw_to_hwio(w: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """PyTorch's ``(O, C/groups, kh, kw)`` as HWIO (a view, or a new array).

    NumPy copies the transposed view element by element, each from another row of
    ``w`` (``aspp``'s 19 MiB of weights: 15 ms). Large weights instead move as the
    ``(O, C/groups * kh * kw)`` matrix by the compiled transpose into
    ``(C/groups, kh, kw, O)``, whose runs of ``O`` NumPy then puts in tap order
    (4.5-6 ms there).
    """
    if w.dtype == dtype and w.flags.c_contiguous:
        o, cg, kh, kw = w.shape
        moved = channels.move_channels(w.reshape(1, o, cg, kh * kw), last=True)
        if moved is not None:
            return moved.reshape(cg, kh, kw, o).transpose(1, 2, 0, 3)
    return w.transpose(2, 3, 1, 0)


def weight_from_canonical(w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Canonical HWIO -> the caller's weight layout, undoing the flip (for gradients)."""
    if spec.flip:
        w = w[::-1, ::-1]
    if spec.x_ndim == 2:
        w = w[:, :, 0, 0]
    elif spec.data_format == "NCHW":
        w = w.transpose(3, 2, 0, 1)
    return np.ascontiguousarray(w, dtype=spec.out_dtype)

"""Padding modes and their adjoints, both written as one index map per axis.

Every mode is a gather: padded position ``p`` along an axis reads source index
``source_index(n, lo, hi, mode)[p]`` (``-1`` for a zero). The forward pad is that
gather; its adjoint, used by the gradients, is the matching scatter-add, so a
reflected or wrapped pixel's gradient adds up into the pixel it was copied from.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from dilconv._spec import Pads

_NUMPY_MODES: dict[str, Literal["reflect", "edge", "wrap", "symmetric"]] = {
    "reflect": "reflect",
    "replicate": "edge",
    "circular": "wrap",
    "symmetric": "symmetric",
}


def source_index(n: int, lo: int, hi: int, mode: str) -> np.ndarray:
    """Source index of each of the ``lo + n + hi`` padded positions (``-1``: zero)."""
    if mode == "zeros":
        return np.concatenate(
            [np.full(lo, -1, np.intp), np.arange(n, dtype=np.intp), np.full(hi, -1, np.intp)]
        )
    return np.pad(np.arange(n, dtype=np.intp), (lo, hi), mode=_NUMPY_MODES[mode])


def pad_spatial(x: np.ndarray, pad: Pads, mode: str, axes: tuple[int, int] = (1, 2)) -> np.ndarray:
    """Pad the two spatial ``axes`` of ``x`` by ``pad`` in ``mode``.

    Examples
    --------
    >>> import numpy as np
    >>> pad_spatial(np.arange(3.0).reshape(1, 1, 3, 1), ((0, 0), (2, 2)), "reflect")[0, 0, :, 0]
    array([2., 1., 0., 1., 2., 1., 0.])
    """
    widths = [(0, 0)] * x.ndim
    widths[axes[0]], widths[axes[1]] = pad
    if mode == "zeros":
        return np.pad(x, widths)
    return np.pad(x, widths, mode=_NUMPY_MODES[mode])


def pad_spatial_adjoint(
    g: np.ndarray, pad: Pads, mode: str, in_hw: tuple[int, int], axes: tuple[int, int] = (1, 2)
) -> np.ndarray:
    """Adjoint of :func:`pad_spatial`: fold the gradient of padded pixels into sources.

    ``<pad_spatial(x), g> == <x, pad_spatial_adjoint(g)>`` for every ``x`` and ``g``.
    """
    out = g
    for axis, n, (lo, hi) in zip(axes, in_hw, pad, strict=True):
        index = source_index(n, lo, hi, mode)
        keep = index >= 0
        shape = list(out.shape)
        shape[axis] = n
        folded = np.zeros(shape, dtype=g.dtype)
        moved_src = np.moveaxis(out, axis, 0)[keep]
        np.add.at(np.moveaxis(folded, axis, 0), index[keep], moved_src)
        out = folded
    return out


def zero_padded_rows(x: np.ndarray, pad: Pads, start: int, stop: int) -> np.ndarray:
    """Rows ``[start, stop)`` (padded coordinates) of NHWC ``x`` zero-padded by ``pad``.

    Only that slab is allocated, so chunked algorithms stay within their workspace.
    """
    n, h, w, c = x.shape
    (top, _), (left, right) = pad
    slab = np.zeros((n, stop - start, left + w + right, c), dtype=x.dtype)
    src0, src1 = max(start - top, 0), min(stop - top, h)
    if src1 > src0:
        slab[:, src0 + top - start : src1 + top - start, left : left + w] = x[:, src0:src1]
    return slab

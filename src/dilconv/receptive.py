"""Receptive fields of dilated stacks, and the coverage maps that show gridding."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from dilconv import _shapes
from dilconv._spec import as_int


class ReceptiveField(NamedTuple):
    """The receptive field ``size`` and the ``jump`` (effective stride) after a layer."""

    size: int
    jump: int


def _layers(layers: Any) -> list[tuple[int, int, int]]:
    if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
        raise TypeError(f"layers must be a list of (kernel, stride, dilation), got {layers!r}")
    parsed = []
    for n, layer in enumerate(layers):
        if not isinstance(layer, (tuple, list)) or len(layer) != 3:
            raise ValueError(f"layers[{n}] must be (kernel, stride, dilation), got {layer!r}")
        k, s, d = (as_int(f"layers[{n}][{i}]", v, minimum=1) for i, v in enumerate(layer))
        parsed.append((k, s, d))
    if not parsed:
        raise ValueError("layers must name at least one layer, got an empty list")
    return parsed


def receptive_field(layers: Any) -> list[ReceptiveField]:
    """Receptive field size and jump after each layer of a stack.

    Parameters
    ----------
    layers : sequence of (kernel, stride, dilation)
        The stack, input side first; each layer is square. The sizes hold per
        axis, so for ``conv1d`` and ``conv3d`` stacks too.

    Returns
    -------
    list of ReceptiveField
        ``(size, jump)`` after each layer: the input pixels one output pixel
        depends on, per axis, and the input step between neighbouring outputs.

    Notes
    -----
    ``size += (dilation * (kernel - 1)) * jump`` and ``jump *= stride`` at each layer.

    Examples
    --------
    >>> [r.size for r in receptive_field([(3, 1, 1), (3, 1, 2), (3, 1, 4)])]
    [3, 7, 15]
    """
    return [ReceptiveField(rf, jump) for rf, jump in _shapes.receptive_field_sizes(_layers(layers))]


def _path_counts(layers: list[tuple[int, int, int]]) -> np.ndarray:
    """1-D: the number of paths from one output pixel to each input pixel."""
    counts = np.ones(1, dtype=np.int64)
    for k, s, d in reversed(layers):
        below = np.zeros((counts.size - 1) * s + _shapes.effective_size(k, d), dtype=np.int64)
        for t in range(k):
            below[t * d : t * d + (counts.size - 1) * s + 1 : s] += counts
        counts = below
    return counts


def coverage(layers: Any, *, rank: int = 2) -> np.ndarray:
    """How many paths lead from one output pixel to each input pixel of its field.

    Parameters
    ----------
    layers : sequence of (kernel, stride, dilation)
        The stack, input side first.
    rank : {1, 2, 3}
        Spatial axes: a stack of ``conv1d``, ``conv2d`` or ``conv3d`` layers (each
        layer the same along every axis).

    Returns
    -------
    numpy.ndarray
        ``(size,) * rank`` int64 counts; zeros inside the field are the gridding
        holes that a stack of equal dilations leaves.

    Examples
    --------
    >>> coverage([(3, 1, 2), (3, 1, 2)])[0]
    array([1, 0, 2, 0, 3, 0, 2, 0, 1])
    >>> int((coverage([(3, 1, 1), (3, 1, 2), (3, 1, 5)]) == 0).sum())
    0
    >>> coverage([(2, 1, 1), (2, 1, 2)], rank=1)
    array([1, 1, 1, 1])
    """
    rank = as_int("rank", rank, minimum=1)
    if rank > 3:
        raise ValueError(f"rank must be 1, 2 or 3, got {rank}")
    counts = _path_counts(_layers(layers))
    grid = counts
    for _ in range(rank - 1):
        grid = np.multiply.outer(grid, counts)
    return grid

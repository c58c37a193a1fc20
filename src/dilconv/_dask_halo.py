"""The border and the chunk plan of :mod:`dilconv.dask`, one spatial axis at a time.

The outer border is built lazily from :func:`dilconv._padding.source_index`, the
same index map ``conv2d`` pads with: padded position ``p`` reads source row
``index[p]`` (``-1``: a zero). The map is cut into runs (zeros, forward copies,
reversed copies, repeats of one row), each a dask slice, so a reflected or wrapped
border costs a few small chunks and never a gather over the whole axis.
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np

from dilconv._padding import source_index

Run = tuple[str, int, int]  # (kind, first source index, length); kind: zero, up, down, repeat


def index_runs(index: np.ndarray) -> list[Run]:
    """Cut a padding index map into runs of zeros, ``+1`` steps, ``-1`` steps or repeats.

    Examples
    --------
    >>> import numpy as np
    >>> index_runs(np.array([2, 1, 0, 1, 2, 3, 2]))
    [('down', 2, 3), ('up', 1, 3), ('up', 2, 1)]
    >>> index_runs(np.array([-1, -1, 0, 1, 1, 1]))
    [('zero', 0, 2), ('up', 0, 2), ('repeat', 1, 2)]
    """
    steps = {1: "up", -1: "down", 0: "repeat"}
    runs: list[Run] = []
    i, n = 0, len(index)
    while i < n:
        j = i + 1
        if index[i] < 0:
            while j < n and index[j] < 0:
                j += 1
            runs.append(("zero", 0, j - i))
        else:
            step = int(index[j] - index[i]) if j < n and index[j] >= 0 else 1
            step = step if step in steps else 1
            while j < n and index[j] >= 0 and index[j] - index[j - 1] == step:
                j += 1
            runs.append((steps[step], int(index[i]), j - i))
        i = j
    return runs


def _take(x: da.Array, axis: int, start: int, stop: int | None, step: int = 1) -> da.Array:
    where: list[Any] = [slice(None)] * x.ndim
    where[axis] = slice(start, stop, step)
    return x[tuple(where)]


def pad_axis(x: da.Array, axis: int, lo: int, hi: int, mode: str, keep: int) -> da.Array:
    """The first ``keep`` rows of ``x`` padded by ``(lo, hi)`` along ``axis`` in ``mode``."""
    n = x.shape[axis]
    index = source_index(n, lo, hi, mode)[:keep]
    if lo == 0 and keep <= n:
        return _take(x, axis, 0, keep)
    pieces = []
    for kind, first, length in index_runs(index):
        if kind == "zero":
            shape = list(x.shape)
            shape[axis] = length
            chunks = list(x.chunks)
            chunks[axis] = (length,)
            pieces.append(da.zeros(shape, dtype=x.dtype, chunks=tuple(chunks)))
        elif kind == "up":
            pieces.append(_take(x, axis, first, first + length))
        elif kind == "down":
            stop = first - length
            pieces.append(_take(x, axis, first, None if stop < 0 else stop, -1))
        else:
            pieces.append(da.repeat(_take(x, axis, first, first + 1), length, axis=axis))
    return da.concatenate(pieces, axis=axis)

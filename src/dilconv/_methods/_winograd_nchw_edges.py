"""The outputs of :mod:`~dilconv._methods._winograd_nchw` that no whole tile covers.

A phase's last row or column of outputs is unpaired when its count is odd; those
outputs are computed directly, as :func:`dilconv._methods.winograd.direct_calls`
does for NHWC, by ``blocked``'s tile loop, which reads the NCHW input in place. Its
sums are vectors of output channels, so they go to a compact NHWC buffer first and
the compiled transpose moves them into the NCHW result.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from dilconv._methods import blocked, winograd
from dilconv._native import calls, kernels
from dilconv._spec import ConvSpec


def runs(values: list[int]) -> list[tuple[int, int, int]]:
    """``(first value, its index, count)`` of each run of consecutive values."""
    runs: list[tuple[int, int, int]] = []
    for k, v in enumerate(values):
        if runs and v == runs[-1][0] + runs[-1][2]:
            runs[-1] = (runs[-1][0], runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((v, k, 1))
    return runs


def table(values: np.ndarray) -> np.ndarray:
    """``values`` as a read-only, C-contiguous int64 table."""
    result = np.ascontiguousarray(values, dtype=np.int64)
    result.flags.writeable = False
    return result


@dataclasses.dataclass(frozen=True)
class DirectCalls:
    """The outputs no whole tile covers, for the whole batch: ``blocked``'s tile loop
    computes them into the compact NHWC slot ``D`` (``size`` elements; slot ``x``
    the NCHW input, ``w`` ``blocked``'s packing), each thread its share, then the
    transposes move them into the NCHW result ``y``, each thread its share."""

    shares: tuple[tuple[calls.Call, ...], ...]
    moves: tuple[tuple[calls.Call, ...], ...]
    size: int


def _split(items: list[calls.Call], threads: int) -> tuple[tuple[calls.Call, ...], ...]:
    return tuple(tuple(items[len(items) * k // threads : len(items) * (k + 1) // threads])
                 for k in range(threads))  # fmt: skip


@functools.lru_cache(maxsize=64)
def direct_calls(spec: ConvSpec, threads: int) -> DirectCalls | None:
    """The :class:`DirectCalls` of ``spec`` (None: whole tiles cover every output).

    ``D`` holds first the single rows (every column), then the single columns of
    the other rows, row by row. Computed once per call, after every band, as
    :func:`winograd.direct_calls` does for NHWC (a band's own pass would read all
    of ``blocked``'s weights again for a few pixels).
    """
    (ho, wo), o = spec.out_hw, spec.out_channels
    lay = winograd.layout(spec)
    if not lay.single_rows and not lay.single_cols:
        return None
    every = blocked.layout(spec, channels_first=True)
    image, oy = np.divmod(np.arange(spec.batch * ho, dtype=np.int64), ho)
    single = np.isin(oy, lay.single_rows)
    cols = np.array(lay.single_cols, dtype=np.int64)
    parts = []  # (rows, column tables) of each part
    # the single rows, every column
    rows_a = every.rows[single].copy()
    rows_a[:, 1] = np.arange(len(rows_a), dtype=np.int64) * wo * o
    tables_a = tuple((n, _moved(t, np.asarray(t[:, 1]) * o)) for n, t in every.columns)
    parts.append((rows_a, tables_a))
    # the single columns of the other rows
    base = len(rows_a) * wo * o
    rows_b = every.rows[~single].copy()
    rows_b[:, 1] = base + np.arange(len(rows_b), dtype=np.int64) * len(cols) * o
    tables_b = tuple(
        (n, _moved(t, np.searchsorted(cols, t[:, 1]) * o))
        for n, t in blocked.column_tables(spec, every.plan.pixels, cols, channels_first=True)
    )
    parts.append((rows_b, tables_b))
    shares: list[list[calls.Call]] = [[] for _ in range(threads)]
    for rows, tables in parts:
        if len(rows) and tables:
            part = blocked.region_calls(
                spec, table(rows), tables, threads, channels_first_input=True, out="D"
            )
            for share, more in zip(shares, part.shares, strict=True):
                share.extend(more)
    move = kernels.transpose(spec.dtype)
    moves = []
    plane = o * ho * wo

    def turn(source: int, target: int, pixels: int) -> None:
        moves.append(
            move.call(
                source=calls.Slot("D", source),
                target=calls.Slot("y", target),
                rows=pixels,
                columns=o,
                source_row=o,
                target_row=ho * wo,
            )
        )

    # a run of rows ends with its image: keyed by image * (ho + 1) + row
    for first, k, count in runs((image[single] * (ho + 1) + oy[single]).tolist()):
        n, y0 = divmod(first, ho + 1)
        turn(k * wo * o, n * plane + y0 * wo, count * wo)
    column_runs = runs(cols.tolist())
    for k, (n, y0) in enumerate(zip(image[~single], oy[~single], strict=True)):
        for c0, i, count in column_runs:
            turn(base + (k * len(cols) + i) * o, int(n) * plane + int(y0) * wo + c0, count)
    size = base + len(rows_b) * len(cols) * o
    return DirectCalls(tuple(tuple(x) for x in shares), _split(moves, threads), size)


def _moved(columns: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """A column table with its output offsets (column 1) replaced by ``outputs``."""
    moved = columns.copy()
    moved[:, 1] = outputs
    return table(moved)

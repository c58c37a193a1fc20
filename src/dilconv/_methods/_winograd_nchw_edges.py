"""The outputs of Winograd's NCHW routes that no whole tile covers, and the run of a call.

A phase's last row or column of outputs is unpaired when its count is odd; those
outputs are computed directly, as :func:`dilconv._methods.winograd.direct_calls`
does for NHWC, by ``blocked``'s tile loop, which reads the NCHW input in place. Its
sums are vectors of output channels, so they go to a compact NHWC buffer first and
the compiled transpose moves them into the NCHW result.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator

import numpy as np

from dilconv._methods import blocked, winograd
from dilconv._native import calls, kernels, pool
from dilconv._native.sequence import Sequence
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
    """The outputs no whole tile covers, for the whole batch, as independent items
    (each a tuple of calls, run in order by one thread): ``blocked``'s tile loop
    computes them into the compact NHWC slot ``D`` (``size`` elements; slot ``x``
    the NCHW input, ``w`` ``blocked``'s packing), then the compiled transpose moves
    them into the NCHW result ``y``. Where the blocks of output channels deal
    evenly among the threads (:func:`~dilconv._methods.blocked.dealt_blocks`) each
    item computes and moves its own blocks; else one item does everything."""

    items: tuple[tuple[calls.Call, ...], ...]
    size: int


@functools.lru_cache(maxsize=64)
def direct_calls(spec: ConvSpec, threads: int) -> DirectCalls | None:
    """The :class:`DirectCalls` of ``spec`` (None: whole tiles cover every output).

    ``D`` holds first the single rows (every column), then for each image the
    single columns of the other rows, row by row. The single rows are tiles along
    them, the single columns tiles down them
    (:func:`~dilconv._methods.blocked.column_region_tables`: along a row, each row's
    single columns were a tile reading every weight again). Run after every band
    (a band writes whole runs of its output rows), as one job whose items each
    compute and move their own output channels, or as one item on the caller's
    thread.
    """
    (ho, wo), o = spec.out_hw, spec.out_channels
    lay = winograd.layout(spec)
    if not lay.single_rows and not lay.single_cols:
        return None
    dealt = blocked.dealt_blocks(spec, threads)
    count = threads if dealt is not None else 1
    every = blocked.layout(spec, channels_first=True)
    image, oy = np.divmod(np.arange(spec.batch * ho, dtype=np.int64), ho)
    single = np.isin(oy, lay.single_rows)
    cols = np.array(lay.single_cols, dtype=np.int64)
    others = np.flatnonzero(~np.isin(np.arange(ho), lay.single_rows))
    shares: list[list[calls.Call]] = [[] for _ in range(count)]

    def add(region: blocked.TileCalls) -> None:
        for share, more in zip(shares, region.shares, strict=True):
            share.extend(more)

    # the single rows, every column
    rows_a = every.rows[single].copy()
    rows_a[:, 1] = np.arange(len(rows_a), dtype=np.int64) * wo * o
    tables_a = tuple((n, _moved(t, np.asarray(t[:, 1]) * o)) for n, t in every.columns)
    if len(rows_a):
        add(blocked.region_calls(
            spec, table(rows_a), tables_a, count, channels_first_input=True, out="D",
            by_outputs=True,
        ))  # fmt: skip
    # the single columns of the other rows, by tiles down each column
    base = len(rows_a) * wo * o
    per_image = len(others) * len(cols) * o
    if len(cols) and len(others):
        row_table, tables_b = blocked.column_region_tables(spec, cols, others, channels_first=True)
        rows_b = row_table.copy()
        picked = np.arange(len(rows_b), dtype=np.int64)
        rows_b[:, 1] = base + picked // len(cols) * per_image + picked % len(cols) * o
        moved_b = tuple(
            (n, _moved(t, np.searchsorted(others, t[:, 1] // (wo * o)) * len(cols) * o))
            for n, t in tables_b
        )
        add(blocked.region_calls(
            spec, table(rows_b), moved_b, count, channels_first_input=True, out="D",
            down_columns=True, by_outputs=True, out_pitch=len(cols) * o,
        ))  # fmt: skip
    move = kernels.transpose(spec.dtype)
    plane = o * ho * wo
    # the channels each item moves: its own blocks where they were dealt, else all
    ranges = [[(0, o)]] if dealt is None else [[b for _, b in share] for share in dealt]

    pieces = []  # (offset in D, offset in y, pixels) of each run moved
    # a run of rows ends with its image: keyed by image * (ho + 1) + row
    for first, at, n_rows in runs((image[single] * (ho + 1) + oy[single]).tolist()):
        n, y0 = divmod(first, ho + 1)
        pieces.append((at * wo * o, n * plane + y0 * wo, n_rows * wo))
    column_runs = runs(cols.tolist())
    for n in range(spec.batch):
        for i, y0 in enumerate(others.tolist()):
            for c0, j, n_cols in column_runs:
                source = base + n * per_image + (i * len(cols) + j) * o
                pieces.append((source, n * plane + y0 * wo + c0, n_cols))
    for share, channels in zip(shares, ranges, strict=True):
        share.extend(
            move.call(
                source=calls.Slot("D", source + o0),
                target=calls.Slot("y", target + o0 * ho * wo),
                rows=pixels,
                columns=o1 - o0,
                source_row=o,
                target_row=ho * wo,
            )
            for source, target, pixels in pieces
            for o0, o1 in channels
        )
    return DirectCalls(tuple(Sequence(share) for share in shares), base + spec.batch * per_image)


def _moved(columns: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """A column table with its output offsets (column 1) replaced by ``outputs``."""
    moved = columns.copy()
    moved[:, 1] = outputs
    return table(moved)


def run_call(
    x: np.ndarray,
    y: np.ndarray,
    steps: tuple[tuple[calls.Call, ...], ...],
    arrays: Callable[[], dict[str, np.ndarray]],
    spec: ConvSpec,
    direct: DirectCalls | None,
    weights: np.ndarray | None,
    key: str,
) -> None:
    """Run an NCHW route's bands into ``y``, then the outputs no whole tile covers.

    Each image's bands (``steps``) are taken one at a time by
    :func:`~dilconv._methods.winograd.thread_count` threads, each binding its own
    ``arrays()`` (with a ``flags`` slot) and slots ``x`` and ``y`` per image. Under
    :func:`~dilconv._methods.winograd.finite_guard` a non-finite flag raises
    :class:`~dilconv._methods.winograd.NonFiniteInput`. Then ``direct`` (with
    ``blocked``'s packing ``weights``), after every band: a band writes whole runs of
    its output rows, single columns included.
    """
    work = [(image, k) for image in range(len(x)) for k in range(len(steps))]
    threads = max(1, min(len(work), winograd.thread_count(spec)))
    shared = iter(work)  # taken one at a time, as in winograd.conv
    flags: list[np.ndarray] = []

    def run(share: Iterator[tuple[int, int]]) -> None:
        bound = calls.Binding(**arrays())
        flags.append(bound.arrays["flags"])
        current = -1
        for image, k in share:
            if image != current:
                bound.set(x=x[image], y=y[image])
                current = image
            bound.run(steps[k])

    pool.parallel_map(run, [shared] * threads, key=(key, spec))
    if winograd.guarded() and not all(np.isfinite(f).all() for f in flags):
        raise winograd.NonFiniteInput("winograd read a NaN or Inf in its input")
    if direct is not None and weights is not None:
        edges = calls.Binding(x=x, w=weights, D=np.empty(direct.size, dtype=spec.dtype), y=y)
        pool.parallel_map(edges.run, direct.items, key=(f"{key} edges", spec))

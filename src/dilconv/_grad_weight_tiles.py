"""The weight gradient by register-blocked tiles: ``blocked``'s compiled loop, roles swapped.

``dw[i, j, c, o] = sum over n, r, q of x[n, r*sh - top + i*dh, q*sw - left + j*dw, c]
* g[n, r, q, o]``: for each kernel tap, the product of the input pixels the tap
reads (``C`` columns) with the output gradient (``O`` columns) over the output
pixels where it reads real input. The tile loop of
:mod:`dilconv._native.tile_kernel` computes it with the roles of its axes
swapped: a tile's *pixels* are a few input channels, its vectors the output
channels, the *channels* it sums are the output columns of a row (stride ``sw * C``
in the input, ``O`` in the gradient), and its *kernel rows* are output rows. The
sums stay in registers across a band of output rows; nothing is copied or padded.

The output rows are cut into bands whose input and gradient rows fit in a core's
cache (:data:`BAND_BYTES`); one call per kernel column runs every band's kernel
rows, each adding its band's sums into ``dw``. Bands are shared among threads,
each with its own ``dw`` (summed at the end). An image of one output row longer
than a band (a 1-D signal: ``tcn1d``'s 32000 samples of 64 channels are 16 MiB) is
*folded*: its row is cut into runs of :func:`run_columns` output columns, each run
a band of one row whose summed "channels" are the run's columns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from dilconv._methods import blocked
from dilconv._native import calls, kernels, pool
from dilconv._spec import ConvSpec

#: Input plus gradient bytes of one band of output rows: half a core's L2 cache.
BAND_BYTES = 2**19

#: Independent sums a core needs to keep its multiply-adds busy (2 units of 4
#: cycles' latency): a tile of fewer sums runs at that fraction of the rate.
CHAINS = 8


def applies(spec: ConvSpec) -> bool:
    """float32/float64, something to compute, rows that fit a band, the compiled loop.

    When one output row's input and gradient rows are more than :data:`BAND_BYTES`,
    every tile's pass streams them from beyond the core's cache: on ``aspp``
    (2048 channels of 65 pixels a row) the tiles took 290-310 ms where the column
    windows' matrix products took 190, so such calls are left to those.
    """
    return (
        spec.dtype in blocked.DTYPES
        and min(*spec.out_hw, spec.batch, spec.in_channels) > 0
        and (row_bytes(spec) <= BAND_BYTES or folds(spec))
        and (blocked.refusal(spec) or blocked._unavailable()) is None  # loads the tile loop
    )


def row_bytes(spec: ConvSpec) -> int:
    """Input and gradient bytes that one output row reads."""
    item = spec.dtype.itemsize
    per_row = spec.stride[0] * spec.in_hw[1] * spec.in_channels * item
    return per_row + spec.out_hw[1] * spec.out_channels * item


def folds(spec: ConvSpec) -> bool:
    """One output row per image, longer than a band: cut into runs of columns."""
    return spec.out_hw[0] == 1 and row_bytes(spec) > BAND_BYTES


def run_columns(spec: ConvSpec) -> int:
    """Output columns per run of a folded row: :data:`BAND_BYTES` of input and gradient."""
    per_column = (spec.stride[1] * spec.in_channels + spec.out_channels) * spec.dtype.itemsize
    return max(1, BAND_BYTES // per_column)


def band_count(spec: ConvSpec) -> int:
    """Bands of every image: runs of columns when folded, else bands of rows."""
    if folds(spec):
        return spec.batch * math.ceil(spec.out_hw[1] / run_columns(spec))
    return spec.batch * math.ceil(spec.out_hw[0] / band_rows(spec))


def band_rows(spec: ConvSpec) -> int:
    """Output rows per band: :data:`BAND_BYTES` of input and gradient rows."""
    return int(max(1, min(spec.out_hw[0], BAND_BYTES // row_bytes(spec))))


def threads(spec: ConvSpec) -> int:
    """Threads sharing the bands."""
    return max(1, min(pool.num_threads(), band_count(spec)))


def workspace_bytes(spec: ConvSpec) -> int:
    """One private ``dw`` per thread beyond the first."""
    kh, kw = spec.kernel_hw
    size = kh * kw * spec.in_per_group * spec.out_channels * spec.dtype.itemsize
    return (threads(spec) - 1) * size


def tap_ranges(spec: ConvSpec) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Output rows per kernel row and output columns per kernel column that read real input."""
    return spec.tap_output_ranges(0), spec.tap_output_ranges(1)


def refusal(spec: ConvSpec) -> str | None:
    """Why the tiles cannot compute ``spec``'s weight gradient (see :func:`applies`), or None."""
    if applies(spec):
        return None
    return "the tiles need float32/float64, rows within a band (or one output row) and LLVM"


def estimate_seconds(spec: ConvSpec, costs: Mapping[str, float]) -> float:
    """Modelled time: ``blocked``'s rate over the multiply-adds (whole vectors of
    output channels, taps that read real input only) and its cost per tile pass."""
    p = blocked.plan(spec)
    rows, cols = tap_ranges(spec)
    pixels = spec.batch * sum(max(0, b - a) for a, b in rows) * sum(max(0, b - a) for a, b in cols)
    width = sum(math.ceil((o1 - o0) / p.lanes) * p.lanes for o0, o1 in p.out_blocks)
    macs = pixels * spec.in_per_group * width * spec.groups
    tiles = math.ceil(spec.in_per_group / p.pixels) * spec.groups * len(p.out_blocks)
    passes = band_count(spec) * len(rows) * len(cols) * tiles
    rate = costs["blocked"] * (1 if spec.dtype.itemsize < 8 else 0.5) * threads(spec)
    # fewer sums than multiply-adds in flight wait on each other (one input channel,
    # one vector: 23.5 ms where the column slabs took 21.6, 2048 x 2048, 2026-12-06)
    rate *= min(1.0, min(spec.in_per_group, p.pixels) * p.vectors / CHAINS)
    return costs["call"] + macs / rate + passes * costs["blocked_tap"] / threads(spec)


def row_table(spec: ConvSpec, j: int, bands: list[tuple[int, int, int]]) -> np.ndarray:
    """Row descriptors of kernel column ``j`` for ``bands`` ``(image, r0, r1)``.

    One entry per band and kernel row that reads real input there: its input and
    ``dw`` offsets, its output rows relative to the band, its gradient offset.
    """
    (h, w), (ho, wo), kw = spec.in_hw, spec.out_hw, spec.kernel_hw[1]
    c, o, cg = spec.in_channels, spec.out_channels, spec.in_per_group
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    top, left = spec.pad[0][0], spec.pad[1][0]
    rows, cols = tap_ranges(spec)
    q0 = cols[j][0]
    entries = []
    for image, r0, r1 in bands:
        for i, (a, b) in enumerate(rows):
            a, b = max(a, r0), min(b, r1)
            if a >= b:
                continue
            x_row = image * h + r0 * sh - top + i * dh
            entries.append(
                (
                    (x_row * w + q0 * sw - left + j * dw) * c,
                    (i * kw + j) * cg * o,
                    a - r0,
                    b - r0,
                    ((image * ho + r0) * wo + q0) * o,
                )
            )
    return np.array(entries, dtype=np.int64).reshape(-1, 5)


def run_tables(spec: ConvSpec, j: int, runs: list[tuple[int, int]]) -> list[tuple[int, np.ndarray]]:
    """``(columns, row descriptors)`` of kernel column ``j`` of a folded spec, for
    ``runs`` ``(image, k)``: run ``k`` is output columns ``[q0 + k * s, q0 + (k + 1) * s)``
    of those where the column reads real input, ``s`` = :func:`run_columns`.

    Each entry is one run and one kernel row, its one "output row" the run; the
    runs of ``s`` columns share one call and a shorter last run has its own.
    """
    (h, w), wo, kw = spec.in_hw, spec.out_hw[1], spec.kernel_hw[1]
    c, o, cg = spec.in_channels, spec.out_channels, spec.in_per_group
    sw, (dh, dw) = spec.stride[1], spec.dilation
    top, left = spec.pad[0][0], spec.pad[1][0]
    rows, cols = tap_ranges(spec)
    (q0, q1), step = cols[j], run_columns(spec)
    by_length: dict[int, list[tuple[int, int, int, int, int]]] = {}
    for image, k in runs:
        c0 = q0 + k * step
        c1 = min(q1, c0 + step)
        if c0 >= c1:
            continue
        for i, (a, b) in enumerate(rows):
            if a >= b:
                continue
            x_row = image * h - top + i * dh
            by_length.setdefault(c1 - c0, []).append(
                (
                    (x_row * w + c0 * sw - left + j * dw) * c,
                    (i * kw + j) * cg * o,
                    0,
                    1,
                    (image * wo + c0) * o,
                )
            )
    return [(n, np.array(e, dtype=np.int64).reshape(-1, 5)) for n, e in by_length.items()]


def _shares(spec: ConvSpec) -> list[list[tuple[int, int, int]]]:
    """Each thread's bands: ``(image, r0, r1)`` rows, or ``(image, k, 0)`` runs when folded."""
    if folds(spec):
        runs = math.ceil(spec.out_hw[1] / run_columns(spec))
        bands = [(n, k, 0) for n in range(spec.batch) for k in range(runs)]
    else:
        ho, step = spec.out_hw[0], band_rows(spec)
        starts = range(0, ho, step)
        bands = [(n, r0, min(ho, r0 + step)) for n in range(spec.batch) for r0 in starts]
    count = threads(spec)
    return [bands[k * len(bands) // count : (k + 1) * len(bands) // count] for k in range(count)]


def _tables(
    spec: ConvSpec, j: int, share: list[tuple[int, int, int]]
) -> list[tuple[int, np.ndarray]]:
    """``(summed columns, row descriptors)`` of kernel column ``j`` for one share."""
    if folds(spec):
        return run_tables(spec, j, [(n, k) for n, k, _ in share])
    q0, q1 = tap_ranges(spec)[1][j]
    return [(q1 - q0, row_table(spec, j, share))]


def by_tiles(x: np.ndarray, g: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """``dw`` ``(kh, kw, C/groups, O)`` for NHWC ``x`` and ``g`` of a lowered spec."""
    (kh, kw), wo = spec.kernel_hw, spec.out_hw[1]
    cg, og = spec.in_per_group, spec.out_per_group
    x = np.ascontiguousarray(x, dtype=spec.dtype)
    g = np.ascontiguousarray(g, dtype=spec.dtype)
    p = blocked.plan(spec)
    shares = _shares(spec)
    outs = [np.zeros((kh, kw, cg, spec.out_channels), dtype=spec.dtype) for _ in shares]
    _, cols = tap_ranges(spec)
    main = cg - cg % p.pixels
    tiles = [(p.pixels, np.arange(0, main, p.pixels))]
    if cg % p.pixels:
        tiles.append((cg % p.pixels, np.array([main])))
    columns = [
        (width, np.stack([c0, c0 * spec.out_channels, 0 * c0, 0 * c0 + 1], axis=1).astype(np.int64))
        for width, c0 in tiles
    ]
    (sh, sw) = spec.stride

    def run(k: int) -> None:
        bound = calls.Binding(x=x, g=g, out=outs[k])
        for j, (q0, q1) in enumerate(cols):
            if q0 >= q1:
                continue
            for length, table in _tables(spec, j, shares[k]):
                if len(table) == 0:
                    continue
                for grp in range(spec.groups):
                    for o0, o1 in p.out_blocks:
                        vectors, tail = math.ceil((o1 - o0) / p.lanes), (o1 - o0) % p.lanes
                        bound.run(
                            kernels.tiles(spec.dtype, width, vectors, p.lanes, tail, True).call(
                                x=calls.Slot("x", grp * cg),
                                w=calls.Slot("g", grp * og + o0),
                                out=calls.Slot("out", grp * og + o0),
                                rows=calls.Ref(table),
                                n_rows=len(table),
                                columns=calls.Ref(column),
                                n_columns=len(column),
                                channels=length,
                                w_row=wo * spec.out_channels,
                                w_col=0,
                                w_channel=spec.out_channels,
                                x_channel=sw * spec.in_channels,
                                x_pixel=1,
                                x_tap_row=sh * spec.in_hw[1] * spec.in_channels,
                                x_tap_col=0,
                                out_pixel=spec.out_channels,
                            )
                            for width, column in columns
                        )

    pool.parallel_map(run, range(len(shares)), key=("weight tiles", spec))
    for extra in outs[1:]:
        outs[0] += extra
    return outs[0]

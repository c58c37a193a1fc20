"""Blocked: register-blocked direct convolution, compiled for this CPU at run time.

The many-channel algorithm of oneDNN, without a framework: the output is cut into
tiles of a few consecutive pixels of one row times a block of output channels,
and each tile's sums stay in SIMD registers while every tap and input channel is
added (see :mod:`dilconv._native.tile_kernel`, LLVM IR compiled by ``llvmlite``,
Numba's back end). The weights are packed once per call into
``(taps, C, O)`` blocks, zero-padded to whole vectors; the input is read in place,
with no padded copy. Each output row runs only the kernel rows that read real
input; the columns of a row are cut into runs whose pixels read real input
through the same kernel columns, and each run into tiles. So no tap ever reads
padding, and the work shrinks as the dilation grows, as in PyTorch. Tiles are
shared among threads (the compiled loop releases the GIL).

float32 and float64; any stride, dilation, padding and group count. Input
channels are summed in blocks sized so that a block's packed weights stay in the
core's cache (:data:`WEIGHT_BLOCK_BYTES`), each block adding to the output. With
few output channels, whose vectors would be partly empty, the kernel's columns
are folded into the output channels instead
(:mod:`~dilconv._methods._blocked_folded`).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import math
from collections.abc import Mapping

import numpy as np

from dilconv._native import calls, compiler, kernels, pool, tile_kernel
from dilconv._native import results as _results
from dilconv._native.sequence import Sequence, executor
from dilconv._spec import ConvSpec

#: The dtypes compiled.
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

#: Most output pixels per tile (more registers for sums, fewer weight loads per sum).
MAX_PIXELS = 8

#: Packed weight bytes one pass over the tiles streams: half of a core's 1-2 MiB L2
#: cache. The aspp case (2048 channels in, 9 taps) runs in 8 blocks of 256 channels.
WEIGHT_BLOCK_BYTES = 2**19

#: Multiply-adds below which one thread computes every tile: about a third of a
#: millisecond on one core here, where handing half to the pool costs about 0.1 ms
#: (timed on 16-64 channels, 64-128 pixel squares).
PARALLEL_WORK = 2**24


@dataclasses.dataclass(frozen=True)
class Plan:
    """How a call is cut: SIMD width, output channel blocks, tile width, channel blocks."""

    lanes: int  # values per SIMD register
    vectors: int  # registers per pixel of a tile (output channels / lanes, rounded up)
    out_blocks: tuple[tuple[int, int], ...]  # [o0, o1) within a group
    pixels: int  # output pixels per tile
    in_blocks: tuple[tuple[int, int], ...]  # [c0, c1) within a group


@functools.lru_cache(maxsize=1)
def _unavailable() -> str | None:
    """Why the compiler cannot be used here, or None (checked once, on first need)."""
    if importlib.util.find_spec("llvmlite") is None:
        return "llvmlite is not installed (pip install numba)"
    try:
        tile_kernel.tile_function(np.dtype(np.float32), 1, 1, 4, 1, True)
    except (ImportError, RuntimeError, OSError) as err:
        return f"llvmlite could not compile for this CPU: {err}"
    executor()  # loaded with the tile loop: a share's calls in one native call
    return None


@functools.lru_cache(maxsize=256)
def plan(spec: ConvSpec) -> Plan:
    """The blocking of ``spec`` on this CPU (see :class:`Plan`)."""
    host = tile_kernel.host_lanes()
    og, cg = spec.out_per_group, spec.in_per_group
    widest = host["bytes"] // spec.dtype.itemsize
    # Where the widest multiply-adds run at half rate (``halved``), half-width
    # registers do as many per cycle, so they are taken when they pad the output
    # channels less in as many blocks: 21 channels are 3 vectors of 8 (24) rather
    # than 2 of 16 (32), 25% fewer sums. Elsewhere 2 vectors are 2 instructions to 3.
    most = 4 if host["registers"] >= 32 else 2
    blocks = math.ceil(math.ceil(og / widest) / most)
    widths = (widest, widest // 2) if host["halved"] else (widest,)
    fits = [n for n in widths if math.ceil(math.ceil(og / n) / most) == blocks]
    lanes = min(fits, key=lambda n: (math.ceil(og / n) * n, -n))
    needed = math.ceil(og / lanes)
    vectors = math.ceil(needed / math.ceil(needed / most))
    if needed == 3 and host["registers"] < 32:
        # With 16 registers, one pass of 3 vectors by 3 pixels beats a pass of 2
        # vectors and one of 1 (which loads as many inputs for a third of the sums):
        # 14% faster on 20-24 channels of 256^2 on AVX2.
        vectors = 3
    width = vectors * lanes
    out_blocks = tuple((o0, min(og, o0 + width)) for o0 in range(0, og, width))
    pixels = min(MAX_PIXELS, (host["registers"] - vectors - 2) // vectors)
    taps = spec.kernel_hw[0] * spec.kernel_hw[1]
    per_channel = taps * width * spec.dtype.itemsize
    count = math.ceil(cg * per_channel / WEIGHT_BLOCK_BYTES)
    step = math.ceil(cg / count)
    in_blocks = tuple((c0, min(cg, c0 + step)) for c0 in range(0, cg, step))
    return Plan(lanes, vectors, out_blocks, pixels, in_blocks)


def thread_count(spec: ConvSpec) -> int:
    """Threads sharing the output (its rows, or one row's tiles): one below
    :data:`PARALLEL_WORK` multiply-adds."""
    (ho, wo), (kh, kw) = spec.out_hw, spec.kernel_hw
    work = spec.batch * ho * wo * spec.out_channels * spec.in_per_group * kh * kw
    pieces = max(spec.batch * ho, wo // plan(spec).pixels)  # rows, or tiles of one row
    return max(1, min(pieces, pool.num_threads() if work >= PARALLEL_WORK else 1))


def workspace_bytes(spec: ConvSpec) -> int:
    """What a call holds besides its input and result: the packed weights (the input
    is read in place); folded (:mod:`~dilconv._methods._blocked_folded`), its
    packing and the threads' column sums."""
    from dilconv._methods import _blocked_folded

    if _blocked_folded.pays(spec):
        return _blocked_folded.workspace_bytes(spec)
    return packed_bytes(spec)


def packed_bytes(spec: ConvSpec) -> int:
    """Bytes of :func:`pack_weights`' packing of ``spec``'s weights."""
    p = plan(spec)
    taps = spec.kernel_hw[0] * spec.kernel_hw[1]
    packed = spec.groups * len(p.out_blocks) * taps * spec.in_per_group * p.vectors * p.lanes
    return packed * spec.dtype.itemsize


def refusal(spec: ConvSpec) -> str | None:
    """Declines dtypes other than float32/float64, hosts without llvmlite, and hosts
    where LLVM was found unable to compile.

    Asking compiles nothing: whether LLVM compiles here is known once the tile loop
    was loaded (:func:`_unavailable`, by a call of ``blocked`` or ``winograd``, or by
    ``"auto"`` choosing one). Until then a fresh process's first call, which
    ``"auto"`` may serve by a NumPy route, does not load llvmlite just to choose.
    """
    if spec.dtype not in DTYPES:
        return f"it is compiled for float32 and float64, not {spec.dtype}"
    if not compiler.installed():
        return "llvmlite is not installed (pip install numba)"
    return _unavailable() if _unavailable.cache_info().currsize else None


def row_taps(spec: ConvSpec, rows: range) -> tuple[np.ndarray, np.ndarray]:
    """For output rows ``rows``: the kernel rows ``[ky0, ky1)`` that read real input."""
    return _hull(np.asarray(rows), spec.tap_output_ranges(0), 1)


def column_taps(spec: ConvSpec, starts: np.ndarray, pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """For tiles starting at output columns ``starts``: kernel columns ``[kx0, kx1)`` read."""
    return _hull(starts, spec.tap_output_ranges(1), pixels)


def _hull(
    starts: np.ndarray, ranges: list[tuple[int, int]], span: int
) -> tuple[np.ndarray, np.ndarray]:
    """First and one-past-last tap whose output range meets ``[start, start + span)``."""
    r0 = np.array([r[0] for r in ranges], dtype=np.int64)
    r1 = np.array([r[1] for r in ranges], dtype=np.int64)
    live = (r0[None, :] < starts[:, None] + span) & (r1[None, :] > starts[:, None]) & (r0 < r1)
    any_live = live.any(axis=1)
    first = np.where(any_live, live.argmax(axis=1), 0)
    stop = np.where(any_live, len(ranges) - live[:, ::-1].argmax(axis=1), 0)
    return first.astype(np.int64), stop.astype(np.int64)


def column_tiles(
    spec: ConvSpec, pixels: int, columns: np.ndarray | None = None
) -> dict[int, np.ndarray]:
    """First output column of every tile, by tile width.

    The output columns (all, or the increasing ``columns``) are cut into runs of
    consecutive columns that read the same kernel columns; each run into tiles of
    ``pixels`` and one narrower tile for its remainder. So every tile's pixels read
    real input through exactly the same taps.
    """
    cols = np.arange(spec.out_hw[1]) if columns is None else np.asarray(columns, dtype=np.int64)
    if len(cols) == 0:
        return {}
    kx0, kx1 = column_taps(spec, cols, 1)
    change = np.flatnonzero((np.diff(kx0) != 0) | (np.diff(kx1) != 0) | (np.diff(cols) != 1))
    edges = [0, *(change + 1).tolist(), len(cols)]
    starts: dict[int, list[int]] = {}
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        whole = (b - a) // pixels * pixels
        starts.setdefault(pixels, []).extend(cols[a : a + whole : pixels].tolist())
        if b - a > whole:
            starts.setdefault(b - a - whole, []).append(int(cols[a + whole]))
    return {k: np.array(v, dtype=np.int64) for k, v in starts.items() if v}


def column_tables(
    spec: ConvSpec,
    pixels: int,
    columns: np.ndarray | None = None,
    channels_first: bool = False,
) -> tuple[tuple[int, np.ndarray], ...]:
    """Per tile width, the tile loop's column table (:data:`~dilconv._native.tile_kernel.FIELDS`
    per tile) for the tiles of :func:`column_tiles`; read-only. Offsets are in NHWC
    arrays, or NCHW ones with ``channels_first``."""
    c, o = (1, 1) if channels_first else (spec.in_channels, spec.out_channels)
    tables = []
    for width, starts in column_tiles(spec, pixels, columns).items():
        kx0, kx1 = column_taps(spec, starts, width)
        in_col = starts * spec.stride[1] - spec.pad[1][0]
        table = np.stack([in_col * c, starts * o, kx0, kx1], axis=1)
        table.flags.writeable = False
        tables.append((width, table))
    return tuple(tables)


@dataclasses.dataclass(frozen=True)
class Layout:
    """The descriptor tables of a spec (see :mod:`~dilconv._native.tile_kernel`).

    ``rows``: one per output row of the batch; ``columns``: per tile width, one per
    tile of a row. Read-only int64 arrays of ``ROW_FIELDS`` and ``FIELDS`` columns.
    """

    plan: Plan
    rows: np.ndarray
    columns: tuple[tuple[int, np.ndarray], ...]  # (pixels, table)


@functools.lru_cache(maxsize=128)
def layout(spec: ConvSpec, channels_first: bool = False) -> Layout:
    """The :class:`Layout` of ``spec`` (remembered: it is the same for every call),
    for NHWC arrays or, with ``channels_first``, NCHW ones."""
    p = plan(spec)
    (h, wd), (ho, wo) = spec.in_hw, spec.out_hw
    c, o = spec.in_channels, spec.out_channels
    flat = np.arange(spec.batch * ho, dtype=np.int64)
    image, oy = np.divmod(flat, ho)
    ky0, ky1 = row_taps(spec, range(ho))
    in_row = oy * spec.stride[0] - spec.pad[0][0]
    if channels_first:  # image n starts at n * C * H * W; a row is W elements
        x_rows, out_rows = image * c * h * wd + in_row * wd, image * o * ho * wo + oy * wo
    else:
        x_rows, out_rows = (image * h + in_row) * wd * c, flat * wo * o
    zero = np.zeros_like(flat)
    rows = np.stack([x_rows, out_rows, ky0[oy], ky1[oy], zero], axis=1)
    rows.flags.writeable = False
    return Layout(p, rows, column_tables(spec, p.pixels, channels_first=channels_first))


def pack_weights(w: np.ndarray, spec: ConvSpec, p: Plan) -> np.ndarray:
    """``(groups, out blocks, taps, C/groups, vectors * lanes)``, zero-padded channels.

    Large packings (``aspp``'s 19 MiB) reuse memory that an earlier call let go of
    (:func:`dilconv._native.results.new_result`) instead of fresh pages, which the
    operating system maps and zeroes as they are first written.
    """
    kh, kw = spec.kernel_hw
    cg, og, width = spec.in_per_group, spec.out_per_group, p.vectors * p.lanes
    shape = (spec.groups, len(p.out_blocks), kh * kw, cg, width)
    packed = _results.new_result(shape, spec.dtype)
    taps = w.reshape(kh * kw, cg, spec.groups, og)
    for b, (o0, o1) in enumerate(p.out_blocks):
        packed[:, b, :, :, : o1 - o0] = taps[..., o0:o1].transpose(2, 0, 1, 3)
        packed[:, b, :, :, o1 - o0 :] = 0  # the lanes past the block's channels
    return packed


def result_array(shape: tuple[int, ...], spec: ConvSpec) -> tuple[np.ndarray, bool]:
    """A new result of ``shape`` and whether it is already complete: nothing to
    compute (no outputs), or zeros (no input channels)."""
    y = _results.new_result(shape, spec.dtype)
    if y.size == 0:
        return y, True
    if spec.in_channels == 0:
        y.fill(0)
        return y, True
    return y, False


def conv(x: np.ndarray, w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Correlate NHWC ``x`` with HWIO ``w`` by register-blocked tiles."""
    reason = refusal(spec) or _unavailable()  # the latter loads the tile loop
    if reason is not None:
        raise ValueError(f"method='blocked' cannot compute this call: {reason}")
    n, (ho, wo), o = spec.batch, spec.out_hw, spec.out_channels
    y, complete = result_array((n, ho, wo, o), spec)
    if complete:
        return y
    from dilconv._methods import _blocked_folded

    if _blocked_folded.pays(spec):  # few output channels: kernel columns as channels
        return _blocked_folded.conv(x, w, spec, y)
    x = np.ascontiguousarray(x, dtype=spec.dtype)
    packed = pack_weights(np.asarray(w, dtype=spec.dtype), spec, plan(spec))
    bound = calls.Binding(x=x, w=packed, out=y)
    pool.parallel_map(bound.run, tile_calls(spec, thread_count(spec)).shares, key=("blocked", spec))
    return y


@dataclasses.dataclass(frozen=True)
class TileCalls:
    """Each thread's calls of the tile loop, with slots ``x`` (the NHWC input), ``w``
    (:func:`pack_weights`) and ``out`` (the NHWC output); each call holds its tables."""

    shares: tuple[tuple[calls.Call, ...], ...]


@functools.lru_cache(maxsize=128)
def tile_calls(spec: ConvSpec, threads: int) -> TileCalls:
    """The tile-loop calls of each thread's share of the output rows (remembered).

    A share runs every group, output block, input block (in order: later blocks
    add to the output) and tile width over its rows. Everything but the arrays
    bound to the slots is fixed per spec, so a call costs only the compiled loops
    and a few Python operations per tile-loop call.
    """
    lay = layout(spec)
    return region_calls(spec, lay.rows, lay.columns, threads)


Tables = tuple[tuple[int, np.ndarray], ...]  # (tile width, column table) pairs


def thread_parts(
    rows: np.ndarray, columns: Tables, threads: int
) -> list[tuple[np.ndarray, Tables]]:
    """The rows and column tables of each of ``threads`` shares: a run of the rows
    each, or, with fewer rows than threads (a 1-D signal is one row), every row and a
    run of each table's tiles."""
    parts: list[tuple[np.ndarray, Tables]] = []
    for k in range(threads):
        if len(rows) >= threads:
            parts.append((rows[len(rows) * k // threads : len(rows) * (k + 1) // threads], columns))
        else:
            cut = tuple(
                (n, t[len(t) * k // threads : len(t) * (k + 1) // threads]) for n, t in columns
            )
            parts.append((rows, cut))
    return parts


def dealt_blocks(spec: ConvSpec, threads: int) -> list[list[tuple[int, tuple[int, int]]]] | None:
    """Each of ``threads`` shares' blocks of output channels ``(index, (o0, o1))``,
    dealt in turn, where they share evenly or are at least two per share; else None.

    >>> from dilconv._spec import make_spec
    >>> spec = make_spec((1, 9, 9, 8), (3, 3, 8, 512), data_format="NHWC",
    ...                  dtypes=[np.dtype(np.float32)]).lowered()
    >>> [len(share) for share in dealt_blocks(spec, 2)], dealt_blocks(spec, 1)
    ([4, 4], None)
    """
    blocks = list(enumerate(plan(spec).out_blocks))
    count = len(blocks)
    if threads > 1 and (count % threads == 0 or count >= 2 * threads):
        return [blocks[k::threads] for k in range(threads)]
    return None


def region_calls(
    spec: ConvSpec,
    rows: np.ndarray,
    columns: tuple[tuple[int, np.ndarray], ...],
    threads: int,
    *,
    channels_first_input: bool = False,
    out: str = "out",
    accumulate: bool = False,
    down_columns: bool = False,
    by_outputs: bool = False,
    out_pitch: int | None = None,
) -> TileCalls:
    """The calls computing the outputs ``rows x columns`` (tables as in :class:`Layout`),
    split among ``threads`` shares: all of the output, or any part of it.

    The shares cut the rows; where there are fewer rows than threads (a 1-D signal
    is one row), they cut each table of tiles instead, every share taking all rows.
    With ``channels_first_input`` slot ``x`` is NCHW (the tables' input offsets too):
    each channel a plane apart, its pixels one apart. The sums go to slot ``out``,
    always NHWC; with ``accumulate`` every call adds to it (else only the later
    blocks of input channels do). With ``down_columns`` the tables are
    :func:`column_region_calls`': a "row" is an output column (its kernel columns),
    a tile runs down it (the kernel rows it reads), its outputs ``out_pitch``
    apart (default: an NHWC output's rows). With ``by_outputs`` (where
    :func:`dealt_blocks` deals them) the shares take every row and tile and each
    its own blocks of output channels, so each thread reads only its blocks'
    weights: for regions of a few pixels, whose products take less time than
    reading the weights (Winograd's outputs no whole tile covers,
    :func:`dilconv._methods.winograd.direct_calls`).
    """
    p = plan(spec)
    cg, og, c, o = spec.in_per_group, spec.out_per_group, spec.in_channels, spec.out_channels
    pitch = spec.in_hw[1]
    # elements between input channels, and between neighbouring pixels' channel runs
    x_step, c = (spec.in_hw[0] * pitch, 1) if channels_first_input else (1, c)
    (dh, dw), (kh, kw) = spec.dilation, spec.kernel_hw
    width = p.vectors * p.lanes
    w_tap = cg * width
    block = kh * kw * cg * width  # elements of one (group, output block) of the packing
    # what a step along a tile, a row table's tap and a column table's tap moves by
    if not down_columns:
        strides = {
            "x_pixel": spec.stride[1] * c,
            "out_pixel": o,
            "x_tap_row": dh * pitch * c,
            "w_row": kw * w_tap,
            "x_tap_col": dw * c,
            "w_col": w_tap,
        }
    else:  # a tile steps down rows; the row table has the kernel columns
        strides = {
            "x_pixel": spec.stride[0] * pitch * c,
            "out_pixel": spec.out_hw[1] * o if out_pitch is None else out_pitch,
            "x_tap_row": dw * c,
            "w_row": w_tap,
            "x_tap_col": dh * pitch * c,
            "w_col": kw * w_tap,
        }
    dealt = dealt_blocks(spec, threads) if by_outputs else None
    if dealt is not None:
        parts = [(rows, columns, share) for share in dealt]
    else:
        every = list(enumerate(p.out_blocks))
        parts = [(r, c, every) for r, c in thread_parts(rows, columns, threads)]
    shares = []
    for share_rows, share_columns, share_blocks in parts:
        share: list[calls.Call] = []
        for pixels, table in share_columns if len(share_rows) else ():
            if not len(table):
                continue
            for g in range(spec.groups):
                for b, (o0, o1) in share_blocks:
                    vectors = math.ceil((o1 - o0) / p.lanes)
                    tail = (o1 - o0) % p.lanes
                    for i, (c0, c1) in enumerate(p.in_blocks):
                        kernel = kernels.tiles(
                            spec.dtype,
                            pixels,
                            vectors,
                            p.lanes,
                            tail,
                            accumulate or i > 0,
                            columns_outer=down_columns,
                        )
                        call = kernel.call(
                            x=calls.Slot("x", (g * cg + c0) * x_step),
                            w=calls.Slot("w", (g * len(p.out_blocks) + b) * block + c0 * width),
                            out=calls.Slot(out, g * og + o0),
                            rows=calls.Ref(share_rows),
                            n_rows=len(share_rows),
                            columns=calls.Ref(table),
                            n_columns=len(table),
                            channels=c1 - c0,
                            w_channel=width,
                            x_channel=x_step,
                            **strides,
                        )
                        share.append(call)
        shares.append(Sequence(share))
    return TileCalls(tuple(shares))


def transposed(spec: ConvSpec) -> ConvSpec:
    """``spec`` with its rows and columns swapped (shape arithmetic only: its tap
    ranges along axis 0 are ``spec``'s along axis 1, and the other way round)."""
    return dataclasses.replace(
        spec,
        in_hw=spec.in_hw[::-1],
        kernel_hw=spec.kernel_hw[::-1],
        stride=spec.stride[::-1],
        dilation=spec.dilation[::-1],
        pad=spec.pad[::-1],
    )


def column_region_calls(
    spec: ConvSpec, columns: np.ndarray, rows: np.ndarray, threads: int, *, by_outputs: bool = False
) -> TileCalls:
    """The calls computing output ``columns`` (increasing) of output ``rows``
    (increasing) in every image of NHWC arrays, by tiles that run down each column.

    Tiles along a row would give each row's few columns a tile of their own, each
    reading every weight again (Winograd's single columns:
    :func:`dilconv._methods.winograd.direct_calls`); down a column a tile holds up
    to ``pixels`` rows. The tile loop's row table then has one entry per image and
    column (its kernel columns), its column tables the tiles of consecutive rows
    that read the same kernel rows (:func:`column_tiles` of :func:`transposed`),
    and its taps run kernel row by kernel row as along a row, so each output is the
    same sum, bit for bit, as a row's tile gives. ``by_outputs``: as in
    :func:`region_calls`.
    """
    row_table, tables = column_region_tables(spec, columns, rows)
    return region_calls(spec, row_table, tables, threads, down_columns=True, by_outputs=by_outputs)


def column_region_tables(
    spec: ConvSpec, columns: np.ndarray, rows: np.ndarray, channels_first: bool = False
) -> tuple[np.ndarray, Tables]:
    """The tables of :func:`column_region_calls`: one row entry per image and column
    (its kernel columns), per tile width the tiles of consecutive ``rows`` that
    read the same kernel rows; input offsets in NHWC arrays or, with
    ``channels_first``, NCHW ones; output offsets in NHWC arrays (read-only)."""
    p = plan(spec)
    (h, wd), (ho, wo) = spec.in_hw, spec.out_hw
    c, o = (1, spec.out_channels) if channels_first else (spec.in_channels, spec.out_channels)
    cols = np.asarray(columns, dtype=np.int64)
    image = np.repeat(np.arange(spec.batch, dtype=np.int64), len(cols))
    col = np.tile(cols, spec.batch)
    kx0, kx1 = column_taps(spec, col, 1)
    in_col = col * spec.stride[1] - spec.pad[1][0]
    image_size = spec.in_channels * h * wd
    row_table = np.stack(
        [image * image_size + in_col * c, image * ho * wo * o + col * o, kx0, kx1, 0 * col], axis=1
    )
    row_table.flags.writeable = False
    down = transposed(spec)
    tables = []
    for width, starts in column_tiles(down, p.pixels, rows).items():
        ky0, ky1 = column_taps(down, starts, width)
        in_row = starts * spec.stride[0] - spec.pad[0][0]
        table = np.stack([in_row * wd * c, starts * wo * o, ky0, ky1], axis=1)
        table.flags.writeable = False
        tables.append((width, table))
    return row_table, tuple(tables)


def work(spec: ConvSpec) -> tuple[int, int, int, int]:
    """``(multiply-adds, tap passes, calls, threads)`` of this method on ``spec``.

    Multiply-adds are counted over whole SIMD vectors of output channels and only
    for taps that read real input; a tap pass is one tile's pass over one tap (per
    group, output block and input block); a call is one compiled-function call.
    """
    lay = layout(spec)
    p = lay.plan
    row_taps = int((lay.rows[:, 3] - lay.rows[:, 2]).sum())
    column_taps = sum(int((t[:, 3] - t[:, 2]).sum()) for _, t in lay.columns)
    tap_pixels = sum(int((t[:, 3] - t[:, 2]).sum()) * pixels for pixels, t in lay.columns)
    width = sum(math.ceil((o1 - o0) / p.lanes) * p.lanes for o0, o1 in p.out_blocks)
    blocks = spec.groups * len(p.out_blocks) * len(p.in_blocks)
    macs = row_taps * tap_pixels * spec.groups * width * spec.in_per_group
    threads = thread_count(spec)
    return macs, row_taps * column_taps * blocks, threads * len(lay.columns) * blocks, threads


def estimate_seconds(spec: ConvSpec, costs: Mapping[str, float]) -> float:
    """Modelled time: the multiply-adds at the tiles' rate, their tap passes and calls."""
    macs, passes, calls, threads = work(spec)
    rate = costs["blocked"] * (1 if spec.dtype.itemsize < 8 else 0.5) * threads
    seconds = macs / rate + passes * costs["blocked_tap"] / threads + calls * costs["tap"]
    return costs["call"] + costs["blocked_call"] + seconds

"""The products of :mod:`dilconv._methods.winograd`: ``M[p] = V[p] @ U[p]``, 16 per band.

The weights are transformed once per call (``U = G w G^T``, :func:`transform_weights`)
and packed as :mod:`~dilconv._methods.blocked` packs its weights: blocks of output
channels, each ``(16, C, vectors * lanes)``. The 16 products of a band run on the
register-blocked tile loop of :mod:`~dilconv._native.tile_kernel`, the 16
positions as its "kernel taps" and runs of tiles as its "pixels"
(:func:`product_calls`): with the small bands that stay in
a core's cache, BLAS spent more time per call than on the products.

Input channels are summed in blocks (:func:`product_plan`) whose 16 packed weight
matrices stay in a core's L2 cache; ``V`` holds one block's channels at a time,
so a band of tiles has room for more tiles when there are many channels. Where all
of ``U`` outgrows the last-level cache (:func:`streams_weights`), a band is too
large for a core's cache too; there a block's products run one position at a time
over every block of output channels, in larger blocks (:func:`by_position`).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math

import numpy as np

from dilconv import _layout
from dilconv._methods import blocked
from dilconv._native import calls, kernels, last_level_cache, pool, tile_kernel
from dilconv._native import results as _results
from dilconv._native.sequence import Sequence
from dilconv._spec import ConvSpec

#: The weight transform matrix of F(2x2, 3x3) (Lavin & Gray, eq. 9).
G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def lanes(spec: ConvSpec) -> int:
    """Values per SIMD register for ``spec.dtype`` on this CPU (the transforms' vectors)."""
    return tile_kernel.host_lanes()["bytes"] // spec.dtype.itemsize


def transform_weights(
    w: np.ndarray, spec: ConvSpec, p: blocked.Plan, *, taps: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """``U = G w G^T`` packed for the tile loop: ``(out blocks, 16, C, vectors * lanes)``;
    with ``taps``, also the weights as :func:`dilconv._methods.blocked.pack_weights`
    packs them (for the outputs no whole tile covers), else None.

    Compiled (:mod:`~dilconv._native.winograd_weights`): each weight is read once
    and each packed value written once, the sums in float64 rounded once to
    ``spec.dtype``, the output channels zero-padded to whole vectors. The blocks of
    input channels (``p.in_blocks``) are shared among threads. With ``taps`` the
    same pass stores each tap vector it read into ``blocked``'s packing, whose
    output blocks are these: on ``aspp`` (19 MiB of weights) NumPy's packing took
    1.4 ms on one thread beside the transform. A large packing (``aspp``: 32 MiB)
    reuses memory an earlier call let go of
    (:func:`dilconv._native.results.new_result`): on fresh pages the transform
    took 3.5 ms there, 1.8 ms on reused ones.
    """
    c, width = spec.in_channels, p.vectors * p.lanes
    w = np.asarray(w, dtype=spec.dtype)
    packed = _results.new_result((len(p.out_blocks), 16, c, width), spec.dtype)
    arrays = {"U": packed}
    blocked_taps = None
    if taps:
        blocked_taps = _results.new_result((1, len(p.out_blocks), 9, c, width), spec.dtype)
        arrays["taps"] = blocked_taps
    for k, (o0, o1) in enumerate(p.out_blocks):
        filled = math.ceil((o1 - o0) / p.lanes) * p.lanes
        packed[k, :, :, filled:] = 0  # vectors past the block's channels
        if blocked_taps is not None:
            blocked_taps[0, k, :, :, filled:] = 0
    staged = _layout.output_major(w)
    if staged:  # the caller's (O, C, 3, 3), moved block by block
        shares = staged_weight_calls(spec, p, taps, pool.num_threads())
        arrays["w"] = w.transpose(3, 2, 0, 1).reshape(-1)
        per_stage = stage_bytes(spec, p) // spec.dtype.itemsize
        stages = _results.new_result((len(shares), per_stage), spec.dtype)
        arrays.update({f"S{k}": stages[k] for k in range(len(shares))})
    else:
        by_channel = _layout.channel_major(w)
        if by_channel:  # NCHW weights as the compiled transpose left them: (C, 3, 3, O)
            w = w.transpose(2, 0, 1, 3)
        arrays["w"] = np.ascontiguousarray(w).reshape(-1)
        shares = weight_calls(spec, p, by_channel, taps)
    pool.parallel_map(
        calls.Binding(**arrays).run, shares, key=("winograd weights", spec, staged, taps)
    )
    return packed, blocked_taps


def _transform_call(
    spec: ConvSpec, p: blocked.Plan, k: int, c0: int, c1: int, w: calls.Slot, w_tap: int,
    w_channel: int, taps: bool,
) -> calls.Call:  # fmt: skip
    """The transform of input channels ``[c0, c1)`` for output block ``k``, reading
    weights at ``w`` (strides ``w_tap``, ``w_channel``) and writing ``U`` (and with
    ``taps``, ``blocked``'s packing; else any bound slot, which the compiled variant
    never touches)."""
    c, width = spec.in_channels, p.vectors * p.lanes
    o0, o1 = p.out_blocks[k]
    whole, tail = divmod(o1 - o0, p.lanes)
    return kernels.weights(spec.dtype, p.lanes, tail, taps).call(
        w=w,
        packed=calls.Slot("U", (k * 16 * c + c0) * width),
        channels=c1 - c0,
        w_tap=w_tap,
        w_channel=w_channel,
        u_position=c * width,
        u_channel=width,
        vectors=whole,
        taps=calls.Slot("taps", (k * 9 * c + c0) * width) if taps else calls.Slot("U", 0),
        taps_tap=c * width,
        taps_channel=width,
    )


@functools.lru_cache(maxsize=128)
def weight_calls(
    spec: ConvSpec, p: blocked.Plan, by_channel: bool = False, taps: bool = False
) -> tuple[tuple[calls.Call, ...], ...]:
    """The weight transform's calls, one tuple per block of input channels (shared
    among threads), with slots ``w`` (the weights, flat: HWIO, or ``(C, 3, 3, O)``
    where ``by_channel``), ``U`` (the packing) and, with ``taps``, ``taps``
    (``blocked``'s packing, groups first)."""
    c, o = spec.in_channels, spec.out_channels
    w_tap, w_channel = (o, 9 * o) if by_channel else (c * o, o)
    return tuple(
        tuple(
            _transform_call(
                spec, p, k, c0, c1, calls.Slot("w", c0 * w_channel + o0), w_tap, w_channel, taps
            )
            for k, (o0, _) in enumerate(p.out_blocks)
        )
        for c0, c1 in p.in_blocks
    )


#: Bytes of weights one staged move brings into a thread's cache (see
#: :func:`staged_weight_calls`): half of a 1 MiB L2 cache, so that ``aspp``'s
#: blocks of 128 input channels move whole for each output block, 64 rows of 4.6 KB
#: runs (stages of 256 KiB split them in two: 0.2 ms more for the whole transform).
STAGE_BYTES = 2**19


def _stage_run(spec: ConvSpec, p: blocked.Plan) -> tuple[int, int]:
    """``(outputs, channels)``: the rows of a staged move (the widest output block)
    and the input channels it moves at most (:data:`STAGE_BYTES`)."""
    rows = max((o1 - o0 for o0, o1 in p.out_blocks), default=1)
    return rows, max(1, min(STAGE_BYTES // (9 * rows * spec.dtype.itemsize), spec.in_channels))


def stage_bytes(spec: ConvSpec, p: blocked.Plan | None = None) -> int:
    """Bytes of one thread's stage in :func:`staged_weight_calls` (``p``: the
    product plan, by default :func:`product_plan`'s)."""
    rows, run = _stage_run(spec, product_plan(spec) if p is None else p)
    return 9 * rows * run * spec.dtype.itemsize


@functools.lru_cache(maxsize=128)
def staged_weight_calls(
    spec: ConvSpec, p: blocked.Plan, taps: bool, threads: int
) -> tuple[tuple[calls.Call, ...], ...]:
    """The transform of the caller's ``(O, C, 3, 3)`` weights (NCHW calls, given as
    they are) through a stage in each thread's cache: one tuple of calls per thread,
    each with its own stage (slot ``S<k>`` of :func:`stage_bytes`), and slots ``w``
    (the weights, flat), ``U`` and ``taps``.

    For each block of input channels and each output block, runs of the block's
    channels (:data:`STAGE_BYTES` at most) are moved by the compiled transpose into
    the thread's stage as ``(channels, 3, 3, outputs)``, then transformed from there
    (and copied into ``blocked``'s packing with ``taps``). Each weight is read from
    memory once; the whole ``(C, 3, 3, O)`` array that NCHW calls otherwise make
    first is never made. ``aspp``'s 19 MiB of weights, U and ``blocked``'s packing:
    3.30 ms, against 4.31 ms for that array and the transform from it, and 2.85 ms
    from HWIO weights. The blocks of input channels are dealt to the threads in
    turn (each thread its own stage)."""
    c = spec.in_channels
    _, run = _stage_run(spec, p)
    move = kernels.transpose(spec.dtype)
    count = max(1, min(threads, len(p.in_blocks)))
    shares: list[list[calls.Call]] = [[] for _ in range(count)]
    for b, (c0, c1) in enumerate(p.in_blocks):
        share, stage = shares[b % count], f"S{b % count}"
        for k, (o0, o1) in enumerate(p.out_blocks):
            for s0 in range(c0, c1, run):
                s1 = min(c1, s0 + run)
                share.append(
                    move.call(
                        source=calls.Slot("w", (o0 * c + s0) * 9),
                        target=calls.Slot(stage, 0),
                        rows=o1 - o0,
                        columns=(s1 - s0) * 9,
                        source_row=c * 9,
                        target_row=o1 - o0,
                    )
                )
                stride = o1 - o0  # the stage's (channels, 3, 3, outputs)
                w = calls.Slot(stage, 0)
                share.append(_transform_call(spec, p, k, s0, s1, w, stride, 9 * stride, taps))
    return tuple(Sequence(share) for share in shares)


#: Where the products run by position (:func:`by_position`), blocks of input channels
#: this many times as large as elsewhere: the products then run one position at a
#: time (:func:`product_calls`), so what a position keeps in cache is its own part of
#: ``V``, of ``M`` and of the block's ``U``, and larger blocks read and write ``M``
#: fewer times. ``aspp`` (2048 -> 256 channels at 65 x 65, 2 vCPUs of a Xeon with 2
#: MiB of L2 a core, 2026-12-07, medians of 5): 77.0-77.8 ms at d = 18, 77.3-77.9 at
#: d = 12, 77.2 at d = 6 with blocks of 256 channels, 81.3-85.3, 82.3-85.8 and
#: 85.5-86.5 with 128; 75.3, 77.1 and 77.2 with 512.
STREAM_BLOCK_FACTOR = 2


def streams_weights(spec: ConvSpec) -> bool:
    """Whether every band reads all of ``U`` from memory: ``U`` outgrows the
    last-level cache (:func:`~dilconv._native.last_level_cache.size`).

    Where ``U`` fits the shared cache, smaller bands that fit a core's own cache are
    the faster: 256 channels of 64 x 64 (``U`` 4 MiB) took 13.6-13.8 ms in bands of
    96 tiles, 16.3-16.8 in 2 bands; 128 x 128 from 256 to 128 channels 26.7 against
    29.7 (the Xeon of :data:`~dilconv._methods.winograd.STREAM_TILES`, whose cache
    counts 8 MiB). Where the output channels are the more
    (:func:`~dilconv._methods.winograd.output_groups` then sizes its groups by these
    bands), 256 -> 2048 channels at 65 x 65 (``aspp``'s input gradient) took
    92.1 ms against 108.7 at d = 12 and 87.9 against 106.0 at d = 18, 512 -> 1024 at
    d = 6 91.4 against 98.6 (in one process, alternating)."""
    u_bytes = 16 * spec.in_channels * spec.out_channels * spec.dtype.itemsize
    return u_bytes > last_level_cache.size()


def by_position(spec: ConvSpec) -> bool:
    """Whether the products of a block of input channels run one position at a time,
    each over every block of output channels (:func:`product_calls`): where ``U``
    streams from memory (:func:`streams_weights`), so that a block's ``V`` and a
    band's ``M`` outgrow a core's cache, and the input channels are at least as many
    as the output channels (else ``M`` runs in groups of output channels, see
    :func:`dilconv._methods.winograd.output_groups`)."""
    return spec.in_channels >= spec.out_channels and streams_weights(spec)


@functools.lru_cache(maxsize=128)
def product_plan(spec: ConvSpec) -> blocked.Plan:
    """The tile loop's blocking for the 16 products: output channels as in ``blocked``,
    input channels in blocks whose 16 packed weight matrices stay in cache (blocks
    :data:`STREAM_BLOCK_FACTOR` times as large where :func:`by_position`)."""
    p = blocked.plan(spec)
    per_channel = 16 * p.vectors * p.lanes * spec.dtype.itemsize
    c, width = spec.in_channels, lanes(spec)
    block_bytes = blocked.WEIGHT_BLOCK_BYTES
    if by_position(spec):
        block_bytes *= STREAM_BLOCK_FACTOR
    count = max(1, math.ceil(c * per_channel / block_bytes))
    step = max(1, math.ceil(c / count))
    if count > 1:  # whole transform vectors per block: one transform call each
        step = math.ceil(step / width) * width
    in_blocks = tuple((c0, min(c, c0 + step)) for c0 in range(0, c, step))
    return dataclasses.replace(p, in_blocks=in_blocks)


def block_channels(spec: ConvSpec) -> int:
    """Input channels in the largest block: the channels of ``V`` a band holds at once."""
    return max((c1 - c0 for c0, c1 in product_plan(spec).in_blocks), default=0)


@functools.lru_cache(maxsize=64)
def _product_tables(
    tiles: int, channels: int, w_channels: int, outputs: int, width: int, pixels: int
) -> tuple[np.ndarray, tuple[tuple[int, np.ndarray], ...]]:
    """The tile loop's tables for the products of a band of ``tiles`` tiles.

    Rows are the 16 positions (offsets of ``V[p]``, ``M[p]`` and ``U[p]``, one
    "kernel tap"); columns are runs of ``pixels`` tiles and one shorter run.
    ``V`` holds ``channels`` per position, ``U`` ``w_channels``.
    """
    rows = np.array(
        [[q * channels, q * outputs, 0, 1, q * w_channels * width] for q in range(16)],
        dtype=np.int64,
    )
    runs = []
    whole = tiles // pixels * pixels
    for size, starts in ((pixels, range(0, whole, pixels)), (tiles - whole, [whole])):
        if size and len(starts):
            t = np.asarray(starts, dtype=np.int64)[:, None]
            table = np.hstack([t * 16 * channels, t * 16 * outputs, 0 * t, 0 * t + 1])
            runs.append((size, np.ascontiguousarray(table)))
    for a in (rows, *(table for _, table in runs)):
        a.flags.writeable = False
    return rows, tuple(runs)


@functools.lru_cache(maxsize=128)
def product_calls(
    spec: ConvSpec, tiles: int, group: tuple[int, int] | None = None
) -> tuple[tuple[calls.Call, ...], ...]:
    """The tile-loop calls computing ``M[p] = V[p] @ U[p]`` for a band of ``tiles`` tiles.

    One tuple of calls per block of input channels (``product_plan(spec).in_blocks``);
    the first block's calls store ``M``, the others add to it. Slots ``V``, ``U``
    (:func:`transform_weights`) and ``M``; each call holds its tables, so it is fixed
    per spec and remembered.

    ``group`` None: ``V`` holds one block's channels at a time (its calls run when
    it does) and ``M`` every output channel. ``group`` ``(g0, g1)``, whole blocks of
    output channels: ``V`` holds every input channel (a tile's 16 positions of
    ``C``) and ``M`` only channels ``[g0, g1)``, so that ``M`` stays in cache
    where the output channels are many (see :func:`dilconv._methods.winograd.output_groups`).

    A block's calls run each block of output channels over the 16 positions, or,
    with ``group`` None where :func:`by_position`, each position over every block of
    output channels: its part of ``V`` is read from memory once, not once per block
    of output channels (see :data:`STREAM_BLOCK_FACTOR`).
    """
    p = product_plan(spec)
    c, o = spec.in_channels, spec.out_channels
    width = p.vectors * p.lanes
    g0, g1 = (0, o) if group is None else group
    positions = group is None and by_position(spec)
    blocks: list[tuple[calls.Call, ...]] = []
    for i, (c0, c1) in enumerate(p.in_blocks):
        v_stride, v_at = (c1 - c0, 0) if group is None else (c, c0)
        rows, runs = _product_tables(tiles, v_stride, c, g1 - g0, width, p.pixels)
        row_sets = [_one_row(rows, q) for q in range(16)] if positions else [rows]
        block: list[calls.Call] = []
        for row_set, (pixels, columns), (b, (o0, o1)) in itertools.product(
            row_sets, runs, enumerate(p.out_blocks)
        ):
            if not g0 <= o0 < g1:
                continue
            vectors = math.ceil((o1 - o0) / p.lanes)
            tail = (o1 - o0) % p.lanes
            kernel = kernels.tiles(spec.dtype, pixels, vectors, p.lanes, tail, i > 0)
            block.append(
                kernel.call(
                    x=calls.Slot("V", v_at),
                    w=calls.Slot("U", (b * 16 * c + c0) * width),
                    out=calls.Slot("M", o0 - g0),
                    rows=calls.Ref(row_set),
                    n_rows=len(row_set),
                    columns=calls.Ref(columns),
                    n_columns=len(columns),
                    channels=c1 - c0,
                    w_row=0,
                    w_col=0,
                    w_channel=width,
                    x_channel=1,
                    x_pixel=16 * v_stride,
                    x_tap_row=0,
                    x_tap_col=0,
                    out_pixel=16 * (g1 - g0),
                )
            )
        blocks.append(tuple(block))
    return tuple(blocks)


def _one_row(rows: np.ndarray, q: int) -> np.ndarray:
    """Row ``q`` of a products' row table, as a table of its own (read-only)."""
    row = rows[q : q + 1].copy()
    row.flags.writeable = False
    return row


def packed_bytes(spec: ConvSpec) -> int:
    """Bytes of the packed transformed weights (:func:`transform_weights`)."""
    p = product_plan(spec)
    return len(p.out_blocks) * 16 * spec.in_channels * p.vectors * p.lanes * spec.dtype.itemsize

"""The weight gradient of a 3x3 stride-1 layer by Winograd: F(3x3, 2x2), 16 products a tile.

The forward :mod:`~dilconv._methods.winograd` computes a tile of four outputs ``d``
apart as ``Y = A^T [(G w G^T) * (B^T X B)] A``. The weight gradient is that
bilinear form differentiated by ``w``: for a tile's 2x2 output gradient ``g``,

``dw += G^T [(A g A^T) * (B^T X B)] G``

(the adjoint of each transform, Lavin and Gray's F(3x3, 2x2)). Summed over the tiles
and over the channel pairs, the elementwise product becomes 16 matrix products over
the tiles, ``M[p] = sum over tiles t of V[p, t]^T Gt[p, t]`` (``V = B^T X B``, the
forward's input transform, ``Gt = A g A^T``), each a ``(C, O)`` block, and at the
end ``dw = G^T M G``: 16 multiply-adds per tile and channel pair where the direct
sum does 36 (a tile covers 4 output pixels of 9 taps each).

Every pixel of the output gradient lies in one tile. Where a phase of the output
has an odd count its last tile is half outside: its gradient there reads as zero,
so it adds nothing (the forward leaves those outputs to ``blocked``; here the zeros
cost only the tile's share of products). Where the ``16 C O`` sums fit a core's
cache (:data:`M_BYTES`), each thread has its own ``M`` and, per band of tiles it
takes (rows of tiles, phase by phase, so that consecutive rows read input rows in
common; at most :data:`BAND_BYTES` of transformed values),

1. transforms the band's output gradient into ``Gt`` (compiled,
   :mod:`~dilconv._native.winograd_kernel`'s ``gradient``, every output channel);
2. for each block of input channels, transforms the band's input into ``V``
   (the forward's ``input`` transform) and adds the 16 products into its ``M``
   with ``blocked``'s register-blocked tile loop, roles swapped as in
   :mod:`~dilconv._grad_weight_tiles` (a tile's pixels are input channels, its
   vectors output channels, the sums run over the band's tiles).

Where ``M`` is larger (``aspp``: 32 MiB) the threads share one: the gradient of
every tile is transformed first, then each thread takes whole blocks of input
channels and runs every band for its block, writing only its rows of ``M``.
``V`` and ``Gt`` are stored position by position, so the tile loop reads each
position's run of tiles in order. The ``M`` are summed and turned into ``dw`` by
one matrix product with ``G^T (x) G^T``.

The transforms add and subtract inputs, so a NaN or Inf anywhere makes the result
non-finite where a direct sum may give Inf: :func:`dilconv._grad_weight.grad_weight`
computes such a call again by another route. float32 results carry a few more
rounding errors than a direct sum, within the project's tolerance.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator, Mapping

import numpy as np

from dilconv import _shapes
from dilconv._methods import blocked, winograd
from dilconv._methods._winograd_products import G
from dilconv._methods._winograd_products import lanes as transform_lanes
from dilconv._native import calls, kernels, pool
from dilconv._native.sequence import Sequence
from dilconv._spec import ConvSpec

#: Bytes of one band's ``V`` (one block of input channels) and ``Gt``: the tile
#: loop reads one position of each at a time, a sixteenth of this.
BAND_BYTES = 2**20

#: Fewest tiles in a band: each band's products load and store their block of ``M``
#: once per pass, which this many tiles' products amortise.
MIN_BAND_TILES = 128

#: Most input channels in one block of ``V``.
BLOCK_CHANNELS = 128

#: :data:`BAND_BYTES` and :data:`BLOCK_CHANNELS` where the sums are shared
#: (:func:`shares_sums`): each block's products load and store its rows of ``M``
#: once per band, so bands and blocks are larger. ``aspp``'s gradient (2048 -> 256
#: channels), medians of 5 calls in one process: 136-147 ms at 8 MiB and 256
#: channels, 151-168 at 1 MiB and 128, or 32 MiB and 256 (2026-12-06, Xeon with AMX).
SHARED_BAND_BYTES = 8 * 2**20
SHARED_BLOCK_CHANNELS = 256

#: Most bytes of ``M`` (``16 C O`` values) for a copy per thread: every band's
#: products load and store it, which beyond a core's cache cost more than the saved
#: products (``aspp``'s 2048 -> 256 channels, ``M`` 32 MiB a thread: 173-205 ms
#: against 153-177 for the column windows). Above it the sums are shared
#: (:func:`shares_sums`).
M_BYTES = 2**19


def shares_sums(spec: ConvSpec) -> bool:
    """Whether the threads share one ``M``, each taking whole blocks of input channels
    over every tile, the gradient transformed once for every tile first (``M`` more
    than :data:`M_BYTES`); else each thread sums its bands into its own ``M``."""
    return 16 * spec.in_channels * spec.out_channels * spec.dtype.itemsize > M_BYTES


def refusal(spec: ConvSpec) -> str | None:
    """Why this route cannot compute ``spec``'s weight gradient, or None: it needs
    what the forward ``winograd`` needs (a 3x3 kernel, stride 1, one group,
    float32/float64, LLVM) and something to sum."""
    reason = winograd.refusal(spec)
    if reason is None and min(*spec.out_hw, spec.batch, spec.in_channels, spec.out_channels) <= 0:
        reason = "there is nothing to sum"
    if reason is None:
        reason = winograd._unavailable()  # loads the transforms and the tile loop
    return reason


@dataclasses.dataclass(frozen=True)
class Layout:
    """The tiles of a spec (every output pixel in one) and their bands.

    ``in_rows`` / ``in_cols``: element offsets of each tile row's 4 input rows and
    each tile column's 4 input columns in an NHWC image (``-1`` outside);
    ``out_rows`` / ``out_cols``: the same for the 2 output rows and columns of the
    gradient. ``bands``: tile rows ``[r0, r1)`` and columns ``[s0, s1)``.
    ``blocks``: the input channels of each ``V``.
    """

    in_rows: np.ndarray
    in_cols: np.ndarray
    out_rows: np.ndarray
    out_cols: np.ndarray
    bands: tuple[tuple[int, int, int, int], ...]
    blocks: tuple[tuple[int, int], ...]

    @property
    def band_tiles(self) -> int:
        """Tiles in the largest band."""
        return max((r1 - r0) * (s1 - s0) for r0, r1, s0, s1 in self.bands)

    @property
    def tiles(self) -> int:
        """Tiles per image."""
        return len(self.in_rows) * len(self.in_cols)


def band_tiles(spec: ConvSpec) -> int:
    """Tiles per band: :data:`BAND_BYTES` (:data:`SHARED_BAND_BYTES` where the sums
    are shared) of ``V`` and ``Gt``, at least :data:`MIN_BAND_TILES`, and at most an
    even share of an image's tiles among the threads."""
    shared = shares_sums(spec)
    block = min(spec.in_channels, SHARED_BLOCK_CHANNELS if shared else BLOCK_CHANNELS)
    per_tile = 16 * (block + spec.out_channels) * spec.dtype.itemsize
    target = SHARED_BAND_BYTES if shared else BAND_BYTES
    tiles = len(_shapes.dilated_pair_starts(spec.out_hw[0], spec.dilation[0])) * len(
        _shapes.dilated_pair_starts(spec.out_hw[1], spec.dilation[1])
    )
    share = math.ceil(tiles / max(1, pool.num_threads())) if spec.batch == 1 else tiles
    return max(1, min(share, max(MIN_BAND_TILES, target // per_tile)))


@functools.lru_cache(maxsize=64)
def layout(spec: ConvSpec) -> Layout:
    """The :class:`Layout` of ``spec`` (remembered: the same for every call)."""
    (h, wd), (ho, wo), (dh, dw) = spec.in_hw, spec.out_hw, spec.dilation
    c, o = spec.in_channels, spec.out_channels
    # tile rows phase by phase: consecutive rows of a phase read two input rows in common
    starts = _shapes.dilated_pair_starts(ho, dh)
    ys = np.array(sorted(starts, key=lambda y: (y % dh, y)), dtype=np.int64)
    xs = np.array(_shapes.dilated_pair_starts(wo, dw), dtype=np.int64)
    bands = winograd.tile_bands(len(ys), len(xs), band_tiles(spec))
    step = BLOCK_CHANNELS
    if shares_sums(spec):  # at most SHARED_BLOCK_CHANNELS, and blocks enough for two a thread
        width = transform_lanes(spec)
        step = min(SHARED_BLOCK_CHANNELS, -(-c // (2 * pool.num_threads() * width)) * width)
    blocks = tuple((c0, min(c, c0 + step)) for c0 in range(0, c, step))
    return Layout(
        in_rows=winograd._offsets(ys - spec.pad[0][0], dh, 4, h, wd * c),
        in_cols=winograd._offsets(xs - spec.pad[1][0], dw, 4, wd, c),
        out_rows=winograd._offsets(ys, dh, 2, ho, wo * o),
        out_cols=winograd._offsets(xs, dw, 2, wo, o),
        bands=tuple(bands),
        blocks=blocks,
    )


def _pitch(elements: int, itemsize: int) -> int:
    """``elements`` rounded up to 64 bytes, and 64 more where that is a multiple of
    4 KiB (the 16 positions of a tile would all fall in one set of the L1 cache)."""
    per_line = 64 // itemsize
    n = -(-elements // per_line) * per_line
    return n + per_line if (n * itemsize) % 4096 == 0 else n


def pitches(spec: ConvSpec) -> tuple[int, int]:
    """Elements between positions of ``V`` (one block) and of ``Gt`` (one band's tiles,
    or every tile where the sums are shared)."""
    lay, item = layout(spec), spec.dtype.itemsize
    tiles, block = lay.band_tiles, lay.blocks[0][1]
    every = lay.tiles if shares_sums(spec) else tiles
    return _pitch(tiles * block, item), _pitch(every * spec.out_channels, item)


def _gradient_call(
    spec: ConvSpec, band: tuple[int, int, int, int], first: int, pitch: int
) -> calls.Call:
    """The transform of ``band``'s output gradient into ``Gt``, its first tile at
    element ``first``, positions ``pitch`` apart."""
    lay, width, o = layout(spec), transform_lanes(spec), spec.out_channels
    r0, r1, s0, s1 = band
    return kernels.transform(spec.dtype, width, o % width, "gradient").call(
        source=calls.Slot("g"),
        spare=calls.Slot("zeros"),
        target=calls.Slot("Gt", first),
        flags=calls.Ref(_unused_flags(spec.dtype, width)),
        rows=calls.Ref(lay.out_rows[r0:r1]),
        n_rows=r1 - r0,
        columns=calls.Ref(lay.out_cols[s0:s1]),
        n_columns=s1 - s0,
        vectors=o // width,
        tile=o,
        position=pitch,
    )


def _input_call(
    spec: ConvSpec, band: tuple[int, int, int, int], block: tuple[int, int], pitch: int
) -> calls.Call:
    """The input transform of ``band``'s tiles, channels ``[c0, c1)``, into ``V``."""
    lay, width, (c0, c1) = layout(spec), transform_lanes(spec), block
    r0, r1, s0, s1 = band
    return kernels.transform(spec.dtype, width, (c1 - c0) % width, "input").call(
        source=calls.Slot("x", c0),
        spare=calls.Slot("zeros"),
        target=calls.Slot("V"),
        flags=calls.Ref(_unused_flags(spec.dtype, width)),
        rows=calls.Ref(lay.in_rows[r0:r1]),
        n_rows=r1 - r0,
        columns=calls.Ref(lay.in_cols[s0:s1]),
        n_columns=s1 - s0,
        vectors=(c1 - c0) // width,
        tile=c1 - c0,
        position=pitch,
    )


@functools.cache
def _unused_flags(dtype: np.dtype, width: int) -> np.ndarray:
    """The transforms' ``flags`` argument, which ``input`` and ``gradient`` never touch."""
    flags = np.zeros(width, dtype=dtype)
    flags.flags.writeable = False
    return flags


@functools.lru_cache(maxsize=64)
def band_calls(spec: ConvSpec) -> tuple[tuple[calls.Call, ...], ...]:
    """Each band's calls, in order: the gradient's transform, then per block of input
    channels the input transform and the products into the thread's own ``M``
    (remembered per spec).

    Slots: ``x`` and ``g`` (one image, NHWC), ``zeros`` (a row of zeros), ``V``,
    ``Gt`` and ``M`` (a thread's scratch and sums, made by :func:`grad_weight`).
    """
    lay, p = layout(spec), blocked.plan(spec)
    pitch_v, pitch_g = pitches(spec)
    every: list[tuple[calls.Call, ...]] = []
    for band in lay.bands:
        r0, r1, s0, s1 = band
        tiles = (r1 - r0) * (s1 - s0)
        steps = [_gradient_call(spec, band, 0, pitch_g)]
        for block in lay.blocks:
            steps.append(_input_call(spec, band, block, pitch_v))
            steps.extend(_product_calls(spec, p, tiles, block, (pitch_v, pitch_g), 0))
        every.append(Sequence(steps))
    return tuple(every)


def _first_tile(spec: ConvSpec, band: tuple[int, int, int, int]) -> int:
    """The index of ``band``'s first tile among an image's (row by row)."""
    return band[0] * len(layout(spec).in_cols) + band[2]


@functools.lru_cache(maxsize=64)
def shared_calls(
    spec: ConvSpec,
) -> tuple[tuple[tuple[calls.Call, ...], ...], tuple[tuple[calls.Call, ...], ...]]:
    """Where the sums are shared (:func:`shares_sums`): each band's transform of the
    gradient into one ``Gt`` of every tile, then each block of input channels' calls,
    band by band its input transform and the products into its rows of ``M``."""
    lay, p, o = layout(spec), blocked.plan(spec), spec.out_channels
    pitch_v, pitch_g = pitches(spec)
    gradients = tuple(
        (_gradient_call(spec, band, _first_tile(spec, band) * o, pitch_g),) for band in lay.bands
    )
    blocks = []
    for block in lay.blocks:
        steps: list[calls.Call] = []
        for band in lay.bands:
            r0, r1, s0, s1 = band
            first = _first_tile(spec, band) * o
            steps.append(_input_call(spec, band, block, pitch_v))
            steps.extend(
                _product_calls(spec, p, (r1 - r0) * (s1 - s0), block, (pitch_v, pitch_g), first)
            )
        blocks.append(Sequence(steps))
    return gradients, tuple(blocks)


@functools.lru_cache(maxsize=256)
def _tables(c: int, o: int, block: int, pixels: int, pitch_v: int, pitch_g: int) -> tuple:
    """The tile loop's row table (one row a position) and column tables (one entry a
    tile of ``pixels`` input channels, and a last, narrower one), read-only."""
    rows = np.array([(k * pitch_v, k * c * o, 0, 1, k * pitch_g) for k in range(16)], np.int64)
    main = block - block % pixels
    groups = [(pixels, range(0, main, pixels))]
    if block % pixels:
        groups.append((block % pixels, range(main, block, pixels)))
    columns = []
    for width, starts in groups:
        table = np.array([(s, s * o, 0, 1) for s in starts], dtype=np.int64).reshape(-1, 4)
        table.flags.writeable = False
        columns.append((width, table))
    rows.flags.writeable = False
    return rows, tuple(columns)


def _product_calls(
    spec: ConvSpec,
    p: blocked.Plan,
    tiles: int,
    channels: tuple[int, int],
    pitch: tuple[int, int],
    first: int,
) -> list[calls.Call]:
    """``M[k][c0:c1, :] += V[k]^T Gt[k]`` for the 16 positions ``k``, over ``tiles``
    (``Gt``'s first at element ``first``)."""
    (c0, c1), c, o = channels, spec.in_channels, spec.out_channels
    rows, columns = _tables(c, o, c1 - c0, p.pixels, *pitch)
    steps = []
    for o0, o1 in p.out_blocks:
        vectors, tail = math.ceil((o1 - o0) / p.lanes), (o1 - o0) % p.lanes
        for width, table in columns:
            steps.append(
                kernels.tiles(spec.dtype, width, vectors, p.lanes, tail, True).call(
                    x=calls.Slot("V"),
                    w=calls.Slot("Gt", first + o0),
                    out=calls.Slot("M", c0 * o + o0),
                    rows=calls.Ref(rows),
                    n_rows=16,
                    columns=calls.Ref(table),
                    n_columns=len(table),
                    channels=tiles,
                    w_row=0,
                    w_col=0,
                    w_channel=o,
                    x_channel=c1 - c0,
                    x_pixel=1,
                    x_tap_row=0,
                    x_tap_col=0,
                    out_pixel=o,
                )
            )
    return steps


def thread_count(spec: ConvSpec) -> int:
    """Threads sharing the bands (or, where the sums are shared, the blocks)."""
    lay = layout(spec)
    items = len(lay.blocks) if shares_sums(spec) else spec.batch * len(lay.bands)
    return max(1, min(pool.num_threads(), items))


def workspace_bytes(spec: ConvSpec) -> int:
    """Each thread's ``M``, ``V`` and ``Gt``, or where the sums are shared one ``M``,
    one ``Gt`` of every tile and each thread's ``V``."""
    if refusal(spec) is not None:
        return 0
    (pitch_v, pitch_g), threads = pitches(spec), thread_count(spec)
    sums = spec.in_channels * spec.out_channels
    if shares_sums(spec):
        return 16 * (sums + pitch_g + threads * pitch_v) * spec.dtype.itemsize
    return threads * 16 * (sums + pitch_v + pitch_g) * spec.dtype.itemsize


def grad_weight(x: np.ndarray, g: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """``dw`` ``(3, 3, C, O)`` for NHWC ``x`` and ``g`` of a lowered 3x3 stride-1 spec."""
    reason = refusal(spec)
    if reason is not None:
        raise ValueError(f"the Winograd weight gradient cannot compute this call: {reason}")
    c, o = spec.in_channels, spec.out_channels
    x = np.ascontiguousarray(x, dtype=spec.dtype)
    g = np.ascontiguousarray(g, dtype=spec.dtype)
    zeros = np.zeros(-(-max(c, o) // 16) * 16 + 16, dtype=spec.dtype)
    sums = _shared_sums(x, g, spec, zeros) if shares_sums(spec) else _own_sums(x, g, spec, zeros)
    # dw[a, b] = sum over positions (i, j) of G[i, a] G[j, b] M[i, j], over every M
    back = np.kron(G.T, G.T).astype(spec.dtype)  # (9, 16)
    # on one BLAS thread: the pool's workers spin after the job, and BLAS's second
    # thread, which then waited for a CPU, made the 64-channel calls at 256 x 256
    # take 13 or 25 ms (the product itself: 0.2 ms)
    with np.errstate(invalid="ignore", over="ignore"), pool.single_threaded_blas():
        dw = np.tile(back, (1, len(sums))) @ sums.reshape(-1, c * o)
    return dw.reshape(3, 3, c, o)


def _own_sums(x: np.ndarray, g: np.ndarray, spec: ConvSpec, zeros: np.ndarray) -> np.ndarray:
    """Every thread's ``M`` ``(threads, 16, C O)``, each over the bands it took."""
    steps, threads = band_calls(spec), thread_count(spec)
    sums = np.zeros((threads, 16, spec.in_channels * spec.out_channels), dtype=spec.dtype)
    # the threads take the bands one at a time from one queue (a thread that starts
    # late takes fewer)
    shared = iter([(image, k) for image in range(spec.batch) for k in range(len(steps))])
    pitch_v, pitch_g = pitches(spec)

    def run(thread: int) -> None:
        bound = calls.Binding(
            zeros=zeros,
            M=sums[thread],
            V=calls.aligned_empty(16 * pitch_v, spec.dtype),
            Gt=calls.aligned_empty(16 * pitch_g, spec.dtype),
        )
        current = -1
        for image, k in shared:
            if image != current:
                bound.set(x=x[image], g=g[image])
                current = image
            bound.run(steps[k])

    pool.parallel_map(run, range(threads), key=("weight winograd", spec))
    return sums


def _shared_sums(x: np.ndarray, g: np.ndarray, spec: ConvSpec, zeros: np.ndarray) -> np.ndarray:
    """One ``M`` ``(1, 16, C O)``: per image, the gradient of every tile transformed
    (the threads taking bands), then the blocks of input channels (the threads taking
    blocks, each writing only its rows of ``M``)."""
    gradients, blocks = shared_calls(spec)
    pitch_v, pitch_g = pitches(spec)
    sums = np.zeros((1, 16, spec.in_channels * spec.out_channels), dtype=spec.dtype)
    transformed = calls.aligned_empty(16 * pitch_g, spec.dtype)
    scratch = [calls.aligned_empty(16 * pitch_v, spec.dtype) for _ in range(thread_count(spec))]
    for image in range(spec.batch):
        arrays = {"x": x[image], "g": g[image], "zeros": zeros, "Gt": transformed, "M": sums[0]}
        pool.parallel_map(
            functools.partial(_run_queue, arrays, iter(gradients)),
            [None] * len(scratch),
            key=("weight winograd gradients", spec),
        )
        pool.parallel_map(
            functools.partial(_run_queue, arrays, iter(blocks)),
            scratch,
            key=("weight winograd blocks", spec),
        )
    return sums


def _run_queue(
    arrays: dict[str, np.ndarray],
    queue: Iterator[tuple[calls.Call, ...]],
    scratch: np.ndarray | None,
) -> None:
    """Run each group of calls the queue hands out (shared among threads) on
    ``arrays`` and, where given, this thread's ``V``."""
    bound = calls.Binding(**arrays) if scratch is None else calls.Binding(**arrays, V=scratch)
    for steps in queue:
        bound.run(steps)


def estimate_seconds(spec: ConvSpec, costs: Mapping[str, float]) -> float:
    """Modelled time: the 16 products at ``blocked``'s rate over whole vectors of
    output channels, both transforms, the final product and the calls."""
    lay, p = layout(spec), blocked.plan(spec)
    threads = thread_count(spec)
    width = sum(math.ceil((o1 - o0) / p.lanes) * p.lanes for o0, o1 in p.out_blocks)
    tiles = spec.batch * lay.tiles
    macs = tiles * 16 * spec.in_channels * width
    step = transform_lanes(spec)
    vectors = math.ceil(spec.out_channels / step) + sum(
        math.ceil((c1 - c0) / step) for c0, c1 in lay.blocks
    )
    values = tiles * 16 * vectors * step
    half = 1 if spec.dtype.itemsize < 8 else 0.5
    seconds = macs / (costs["blocked"] * half * threads)
    seconds += values / (costs["winograd_transform"] * half * threads)
    per_band = 1 + len(lay.blocks) * (1 + len(p.out_blocks))
    seconds += spec.batch * len(lay.bands) * per_band * costs["tap"] / threads
    sums = 16 * spec.in_channels * spec.out_channels * spec.dtype.itemsize
    if shares_sums(spec):  # every band loads and stores M; every block reads all of Gt
        item = spec.dtype.itemsize
        moved = spec.batch * len(lay.bands) * 2 * sums
        moved += spec.batch * len(lay.blocks) * 16 * lay.tiles * spec.out_channels * item
        seconds += moved / (costs["copy"] * threads)
    else:
        sums *= threads  # every thread's M, added at the end
    return costs["call"] + costs["blocked_call"] + seconds + sums / costs["copy"]

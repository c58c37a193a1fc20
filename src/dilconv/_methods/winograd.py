"""Winograd: F(2x2, 3x3) on each dilation phase, 2.25x fewer multiply-adds than direct.

Lavin & Gray's fast algorithm for 3x3 kernels ("Fast Algorithms for Convolutional
Neural Networks", 2016), with dilation: a tile is the four outputs ``(y0 + d i,
x0 + d j)``, ``i, j`` in 0, 1, which read the 4x4 input pixels ``d`` apart from
``(y0 - pad, x0 - pad)``, so each tile is ordinary F(2x2, 3x3) on one phase of the
image and the work is the same at every dilation. Per tile and channel pair it
does 16 multiply-adds instead of 36:

1. the weights are transformed once per call, ``U = G w G^T`` (16 matrices of
   ``C x O``, summed in float64 by compiled code,
   :mod:`~dilconv._native.winograd_weights`), the same pass packing them for
   ``blocked``'s tile loop where step 5 needs it; NCHW weights are read as the
   caller's array, moved a block at a time through the thread's cache
   (:func:`~dilconv._methods._winograd_products.staged_weight_calls`);
2. each band of tiles is transformed, ``V = B^T d B`` (16 matrices of
   ``tiles x C``), by compiled code (:mod:`~dilconv._native.winograd_kernel`),
   one block of input channels at a time;
3. ``M[p] += V[p] @ U[p]`` for the 16 positions and that block: 16 matrix
   products, done by the register-blocked tile loop of
   :mod:`~dilconv._native.tile_kernel` (no packing of ``V``: with small bands
   BLAS spent more time per call than on the products);
4. ``y = A^T M A`` puts each tile's four outputs in place (compiled code; past the
   caches where the result outgrows them, :func:`streams`);
5. the outputs no whole tile covers (a phase's last row or column when its count
   is odd) are computed directly by ``blocked``'s tile loop, on the packing of step 1
   (single columns by tiles down them), as the last items of the bands' job.

Bands are a few rows of tiles whose ``V`` (one block of channels) and ``M`` fit a
core's own cache beside the block of ``U`` where that holds enough tiles, else take
at most :data:`BAND_BYTES` (:func:`band_fit`); at least :data:`MIN_BANDS` to an
image, and at least :data:`MIN_BAND_TILES` tiles, so that a ``U`` too large for the
caches, read once per band, costs little beside the products; with few channels,
where a batch has bands enough, at least :data:`MIN_BAND_MACS` of products. Where
all of ``U`` outgrows the last-level cache (:func:`streams_weights`: ``aspp``'s 33
MiB), each band reads it from memory, so the bands are larger, about
:data:`STREAM_TILES`, and as many for each CPU (:func:`stream_fit`);
threads take runs of bands, each with its own scratch. Where the output channels
outnumber the input channels and a band's ``M`` would be large (the input gradient of
a layer that reduces its channels), the band's input is transformed once for every
channel and the products and output transform run one group of output channels at
a time (:func:`output_groups`), so ``M`` stays in cache.
The transforms add and subtract up to 16 inputs and 9 products, so float32
results carry a few more rounding errors than a direct sum (within the project's
float32 tolerance, as the tests check); float64 is as exact as the others.

For 3x3 kernels with stride 1 and one group, float32 and float64, any dilation
and padding. Padding is never copied: tile pixels in the padding read a row of
zeros.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import importlib.util
import math
from collections.abc import Iterator, Mapping

import numpy as np

from dilconv import _config, _shapes
from dilconv._methods import blocked
from dilconv._methods._winograd_products import (
    block_channels,
    lanes,
    packed_bytes,
    product_calls,
    product_plan,
    stage_bytes,
    streams_weights,
    transform_weights,
)
from dilconv._native import calls, compiler, kernels, last_level_cache, pool, winograd_kernel
from dilconv._native import results as _results
from dilconv._native.sequence import Sequence
from dilconv._spec import ConvSpec

#: The dtypes compiled.
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

#: Most bytes of ``V`` and ``M`` for one band. Each band costs a few compiled calls
#: and a pass of the threads' Python loop, paid with the GIL handed between threads:
#: on the 64-channel ``context`` layers (2026-12-04, AMD EPYC, 2 threads, in one
#: process) bands of 4 MiB took 7.8-8.5 ms against 9.2-10.0 ms at 1 MiB (the old
#: value, which kept ``V`` and ``M`` in a 1 MiB L2 cache) and 8.3-8.6 ms at 2 MiB;
#: on NCHW arrays 10.2-10.9 against 12.6-14.6 ms.
BAND_BYTES = 4 * 2**20

#: Share of a core's own cache (:func:`~dilconv._native.last_level_cache.core_size`)
#: that a band's ``V`` and ``M`` and the block of ``U`` they use may fill together.
CORE_SHARE = 0.9

#: Fewest tiles of a band that fits :data:`CORE_SHARE` of the core's cache, for such
#: bands to be used instead of :data:`BAND_BYTES`: each band reads its block of ``U``
#: once and costs a few calls, which fewer tiles do not amortise. On a Xeon with
#: 2 MiB of L2 a core (2026-12-06, 2 vCPUs, medians of 17 alternating), 64 channels
#: fit 198 tiles: the ``context`` layer of 256x256 took 15.0-15.2 ms against 16.2-17.3
#: at 4 MiB, the ``wave`` layer 27.1 against 30.0; 128 channels fit 51 tiles (with
#: 1 MiB of ``U``), and took 50.9 ms against 46.5 at 4 MiB. On the EPYC with 1 MiB a
#: core, whose 64 channels would fit 83 tiles, 4 MiB bands were the faster (above).
CORE_BAND_TILES = 160

#: Fewest bands per image where tiles allow (before :data:`MIN_BAND_TILES`), so
#: that threads share the bands evenly: ``aspp``'s 841 tiles stay in 10 bands.
MIN_BANDS = 16

#: Multiply-adds of a band's products below which, where the batch holds
#: :data:`MIN_BANDS` bands anyway, its bands grow towards :func:`band_fit`: a band
#: costs its thread a few calls and a step under the GIL whatever its size, and
#: with few channels :data:`MIN_BAND_TILES` is little work. 64 images of 64x64, 32
#: channels, d = 2 (2 vCPUs, 2026-12-07, medians of 9): 29.3-29.8 ms in 11 bands of
#: 96 tiles an image (one thread: 25.3), 18.4-19.4 in 3 of 444; 64 channels and more
#: (16 images of 64x64, 8 of 32x32 with 128) kept their bands, which measured as fast
#: as larger ones or 3-5% faster.
MIN_BAND_MACS = 2**23

#: Tiles in a band however many channels: every band reads all of ``U`` (aspp:
#: 33 MiB, more than the shared L3 cache), which this many tiles' products
#: amortise (aspp at d = 6: 154 ms in bands of 35 tiles, 138 in bands of 70).
MIN_BAND_TILES = 96

#: Tiles of a band, about, where the whole of ``U`` outgrows the last-level cache, so
#: that every band reads all of it from memory (:func:`streams_weights`); the bands
#: are then a multiple of the CPUs, each CPU as many (:func:`stream_fit`). ``aspp``
#: (2048 -> 256 channels, 33 MiB of ``U``) on a Xeon with 2 MiB of L2 a core
#: (2026-12-07, 2 vCPUs, medians of 9, each in its own process): 870 tiles at d = 18
#: took 104.8-108.1 ms in 10 bands, 102.6-103.6 in 5, 95.1-97.0 in 2 of 435 tiles;
#: 2 bands of 20 and 9 rows of tiles, 106.7.
STREAM_TILES = 448

#: Bytes of a band's ``M`` (every output channel) above which, where there are more
#: output than input channels, the band's products and output transform run one
#: group of output channels at a time (:func:`output_groups`).
SPLIT_BYTES = 4 * 2**20

#: Most bytes of ``M`` for one group of output channels (at least one block).
GROUP_BYTES = 2**20

#: Multiply-adds of a direct convolution below which one thread does every band.
PARALLEL_WORK = 2**24


@functools.lru_cache(maxsize=1)
def _unavailable() -> str | None:
    """Why the transforms or the tile loop cannot be compiled here, or None (checked once)."""
    if importlib.util.find_spec("llvmlite") is None:
        return "llvmlite is not installed (pip install numba)"
    reason = blocked._unavailable()  # the 16 products run on the blocked tile loop
    if reason is not None:
        return reason
    try:
        winograd_kernel.transform_function(np.dtype(np.float32), 4, 1, "input")
    except (ImportError, RuntimeError, OSError) as err:
        return f"llvmlite could not compile for this CPU: {err}"
    return None


def refusal(spec: ConvSpec) -> str | None:
    """Declines all but 3x3 kernels with stride 1, one group, float32/float64."""
    if spec.kernel_hw != (3, 3):
        return f"it is F(2x2, 3x3) and needs a 3x3 kernel, not {spec.kernel_hw}"
    if spec.stride != (1, 1):
        return f"it needs stride 1, not {spec.stride}"
    if spec.groups != 1:
        return f"it needs one group, not {spec.groups}"
    if spec.dtype not in DTYPES:
        return f"it is compiled for float32 and float64, not {spec.dtype}"
    if not compiler.installed():
        return "llvmlite is not installed (pip install numba)"
    # compiles nothing: known once the code was loaded (see blocked.refusal)
    return _unavailable() if _unavailable.cache_info().currsize else None


@dataclasses.dataclass(frozen=True)
class Layout:
    """The tiles of a spec: offset tables (see :mod:`~dilconv._native.winograd_kernel`).

    ``in_rows`` / ``in_cols``: element offsets of each tile row's 4 input rows and
    each tile column's 4 input columns (``-1`` outside the image); ``out_rows`` /
    ``out_cols``: the same for the 2 output rows and columns. ``bands``: the
    tile rows ``[r0, r1)`` and columns ``[s0, s1)`` of each band of an image, whole
    rows or, where one row is too many, part of a row. Tiles are whole pairs only;
    the outputs of a phase's last, unpaired row or column (``single_rows``,
    ``single_cols``) are computed directly (:func:`direct_calls`).
    """

    in_rows: np.ndarray
    in_cols: np.ndarray
    out_rows: np.ndarray
    out_cols: np.ndarray
    bands: tuple[tuple[int, int, int, int], ...]
    single_rows: tuple[int, ...]  # output rows no whole pair covers
    single_cols: tuple[int, ...]  # output columns no whole pair covers

    @property
    def band_tiles(self) -> int:
        """Tiles in the largest band."""
        return max(((r1 - r0) * (s1 - s0) for r0, r1, s0, s1 in self.bands), default=0)

    @property
    def tiles(self) -> int:
        """Tiles per image."""
        return len(self.in_rows) * len(self.in_cols)


def _offsets(starts: np.ndarray, step: int, count: int, size: int, pitch: int) -> np.ndarray:
    """``(len(starts), count)``: ``(start + k * step) * pitch``, or -1 outside ``[0, size)``."""
    at = starts[:, None] + step * np.arange(count, dtype=np.int64)[None, :]
    table = np.where((at >= 0) & (at < size), at * pitch, -1).astype(np.int64)
    table.flags.writeable = False
    return table


@functools.lru_cache(maxsize=128)
def layout(spec: ConvSpec, staged: bool = False) -> Layout:
    """The :class:`Layout` of ``spec`` (remembered: it is the same for every call);
    ``staged``: for NCHW arrays, whose bands stage rows too (:func:`band_fit`)."""
    (h, wd), (ho, wo), (dh, dw) = spec.in_hw, spec.out_hw, spec.dilation
    c, o = spec.in_channels, spec.out_channels
    ys, single_rows = whole_pairs(ho, dh)
    xs, single_cols = whole_pairs(wo, dw)
    tiles, cached = len(ys) * len(xs), band_fit(spec, staged)
    even = math.ceil(tiles / MIN_BANDS)
    fit = max(MIN_BAND_TILES, min(cached, even))  # tiles per band
    # few channels: larger bands where the batch still has MIN_BANDS of them
    worth = math.ceil(MIN_BAND_MACS / (16 * max(1, c * o)))
    fit = max(fit, min(cached, worth, math.ceil(spec.batch * tiles / MIN_BANDS)))
    if not staged and streams_weights(spec):
        fit = max(fit, stream_fit(len(ys), len(xs), _config.available_cpus()))
    bands = tile_bands(len(ys), len(xs), fit)
    return Layout(
        in_rows=_offsets(ys - spec.pad[0][0], dh, 4, h, wd * c),
        in_cols=_offsets(xs - spec.pad[1][0], dw, 4, wd, c),
        out_rows=_offsets(ys, dh, 2, ho, wo * o),
        out_cols=_offsets(xs, dw, 2, wo, o),
        bands=tuple(bands),
        single_rows=single_rows,
        single_cols=single_cols,
    )


def band_fit(spec: ConvSpec, staged: bool = False) -> int:
    """Most tiles of a band: as many as fit :data:`CORE_SHARE` of a core's own cache
    beside the block of ``U`` they use, where that is :data:`CORE_BAND_TILES` or
    more, else as many as fit :data:`BAND_BYTES`.

    ``staged``: the bands of NCHW arrays (:mod:`~dilconv._methods._winograd_nchw`),
    whose tiles each also stage in the cache up to 8 input values of each channel of
    the block and 4 outputs of each output channel. So 64 channels fit 144 tiles on
    a core with 2 MiB and keep 4 MiB bands, which measured as fast or faster there
    (NOTES); 32 channels fit 323."""
    size, cb, o = spec.dtype.itemsize, block_channels(spec), spec.out_channels
    per_tile = 16 * (cb + o) * size
    in_cache = per_tile + ((8 * cb + 4 * o) * size if staged else 0)
    u_block = 16 * cb * o * size
    in_core = int(CORE_SHARE * last_level_cache.core_size() - u_block) // in_cache
    return in_core if in_core >= CORE_BAND_TILES else BAND_BYTES // per_tile


def stream_fit(rows: int, columns: int, cpus: int) -> int:
    """Tiles per band where every band streams ``U`` (:func:`streams_weights`): a
    multiple of ``cpus`` bands (each CPU as many), the one nearest to bands of
    :data:`STREAM_TILES`; in whole rows of tiles split evenly where a row fits
    (:func:`tile_bands`).

    >>> stream_fit(29, 30, 2), stream_fit(30, 30, 2)  # aspp at d = 18 and 6: 2 bands
    (450, 450)
    >>> stream_fit(29, 30, 16), stream_fit(100, 100, 2)  # 16 bands; 22 of 5 rows
    (60, 500)
    """
    tiles = rows * columns
    count = cpus * max(1, round(tiles / (STREAM_TILES * cpus)))
    if columns > math.ceil(tiles / count):  # parts of rows
        return math.ceil(tiles / count)
    return math.ceil(rows / count) * columns


def tile_bands(rows: int, columns: int, fit: int) -> list[tuple[int, int, int, int]]:
    """Bands ``(r0, r1, s0, s1)`` of about ``fit`` tiles from ``rows x columns``:
    whole rows of tiles where a row fits, else each row cut into equal parts.

    >>> tile_bands(3, 4, 8)
    [(0, 2, 0, 4), (2, 3, 0, 4)]
    >>> tile_bands(1, 5, 2)
    [(0, 1, 0, 1), (0, 1, 1, 3), (0, 1, 3, 5)]
    """
    if rows == 0 or columns == 0:
        return []
    if fit >= columns:
        step = min(rows, fit // columns)
        return [(r, min(r + step, rows), 0, columns) for r in range(0, rows, step)]
    cuts = np.linspace(0, columns, math.ceil(columns / fit) + 1).astype(int).tolist()
    return [(r, r + 1, a, b) for r in range(rows) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


def whole_pairs(out: int, d: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """First outputs of the pairs ``(o, o + d)`` both inside ``[0, out)``, and the
    outputs no such pair covers (the last of each phase with an odd count).

    A tile whose second pair is outside would do all 16 products for half its
    outputs (at ``aspp``'s 65 outputs and dilation 18, a third of the tiles).

    >>> whole_pairs(7, 2)
    (array([0, 1, 4]), (5,))
    """
    starts = [o for o in _shapes.dilated_pair_starts(out, d) if o + d < out]
    covered = set(starts) | {o + d for o in starts}
    return np.array(starts, dtype=np.int64), tuple(o for o in range(out) if o not in covered)


def to_whole(out: int, d: int) -> int:
    """The fewest outputs to add after ``out`` so that whole pairs cover every one.

    Every phase (outputs ``d`` apart) then holds an even count, which needs a
    multiple of ``2 d`` outputs: a remainder ``m`` leaves ``m`` phases one longer
    than the others. Arithmetic, not a search (``d`` may be ``10**9``).

    >>> to_whole(65, 1), to_whole(65, 2), to_whole(64, 1), to_whole(5, 10**9)
    (1, 3, 0, 1999999995)
    """
    return -out % (2 * d)


@functools.lru_cache(maxsize=128)
def whole_tile_extension(spec: ConvSpec) -> tuple[int, int]:
    """Outputs to add at the end of each axis so that whole tiles cover every output,
    or ``(0, 0)``: none are missing, or the added outputs' products would outnumber
    the direct ones they replace (a tile's output takes 4 of its 16 products, a
    direct output the 9 taps).

    For a caller that writes the result into a larger array anyway, so that the
    added outputs cost only their tiles: the phase of a transposed convolution
    (:mod:`dilconv._transpose.phase`). There the direct outputs cost more than
    their count says (``blocked``'s packing of the taps, and their own passes over
    the weights): with 64 channels at 33x33, 1.43 ms against 1.23 ms extended by a
    row and a column; 256 to 64 channels at 65x65, 4.71 against 4.58.

    >>> from dilconv._spec import make_spec
    >>> def at(size, d):
    ...     spec = make_spec((1, size, size, 8), (3, 3, 8, 8), padding="same", dilation=d,
    ...                      data_format="NHWC", dtypes=[np.dtype(np.float32)])
    ...     return whole_tile_extension(spec.lowered())
    >>> at(65, 1), at(64, 1), at(65, 2)  # at d=2, three more rows and columns: too many
    ((1, 1), (0, 0), (0, 0))
    """
    lay = layout(spec)
    if not lay.single_rows and not lay.single_cols:
        return (0, 0)
    (ho, wo), (dh, dw) = spec.out_hw, spec.dilation
    eh, ew = to_whole(ho, dh), to_whole(wo, dw)
    direct = len(lay.single_rows) * wo + (ho - len(lay.single_rows)) * len(lay.single_cols)
    added = (ho + eh) * (wo + ew) - ho * wo
    return (eh, ew) if 4 * added <= 9 * direct else (0, 0)


@functools.lru_cache(maxsize=128)
def direct_calls(spec: ConvSpec, threads: int) -> blocked.TileCalls | None:
    """The outputs no whole tile covers, by ``blocked``'s tile loop (None: there are none).

    Every column of the single rows, by tiles along them; then the single columns
    of the other rows, by tiles down the columns
    (:func:`~dilconv._methods.blocked.column_region_calls`: along a row, each
    row's single columns were a tile that read every weight again). Each part's
    threads deal the blocks of output channels where they can, so that each reads
    only its own weights (on 512 to 512 channels at 33x33 two threads that each
    read every weight took as long as one).
    """
    lay = layout(spec)
    if not lay.single_rows and not lay.single_cols:
        return None
    ho = spec.out_hw[0]
    every = blocked.layout(spec)
    single = np.zeros(ho, dtype=bool)
    single[list(lay.single_rows)] = True
    flat = np.arange(spec.batch * ho)
    parts = []
    if lay.single_rows:
        rows = np.ascontiguousarray(every.rows[single[flat % ho]])
        parts.append(blocked.region_calls(spec, rows, every.columns, threads, by_outputs=True))
    others = np.flatnonzero(~single)
    if lay.single_cols and len(others):
        cols = np.array(lay.single_cols, dtype=np.int64)
        parts.append(blocked.column_region_calls(spec, cols, others, threads, by_outputs=True))
    shares: list[list[calls.Call]] = [[] for _ in range(threads)]
    for part in parts:
        for share, more in zip(shares, part.shares, strict=True):
            share.extend(more)
    return blocked.TileCalls(tuple(Sequence(share) for share in shares))


def thread_count(spec: ConvSpec) -> int:
    """Threads sharing the bands: one below :data:`PARALLEL_WORK` direct multiply-adds."""
    bands = spec.batch * len(layout(spec).bands)
    threads = pool.num_threads() if spec.macs >= PARALLEL_WORK else 1
    return max(1, min(bands, threads))


def workspace_bytes(spec: ConvSpec) -> int:
    """The packed transformed weights, each thread's ``V`` and ``M`` for one band,
    ``blocked``'s packed weights where some outputs are computed directly, and each
    thread's stage for NCHW weights (:func:`~._winograd_products.staged_weight_calls`);
    on NCHW arrays with vectors of tiles (:mod:`._winograd_planar`) the weights
    again as ``(16, C, O)`` and each thread's planes, where those are more."""
    from dilconv._methods import _winograd_planar

    lay = layout(spec)
    c, o = spec.in_channels, spec.out_channels
    # V and M as on NHWC arrays, or (NCHW arrays, :mod:`._winograd_nchw`) a block of
    # input channels and every output channel however many there are, for the larger
    # of the two layouts' bands
    groups = output_groups(spec)
    per_tile = max(_v_channels(spec, groups) + _m_channels(spec, groups), block_channels(spec) + o)
    tiles = max(lay.band_tiles, layout(spec, staged=True).band_tiles)
    scratch = 16 * tiles * per_tile + 2 * (max(c, o) + 64)
    planes = max((band.plane for band in _winograd_planar.bands(spec)), default=0) * lanes(spec)
    planar = 16 * sum(_winograd_planar.position(spec, k, planes) for k in (block_channels(spec), o))
    threads = thread_count(spec)
    elements = max(threads * scratch, threads * planar + 16 * c * o)
    direct = blocked.packed_bytes(spec) if lay.single_rows or lay.single_cols else 0
    stages = pool.num_threads() * stage_bytes(spec)
    return packed_bytes(spec) + direct + stages + elements * spec.dtype.itemsize


@functools.lru_cache(maxsize=128)
def output_groups(spec: ConvSpec) -> tuple[tuple[int, int], ...] | None:
    """Groups ``[g0, g1)`` of whole blocks of output channels, each of whose ``M`` for
    a band takes at most :data:`GROUP_BYTES`, where a band's ``M`` for every output
    channel would take more than :data:`SPLIT_BYTES` and the output channels
    outnumber the input channels; else None (one ``M`` for every output channel).

    With groups, a band's input is transformed once for every input channel and
    each group's products and output transform follow in turn, so ``M`` stays in
    cache: the input gradient of ``aspp``'s 2048 -> 256 layer (256 -> 2048 channels
    at 65 x 65, ``M`` 11 MiB a band) took 82-91 ms in one ``M``, 70 ms in the mirror
    layer (2048 -> 256, ``M`` 1.4 MiB). Remembered: the band calls and the workspace ask.
    """
    c, o, item = spec.in_channels, spec.out_channels, spec.dtype.itemsize
    tiles = layout(spec).band_tiles
    if c >= o or 16 * tiles * o * item <= SPLIT_BYTES:
        return None
    blocks = product_plan(spec).out_blocks
    widest = max(o1 - o0 for o0, o1 in blocks)
    per = max(1, GROUP_BYTES // (16 * tiles * widest * item))
    return tuple(
        (blocks[k][0], blocks[min(k + per, len(blocks)) - 1][1]) for k in range(0, len(blocks), per)
    )


def _m_channels(spec: ConvSpec, groups: tuple[tuple[int, int], ...] | None) -> int:
    """Output channels of ``M`` with output ``groups``: every one, or the widest group's."""
    return spec.out_channels if groups is None else max(g1 - g0 for g0, g1 in groups)


def _v_channels(spec: ConvSpec, groups: tuple[tuple[int, int], ...] | None) -> int:
    """Input channels of ``V`` with output ``groups``: one block's, or every one."""
    return block_channels(spec) if groups is None else spec.in_channels


@dataclasses.dataclass(frozen=True)
class BandCalls:
    """Per band ``(r0, r1, s0, s1)`` of an image, its calls in order: for each block of
    input channels the input transform then the products, then the output transform
    (or, with :func:`output_groups`, one input transform of every channel, then each
    group's products and output transform).

    Slots: ``x`` and ``y`` (the image's input and output, NHWC), ``zeros`` (a row of
    zeros), ``U`` (:func:`transform_weights`), ``V`` and ``M`` (a thread's scratch,
    :func:`scratch`), ``sink`` (a scratch row) and ``flags`` (a thread's vector that
    the output transforms leave non-finite once a tile's output is NaN or Inf, as
    a NaN or Inf the tile read makes it). Each call holds its tables.

    ``tiles``, ``v_channels`` and ``m_channels`` size ``V`` and ``M`` for these calls
    (:func:`scratch`): the tiles of the largest band and the channels per position,
    as the calls were made (a spec's layout follows the CPUs, see :func:`stream_fit`,
    and may be made again later).
    """

    bands: tuple[tuple[int, int, int, int], ...]
    steps: tuple[tuple[calls.Call, ...], ...]
    tiles: int
    v_channels: int
    m_channels: int


def _input_call(
    spec: ConvSpec,
    lay: Layout,
    band: tuple[int, int, int, int],
    channels: tuple[int, int],
    stride: int,
    *,
    source: calls.Slot | None = None,
    at: int = 0,
) -> calls.Call:
    """The input transform of ``band``'s tiles for channels ``[c0, c1)`` into ``V``,
    which holds ``stride`` channels per position, the first of these ``at`` into each
    (``source``: where channel ``c0`` is read, by default slot ``x`` from ``c0``)."""
    (r0, r1, s0, s1), (c0, c1), width = band, channels, lanes(spec)
    forward = kernels.transform(spec.dtype, width, (c1 - c0) % width, "input")
    return forward.call(
        source=calls.Slot("x", c0) if source is None else source,
        spare=calls.Slot("zeros"),
        target=calls.Slot("V", at),
        flags=calls.Ref(np.zeros(width, dtype=spec.dtype)),  # the input transform's: unused
        rows=calls.Ref(lay.in_rows[r0:r1]),
        n_rows=r1 - r0,
        columns=calls.Ref(lay.in_cols[s0:s1]),
        n_columns=s1 - s0,
        vectors=(c1 - c0) // width,
        tile=16 * stride,
        position=stride,
    )


def _output_call(
    spec: ConvSpec, lay: Layout, band: tuple[int, int, int, int], group: tuple[int, int]
) -> calls.Call:
    """The output transform of ``band``'s tiles from ``M`` (channels ``[g0, g1)``),
    storing past the caches where :func:`streams`."""
    (r0, r1, s0, s1), (g0, g1), width = band, group, lanes(spec)
    tail = (g1 - g0) % width
    backward = kernels.transform(spec.dtype, width, tail, "output", streams(spec))
    return backward.call(
        source=calls.Slot("M"),
        spare=calls.Slot("sink"),
        target=calls.Slot("y", g0),
        flags=calls.Slot("flags"),
        rows=calls.Ref(lay.out_rows[r0:r1]),
        n_rows=r1 - r0,
        columns=calls.Ref(lay.out_cols[s0:s1]),
        n_columns=s1 - s0,
        vectors=(g1 - g0) // width,
        tile=16 * (g1 - g0),
        position=g1 - g0,
    )


def streams(spec: ConvSpec) -> bool:
    """Whether the output transform stores the result past the caches: where input and
    output together outgrow the last-level cache
    (:func:`~dilconv._native.last_level_cache.call_outgrows`) and every output vector
    is whole (the output channels a whole number of vectors). Else each output line
    would be fetched before it is written, and evicted unread. On 2 vCPUs of a Xeon
    (2026-12-06, medians of 21): ``context``'s 64 channels of 256x256 14.9 / 15.5 ->
    14.2 / 13.5 ms, at d = 8 15.5 -> 14.0; ``wave`` 29.2 / 29.2 -> 27.5 / 24.2."""
    return spec.out_channels % lanes(spec) == 0 and last_level_cache.call_outgrows(spec)


@functools.lru_cache(maxsize=64)
def band_calls(spec: ConvSpec) -> BandCalls:
    """The :class:`BandCalls` of ``spec`` (remembered: the same for every call)."""
    lay = layout(spec)
    c, o = spec.in_channels, spec.out_channels
    in_blocks = product_plan(spec).in_blocks
    groups = output_groups(spec)
    per_band = []
    for band in lay.bands:
        r0, r1, s0, s1 = band
        tiles = (r1 - r0) * (s1 - s0)
        steps: list[calls.Call] = []
        if groups is None:
            products = product_calls(spec, tiles)
            for (c0, c1), block in zip(in_blocks, products, strict=True):
                steps.append(_input_call(spec, lay, band, (c0, c1), c1 - c0))
                steps.extend(block)
            steps.append(_output_call(spec, lay, band, (0, o)))
        else:
            steps.append(_input_call(spec, lay, band, (0, c), c))
            for group in groups:
                for block in product_calls(spec, tiles, group):
                    steps.extend(block)
                steps.append(_output_call(spec, lay, band, group))
        per_band.append(Sequence(steps))
    sizes = (lay.band_tiles, _v_channels(spec, groups), _m_channels(spec, groups))
    return BandCalls(lay.bands, tuple(per_band), *sizes)


def scratch(spec: ConvSpec, plan: BandCalls) -> dict[str, np.ndarray]:
    """A thread's ``V`` (one block of input channels, or every one with
    :func:`output_groups`) and ``M`` (every output channel, or one group's) for the
    largest band of ``plan``, as its calls were made, tile by tile (a tile's 16
    vectors of channels are one contiguous run, which the transforms write or read
    in one pass), and :func:`thread_arrays`."""
    return {
        "V": calls.aligned_empty(16 * plan.tiles * plan.v_channels, spec.dtype),
        "M": calls.aligned_empty(16 * plan.tiles * plan.m_channels, spec.dtype),
        **thread_arrays(spec),
    }


def thread_arrays(spec: ConvSpec) -> dict[str, np.ndarray]:
    """A thread's ``sink`` (a row of every output channel, where the output transforms
    store what lies outside the image) and its ``flags`` (see :class:`BandCalls`)."""
    o = spec.out_channels
    return {
        "sink": calls.aligned_empty(math.ceil(o / lanes(spec)) * lanes(spec), spec.dtype),
        "flags": np.zeros(lanes(spec), dtype=spec.dtype),
    }


class NonFiniteInput(ArithmeticError):
    """:func:`conv` under :func:`finite_guard` read a NaN or Inf in its input."""


_GUARDED: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "dilconv_winograd_guarded", default=False
)


@contextlib.contextmanager
def finite_guard() -> Iterator[None]:
    """Within the block, :func:`conv` raises :class:`NonFiniteInput` where the tiles'
    input held a NaN or Inf (where its answer may differ from ``direct``'s) instead
    of returning.

    The output transforms note every non-finite output of a tile as they go, and a
    NaN or Inf a tile reads makes some of its outputs so (see
    :mod:`~dilconv._native.winograd_kernel`), so ``method="auto"`` need not scan
    the input before choosing Winograd: it runs it under this guard and computes
    again by a method that sums as ``direct`` does when it raises
    (:func:`dilconv._select.run_resolved`). A sum that overflows inside the
    transforms, where the direct sum may stay finite, raises too, so near the top
    of the float range ``"auto"`` is right where Winograd by name gives Inf.
    Outputs that no whole tile covers are computed directly, exact whatever the
    input holds.

    Examples
    --------
    >>> import numpy as np
    >>> from dilconv._spec import make_spec
    >>> x = np.ones((1, 8, 8, 4), np.float32)
    >>> x[0, 3, 3, 0] = np.inf
    >>> spec = make_spec(x.shape, (3, 3, 4, 4), padding=1, data_format="NHWC")
    >>> w = np.ones((3, 3, 4, 4), np.float32)
    >>> np.isnan(conv(x, w, spec)).any()  # Winograd's transforms: inf - inf
    np.True_
    >>> with finite_guard():
    ...     conv(x, w, spec)
    Traceback (most recent call last):
    ...
    dilconv._methods.winograd.NonFiniteInput: winograd read a NaN or Inf in its input
    """
    token = _GUARDED.set(True)
    try:
        yield
    finally:
        _GUARDED.reset(token)


def guarded() -> bool:
    """Whether the call runs within :func:`finite_guard`."""
    return _GUARDED.get()


def conv(x: np.ndarray, w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Correlate NHWC ``x`` with HWIO ``w`` (3x3, stride 1) by Winograd F(2x2, 3x3)."""
    reason = refusal(spec) or _unavailable()  # the latter loads the transforms
    if reason is not None:
        raise ValueError(f"method='winograd' cannot compute this call: {reason}")
    n, (ho, wo), c, o = spec.batch, spec.out_hw, spec.in_channels, spec.out_channels
    y = _results.new_result((n, ho, wo, o), spec.dtype)
    if y.size == 0:
        return y
    if c == 0:
        y.fill(0)
        return y
    x = np.ascontiguousarray(x, dtype=spec.dtype)
    threads = thread_count(spec)
    direct = direct_calls(spec, threads)
    # blocked's packing, for the outputs no whole tile covers, in the same pass
    packed, weights = transform_weights(w, spec, product_plan(spec), taps=direct is not None)
    plan = band_calls(spec)  # the scratch is sized by its bands, as they were made
    items = [(image, k) for image in range(n) for k in range(len(plan.bands))]
    # then the outputs no whole tile covers, (-1, k) for the k-th share of them: in
    # the same job, since a job of their own began with waking a worker (0.3 ms and
    # more on 2 virtual CPUs), and the caller ran both shares itself where the
    # worker woke later than that (0.5 ms of 4.2 for 256 to 64 channels at 65x65)
    if direct is not None:
        items += [(-1, k) for k, share in enumerate(direct.shares) if share]
    # the threads take the items one at a time from one iterator (its next() is one
    # step under the GIL): a thread that starts late, or is slowed, takes fewer
    # (the wave layer, bands split in advance: 30 or 39 ms, as a worker started late)
    shared = iter(items)
    zeros = np.zeros(math.ceil(max(c, 1) / lanes(spec)) * lanes(spec), dtype=spec.dtype)
    flags: list[np.ndarray] = []  # each thread's (list.append is atomic)

    def run(share: Iterator[tuple[int, int]]) -> None:
        bound = calls.Binding(U=packed, zeros=zeros, **scratch(spec, plan))
        flags.append(bound.arrays["flags"])
        current = -1
        for image, k in share:
            if image < 0 and direct is not None and weights is not None:  # direct outputs
                calls.Binding(x=x, w=weights, out=y).run(direct.shares[k])
                continue
            if image != current:  # the bands of an image come one after another
                bound.set(x=x[image], y=y[image])
                current = image
            bound.run(plan.steps[k])

    pool.parallel_map(run, [shared] * threads, key=("winograd", spec))
    if guarded() and not all(np.isfinite(f).all() for f in flags):
        raise NonFiniteInput("winograd read a NaN or Inf in its input")
    return y


def work(spec: ConvSpec) -> tuple[int, int, int, int]:
    """``(multiply-adds, transformed values, calls, threads)`` of this method on ``spec``.

    Multiply-adds of the 16 products over whole SIMD vectors of output channels and
    whole runs of tiles (a band's last, shorter run costs about a full one: the
    weights are loaded for it all the same); transformed values are the 16 per tile
    and channel, input and output, counted over whole vectors of channels as the
    transforms run them (21 channels cost 32 lanes' work where vectors hold 16);
    calls are compiled-function calls (per band and block of input channels, an input
    transform and the products' calls).
    """
    lay = layout(spec)
    p = product_plan(spec)
    width = sum(math.ceil((o1 - o0) / p.lanes) * p.lanes for o0, o1 in p.out_blocks)
    runs = sum(math.ceil((r1 - r0) * (s1 - s0) / p.pixels) for r0, r1, s0, s1 in lay.bands)
    macs = spec.batch * runs * p.pixels * 16 * spec.in_channels * width
    groups = output_groups(spec)
    step = lanes(spec)
    vectors = sum(math.ceil((c1 - c0) / step) for c0, c1 in p.in_blocks) + sum(
        math.ceil((g1 - g0) / step) for g0, g1 in (groups or ((0, spec.out_channels),))
    )
    values = spec.batch * lay.tiles * 16 * vectors * step
    if groups is None:
        per_band = 2 + len(p.in_blocks) * (1 + 2 * len(p.out_blocks))
    else:  # one input transform, then each group's products and output transform
        per_band = 2 + len(groups) + 2 * len(p.in_blocks) * len(p.out_blocks)
    return macs, values, spec.batch * len(lay.bands) * per_band, thread_count(spec)


def direct_share(spec: ConvSpec) -> float:
    """The share of the outputs that this method computes directly (no whole pair)."""
    lay = layout(spec)
    (ho, wo), rows, cols = spec.out_hw, len(lay.single_rows), len(lay.single_cols)
    return (rows * wo + (ho - rows) * cols) / max(ho * wo, 1)


def estimate_seconds(spec: ConvSpec, costs: Mapping[str, float]) -> float:
    """Modelled time: the 16 products at the tiles' rate, the transforms, the weights'
    transform, and ``blocked``'s share for the outputs computed directly."""
    macs, values, calls, threads = work(spec)
    half = 1 if spec.dtype.itemsize < 8 else 0.5
    rate = costs["blocked"] * half * threads
    seconds = macs / rate + values / (costs["winograd_transform"] * half * threads)
    seconds += 16 * spec.in_channels * spec.out_channels / costs["winograd_weights"]
    share = direct_share(spec)
    if share:  # blocked's tiles on those outputs (their share of its whole time)
        seconds += costs["blocked_call"] + share * (
            blocked.estimate_seconds(spec, costs) - costs["call"]
        )
    return costs["call"] + costs["blocked_call"] + seconds + calls * costs["tap"] / threads

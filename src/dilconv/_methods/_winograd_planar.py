"""``winograd`` on NCHW arrays with vectors of tiles: nothing transposed, nothing staged.

The transforms of :mod:`~dilconv._native.winograd_planar` read each input channel's
rows and write each output channel's rows in place, a SIMD vector holding tiles
along a row. ``V`` and ``M`` are then planes ``(16 positions, channels, tiles)``,
and the 16 products ``M[p] = U[p]^T V[p]`` run on ``blocked``'s register-blocked
tile loop with its roles turned around: its "pixels" are output channels (a
broadcast value of ``U``), its vectors run along tiles of ``V``, and its rows are
the pairs (position, 64 tiles), each with its own offset into ``V`` and ``M``. The
weights are :func:`~dilconv._methods._winograd_products.transform_weights`' values
laid out as ``(16, C, O)``, so the result is the NHWC route's bit for bit.

A band is whole rows of tiles, or part of one row where a row has more tiles than
a band holds (:func:`band_tiles`); outputs no whole tile covers are computed after
every band as on the staged route
(:func:`~dilconv._methods._winograd_nchw_edges.direct_calls`).

Against the staged route (:mod:`~dilconv._methods._winograd_nchw`), 2 threads,
in one process, call by call (NOTES): 64 channels of 256x256 at d = 1 / 8 / 16,
14.3 / 14.1 / 13.6 ms against 20.4 / 18.9 / 18.1, where the NHWC call took 14.7 /
13.8 / 13.5; ``wave`` (8 x 64 channels of 128x128) 25.5 against 35.9 (NHWC 26.8).
Past 128 output channels, and where ``d`` leaves lanes idle and the channels are
many, staging pays better (:func:`pays`).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from dilconv._methods import blocked, winograd
from dilconv._methods._winograd_nchw_edges import direct_calls, run_call, table
from dilconv._methods._winograd_products import (
    block_channels,
    lanes,
    product_plan,
    transform_weights,
)
from dilconv._native import calls, kernels, last_level_cache
from dilconv._native.sequence import Sequence
from dilconv._native.winograd_planar import COLUMN_FIELDS, ROW_FIELDS, lane_offsets, output_sources
from dilconv._spec import ConvSpec

#: Fewest tiles of a band in a core's own cache; with fewer (128 channels and more),
#: bands of :data:`~dilconv._methods.winograd.BAND_BYTES`, as on the NHWC route.
CORE_TILES = 96

#: Vectors of tiles per tile of the products (each with ``product_plan``'s pixels of
#: output channels).
PRODUCT_VECTORS = 4


#: Multiply-adds of the products that take as long as staging one value on the staged
#: route (:mod:`~dilconv._methods._winograd_nchw`), for :func:`pays`. The staged
#: route cost 0.65 ns a value moved on 64 channels of 256x256 beside the NHWC route,
#: whose products ran at 70 GMAC/s (46 multiply-adds); 80 also puts on the side each
#: route measured faster (NOTES): 64 channels of 63x65 at d = 5 (a lane in three
#: idle) planar, 500 -> 64 channels of 40x40 and 128 -> 256 of 96x96 at d = 6 staged.
MOVE_MACS = 80


#: Most output channels the route takes. Its ``M`` holds every output channel of a
#: band, summed again for each block of input channels; with 256 outputs that outgrew
#: a core's cache (the NHWC route splits them into groups): 256 channels of 64x64 at
#: d = 5 took 1.47x the NHWC call, against 1.34x staged (NOTES).
MOST_OUTPUTS = 128


def lane_share(spec: ConvSpec) -> float:
    """Tiles per lane of the vectors of a row of tiles (1: no lane idle); 0 where no
    whole tile fits."""
    if not len(winograd.whole_pairs(spec.out_hw[0], spec.dilation[0])[0]):
        return 0.0
    count = len(row_vectors(spec))
    tiles = len(winograd.whole_pairs(spec.out_hw[1], spec.dilation[1])[0])
    return tiles / (count * lanes(spec)) if count else 0.0


@functools.lru_cache(maxsize=256)
def pays(spec: ConvSpec) -> bool:
    """Whether vectors of tiles beat staging rows for the lowered ``spec`` (NCHW): at
    most :data:`MOST_OUTPUTS` output channels, and the products of the lanes left
    idle (:func:`lane_share`) cost less than moving each tile's 4 input values of
    each input channel and 4 outputs of each output channel through the cache
    (:data:`MOVE_MACS` multiply-adds a value). Remembered: every NCHW call asks.

    >>> from dilconv._spec import make_spec
    >>> def spec(c, o, width, d):
    ...     return make_spec((1, c, 64, width), (o, c, 3, 3), dilation=d, padding="same",
    ...                      dtypes=[np.float32]).lowered()
    >>> pays(spec(64, 64, 256, 1)), pays(spec(500, 64, 40, 1))
    (True, False)
    """
    share = lane_share(spec)
    if share == 0.0 or spec.out_channels > MOST_OUTPUTS:
        return False
    c, o = spec.in_channels, spec.out_channels
    return (1 / share - 1) * 16 * c * o < 4 * (c + o) * MOVE_MACS


def spread(spec: ConvSpec) -> int:
    """The column dilation where it is below the lane count, else 0 (see
    :mod:`~dilconv._native.winograd_planar`)."""
    d = spec.dilation[1]
    return d if d < lanes(spec) else 0


def _bits(flags: np.ndarray) -> int:
    """The integer whose bit ``k`` is ``flags[k]``."""
    return int(np.sum(flags.astype(np.int64) << np.arange(len(flags), dtype=np.int64)))


@functools.lru_cache(maxsize=64)
def row_vectors(spec: ConvSpec) -> np.ndarray:
    """The vectors of tiles of one row of tiles, as ``(count, COLUMN_FIELDS)`` entries
    with the row's first tile at 0
    (:data:`~dilconv._native.winograd_planar.COLUMN_FIELDS`)."""
    wd, wo, d, left = spec.in_hw[1], spec.out_hw[1], spec.dilation[1], spec.pad[1][0]
    width, s = lanes(spec), spread(spec)
    xs, _ = winograd.whole_pairs(wo, d)
    held_x = np.zeros(wo + 2 * width, dtype=bool)  # a vector's lanes lie within 2 width
    held_x[xs] = True
    k = np.arange(width, dtype=np.int64)
    offsets = np.array(lane_offsets(width, s), dtype=np.int64)
    used = k < (width // s * s if s else width)
    starts: list[tuple[int, np.ndarray]] = []  # (first column, lanes holding a tile)
    if s:
        for x0 in range(0, wo, 2 * d * (width // s)):
            starts.append((x0, used & held_x[x0 + offsets]))
    else:
        for group in range(0, wo, 2 * d):
            for x0 in range(group, min(group + d, wo), width):
                starts.append((x0, (x0 + k < group + d) & held_x[x0 + k]))
    entries: list[list[int]] = []
    for x0, held in starts:
        if not held.any():
            continue
        in_col = x0 - left
        windows = [in_col + d * b + k for b in range(4)]
        lo = [_bits((c >= 0) & (c < wd)) for c in windows]
        hi = [_bits((c + width >= 0) & (c + width < wd)) if s else 0 for c in windows]
        out_lo = out_hi = 0
        if s:
            sources = np.array(output_sources(width, s), dtype=np.int64)
            m = np.arange(2 * width)
            stored = (m // (2 * s) < width // s) & held[sources % width]
            out_lo, out_hi = _bits(stored[:width]), _bits(stored[width:])
        slot = len(entries) * width
        entries.append([in_col, x0, slot, _bits(held), *lo, *hi, out_lo, out_hi])
    return table(np.array(entries, dtype=np.int64).reshape(-1, COLUMN_FIELDS))


def streams(spec: ConvSpec) -> bool:
    """Whether the output transform stores past the caches: where input and output
    together outgrow the last-level cache
    (:func:`~dilconv._native.last_level_cache.call_outgrows`)."""
    return last_level_cache.call_outgrows(spec)


@dataclasses.dataclass(frozen=True)
class Band:
    """Tile rows ``[r0, r1)`` and, of each, the vectors ``[v0, v1)``."""

    r0: int
    r1: int
    v0: int
    v1: int

    @property
    def plane(self) -> int:
        """Tiles (lanes) per channel in ``V`` and ``M``."""
        return (self.r1 - self.r0) * (self.v1 - self.v0)


def band_tiles(spec: ConvSpec) -> int:
    """Most tiles of a band: as many as fit :data:`~dilconv._methods.winograd.CORE_SHARE`
    of a core's own cache with their ``V`` and ``M``, the input rows they read and
    the output rows they write, beside the block of ``U`` (at least one vector)."""
    size, cb, o = spec.dtype.itemsize, block_channels(spec), spec.out_channels
    per_tile = (16 * (cb + o) + 8 * cb + 4 * o) * size
    u_block = 16 * cb * o * size
    room = winograd.CORE_SHARE * last_level_cache.core_size() - u_block
    fit = int(room) // per_tile
    if fit < CORE_TILES:
        fit = winograd.BAND_BYTES // (16 * (cb + o) * size)
    return max(lanes(spec), fit)


def bands(spec: ConvSpec) -> list[Band]:
    """Whole rows of tiles, as many as :func:`band_tiles` allows, or parts of one row
    where a row holds more."""
    width = lanes(spec)
    rows = len(winograd.whole_pairs(spec.out_hw[0], spec.dilation[0])[0])
    count = len(row_vectors(spec))
    fit = max(1, band_tiles(spec) // width)  # vectors per band
    if count <= fit:
        per = max(1, fit // max(count, 1))
        return [Band(r, min(rows, r + per), 0, count) for r in range(0, rows, per)]
    parts = math.ceil(count / fit)
    step = math.ceil(count / parts)
    return [
        Band(r, r + 1, v, min(count, v + step)) for r in range(rows) for v in range(0, count, step)
    ]


#: Bytes between the end of one position's planes in ``V`` or ``M`` and the next
#: position's: without them the 16 vectors a transform writes (or reads) for one
#: channel lie a power of two apart and share one set of the L1 cache.
SKEW_BYTES = 64


def position(spec: ConvSpec, channels: int, plane: int) -> int:
    """Elements between the 16 positions of ``V`` or ``M``: ``channels`` planes of
    ``plane`` tiles, then :data:`SKEW_BYTES`."""
    return channels * plane + SKEW_BYTES // spec.dtype.itemsize


def _product_calls(spec: ConvSpec, plane: int, cb: int, first: bool, c0: int) -> list[calls.Call]:
    """The tile-loop calls of a band's products for input channels ``[c0, c0 + cb)``:
    ``plane`` tiles, all 16 positions, every output channel."""
    width, o, c = lanes(spec), spec.out_channels, spec.in_channels
    pixels = product_plan(spec).pixels
    vectors = plane // width
    v_at, m_at = position(spec, cb, plane), position(spec, o, plane)
    result = []
    for v_count, starts in _pixel_runs(vectors, PRODUCT_VECTORS):
        rows = np.array(
            [
                [q * c * o, q * m_at + t * width, 0, 1, q * v_at + t * width]
                for q in range(16)
                for t in starts
            ],
            dtype=np.int64,
        )
        for size, firsts in _pixel_runs(o, pixels):
            columns = np.array([[o0, o0 * plane, 0, 1] for o0 in firsts], dtype=np.int64)
            kernel = kernels.tiles(spec.dtype, size, v_count, width, 0, not first)
            result.append(
                kernel.call(
                    x=calls.Slot("U", c0 * o),
                    w=calls.Slot("V"),
                    out=calls.Slot("M"),
                    rows=calls.Ref(table(rows)),
                    n_rows=len(rows),
                    columns=calls.Ref(table(columns)),
                    n_columns=len(columns),
                    channels=cb,
                    w_row=0,
                    w_col=0,
                    w_channel=plane,
                    x_channel=o,
                    x_pixel=1,
                    x_tap_row=0,
                    x_tap_col=0,
                    out_pixel=plane,
                )
            )
    return result


def _pixel_runs(outputs: int, pixels: int) -> list[tuple[int, list[int]]]:
    """``(size, firsts)``: tiles of ``pixels`` of ``outputs`` (output channels, or
    vectors of tiles), then one of the rest.

    >>> _pixel_runs(14, 6)
    [(6, [0, 6]), (2, [12])]
    """
    whole = outputs // pixels * pixels
    runs = [(pixels, list(range(0, whole, pixels)))] if whole else []
    return runs + [(outputs - whole, [whole])] * (outputs > whole)


@dataclasses.dataclass(frozen=True)
class Plan:
    """One tuple of calls per band (slots ``x``, ``y``, ``U``, ``V``, ``M``,
    ``flags``) and the largest plane."""

    steps: tuple[tuple[calls.Call, ...], ...]
    plane: int


def _transform(
    kernel: calls.Kernel,
    spec: ConvSpec,
    band: tuple[np.ndarray, np.ndarray, int],
    source: calls.Slot,
    target: calls.Slot,
    count: int,
    stride: int,
) -> calls.Call:
    """A band's call of a transform ``kernel`` over ``count`` channels ``stride`` apart
    in the image; ``band``: its row and column tables and its plane."""
    rows, columns, plane = band
    return kernel.call(
        source=source,
        target=target,
        flags=calls.Slot("flags"),
        rows=calls.Ref(rows),
        n_rows=len(rows),
        columns=calls.Ref(columns),
        n_columns=len(columns),
        channels=count,
        channel=stride,
        plane=plane,
        position=position(spec, count, plane),
        dilation=spec.dilation[1],
    )


@functools.lru_cache(maxsize=64)
def plan(spec: ConvSpec) -> Plan:
    """The :class:`Plan` of ``spec`` (remembered: the same for every call)."""
    (h, wd), (ho, wo) = spec.in_hw, spec.out_hw
    dh, top = spec.dilation[0], spec.pad[0][0]
    width, s, o = lanes(spec), spread(spec), spec.out_channels
    ys, _ = winograd.whole_pairs(ho, dh)
    vectors = row_vectors(spec)
    forward = kernels.planar_transform(spec.dtype, width, s, "input")
    backward = kernels.planar_transform(spec.dtype, width, s, "output", streams(spec))
    steps = []
    every = bands(spec)
    for band in every:
        plane, per_row = band.plane * width, (band.v1 - band.v0) * width
        columns = vectors[band.v0 : band.v1].copy()
        columns[:, 2] -= band.v0 * width
        rows = []
        for k, y0 in enumerate(ys[band.r0 : band.r1]):
            ins = [(y0 - top + dh * a) for a in range(4)]
            rows.append(
                [r * wd if 0 <= r < h else -1 for r in ins]
                + [int(y0) * wo, (int(y0) + dh) * wo, k * per_row]
            )
        band_tables = (table(np.array(rows).reshape(-1, ROW_FIELDS)), table(columns), plane)
        step: list[calls.Call] = []
        for i, (c0, c1) in enumerate(product_plan(spec).in_blocks):
            cb = c1 - c0
            x_at = calls.Slot("x", c0 * h * wd)
            step.append(_transform(forward, spec, band_tables, x_at, calls.Slot("V"), cb, h * wd))
            step.extend(_product_calls(spec, plane, cb, i == 0, c0))
        step.append(
            _transform(backward, spec, band_tables, calls.Slot("M"), calls.Slot("y"), o, ho * wo)
        )
        steps.append(Sequence(step))
    largest = max((b.plane for b in every), default=0) * width
    return Plan(tuple(steps), largest)


def planar_weights(
    w: np.ndarray, spec: ConvSpec, taps: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """``U`` as ``(16, C, O)`` (the tile loop's "input"), and with ``taps`` ``blocked``'s
    packing of ``w`` (for the outputs no whole tile covers)."""
    p = product_plan(spec)
    packed, weights = transform_weights(w, spec, p, taps=taps)
    blocks = [packed[k, :, :, : o1 - o0] for k, (o0, o1) in enumerate(p.out_blocks)]
    u = np.concatenate(blocks, axis=-1)
    return np.ascontiguousarray(u), weights


def conv_channels_first(x: np.ndarray, w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Correlate NCHW ``x`` with HWIO ``w`` (3x3, stride 1) by Winograd into a new
    NCHW array, with vectors of tiles; ``spec`` is the call's lowered spec."""
    reason = winograd.refusal(spec) or winograd._unavailable()
    if reason is not None:
        raise ValueError(f"method='winograd' cannot compute this call: {reason}")
    n, (ho, wo), o = spec.batch, spec.out_hw, spec.out_channels
    y, complete = blocked.result_array((n, o, ho, wo), spec)
    if complete:
        return y
    x = np.ascontiguousarray(x, dtype=spec.dtype)
    direct = direct_calls(spec, winograd.thread_count(spec))
    u, weights = planar_weights(w, spec, taps=direct is not None)
    steps = plan(spec)
    cb = max(c1 - c0 for c0, c1 in product_plan(spec).in_blocks)

    def arrays() -> dict[str, np.ndarray]:
        return {
            "U": u,
            "V": calls.aligned_empty(16 * position(spec, cb, steps.plane), spec.dtype),
            "M": calls.aligned_empty(16 * position(spec, o, steps.plane), spec.dtype),
            "flags": np.zeros(lanes(spec), dtype=spec.dtype),
        }

    run_call(x, y, steps.steps, arrays, spec, direct, weights, "winograd planar")
    return y

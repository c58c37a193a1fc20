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
so a band of tiles has room for more tiles when there are many channels.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from dilconv import _layout
from dilconv._methods import blocked
from dilconv._native import calls, kernels, pool, tile_kernel
from dilconv._native import results as _results
from dilconv._spec import ConvSpec

#: The weight transform matrix of F(2x2, 3x3) (Lavin & Gray, eq. 9).
G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def lanes(spec: ConvSpec) -> int:
    """Values per SIMD register for ``spec.dtype`` on this CPU (the transforms' vectors)."""
    return tile_kernel.host_lanes()["bytes"] // spec.dtype.itemsize


def transform_weights(w: np.ndarray, spec: ConvSpec, p: blocked.Plan) -> np.ndarray:
    """``U = G w G^T`` packed for the tile loop: ``(out blocks, 16, C, vectors * lanes)``.

    Compiled (:mod:`~dilconv._native.winograd_weights`): each weight is read once
    and each packed value written once, the sums in float64 rounded once to
    ``spec.dtype``, the output channels zero-padded to whole vectors. The blocks of
    input channels (``p.in_blocks``) are shared among threads. A large packing
    (``aspp``: 32 MiB) reuses memory an earlier call let go of
    (:func:`dilconv._native.results.new_result`): on fresh pages the transform
    took 3.5 ms there, 1.8 ms on reused ones.
    """
    c, width = spec.in_channels, p.vectors * p.lanes
    w = np.asarray(w, dtype=spec.dtype)
    by_channel = _layout.channel_major(w)
    if by_channel:  # NCHW weights as the compiled transpose left them: (C, 3, 3, O)
        w = w.transpose(2, 0, 1, 3)
    w = np.ascontiguousarray(w)
    packed = _results.new_result((len(p.out_blocks), 16, c, width), spec.dtype)
    for k, (o0, o1) in enumerate(p.out_blocks):
        filled = math.ceil((o1 - o0) / p.lanes) * p.lanes
        packed[k, :, :, filled:] = 0  # vectors past the block's channels
    bound = calls.Binding(w=w.reshape(-1), U=packed)
    shares = weight_calls(spec, p, by_channel)
    pool.parallel_map(bound.run, shares, key=("winograd weights", spec, by_channel))
    return packed


@functools.lru_cache(maxsize=128)
def weight_calls(
    spec: ConvSpec, p: blocked.Plan, by_channel: bool = False
) -> tuple[tuple[calls.Call, ...], ...]:
    """The weight transform's calls, one tuple per block of input channels (shared
    among threads), with slots ``w`` (the weights, flat: HWIO, or ``(C, 3, 3, O)``
    where ``by_channel``) and ``U`` (the packing)."""
    c, o, width = spec.in_channels, spec.out_channels, p.vectors * p.lanes
    w_tap, w_channel = (o, 9 * o) if by_channel else (c * o, o)
    shares = []
    for c0, c1 in p.in_blocks:
        share = []
        for k, (o0, o1) in enumerate(p.out_blocks):
            whole, tail = divmod(o1 - o0, p.lanes)
            kernel = kernels.weights(spec.dtype, p.lanes, tail)
            share.append(
                kernel.call(
                    w=calls.Slot("w", c0 * w_channel + o0),
                    packed=calls.Slot("U", (k * 16 * c + c0) * width),
                    channels=c1 - c0,
                    w_tap=w_tap,
                    w_channel=w_channel,
                    u_position=c * width,
                    u_channel=width,
                    vectors=whole,
                )
            )
        shares.append(tuple(share))
    return tuple(shares)


@functools.lru_cache(maxsize=128)
def product_plan(spec: ConvSpec) -> blocked.Plan:
    """The tile loop's blocking for the 16 products: output channels as in ``blocked``,
    input channels in blocks whose 16 packed weight matrices stay in cache."""
    p = blocked.plan(spec)
    per_channel = 16 * p.vectors * p.lanes * spec.dtype.itemsize
    c, width = spec.in_channels, lanes(spec)
    count = max(1, math.ceil(c * per_channel / blocked.WEIGHT_BLOCK_BYTES))
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
    """
    p = product_plan(spec)
    c, o = spec.in_channels, spec.out_channels
    width = p.vectors * p.lanes
    g0, g1 = (0, o) if group is None else group
    blocks: list[tuple[calls.Call, ...]] = []
    for i, (c0, c1) in enumerate(p.in_blocks):
        v_stride, v_at = (c1 - c0, 0) if group is None else (c, c0)
        rows, runs = _product_tables(tiles, v_stride, c, g1 - g0, width, p.pixels)
        block: list[calls.Call] = []
        for pixels, columns in runs:
            for b, (o0, o1) in enumerate(p.out_blocks):
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
                        rows=calls.Ref(rows),
                        n_rows=16,
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


def packed_bytes(spec: ConvSpec) -> int:
    """Bytes of the packed transformed weights (:func:`transform_weights`)."""
    p = product_plan(spec)
    return len(p.out_blocks) * 16 * spec.in_channels * p.vectors * p.lanes * spec.dtype.itemsize

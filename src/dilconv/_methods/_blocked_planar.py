"""``blocked`` on the caller's NCHW arrays: tiles of a row's pixels, read and written in place.

A PyTorch-layout call would otherwise pay two transposed copies around the NHWC
tile loop (a third more time on the context module's 21 channels). Here the
tile loop of :mod:`~dilconv._native.planar_kernel` runs on the NCHW arrays
themselves: SIMD vectors along an output row, each tile's inputs one contiguous
run of an input row per tap and channel, the weights broadcast one output
channel at a time. The rows, the column runs that read the same kernel columns,
the thread shares and the input-channel blocks are ``blocked``'s
(:func:`~dilconv._methods.blocked.layout`, :func:`~dilconv._methods.blocked.column_tables`),
with NCHW offsets. Stride 1 along rows only (the runs must be contiguous).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from dilconv._methods import _blocked_bands, blocked
from dilconv._native import calls, kernels, pool, tile_kernel
from dilconv._native.sequence import Sequence
from dilconv._spec import ConvSpec

#: Most output channels per tile (with one vector of pixels and 32 registers).
MAX_OUTS = 28


@dataclasses.dataclass(frozen=True)
class PlanarPlan:
    """SIMD width, vectors of pixels per tile, output channel blocks, channel blocks."""

    lanes: int
    vectors: int
    out_blocks: tuple[tuple[int, int], ...]  # [o0, o1) within a group
    outs: int  # the widest block: the packed weights' width
    in_blocks: tuple[tuple[int, int], ...]  # [c0, c1) within a group


def refusal(spec: ConvSpec) -> str | None:
    """Why the planar loop cannot run the lowered ``spec``, or None."""
    if spec.stride[1] != 1:
        return f"it reads contiguous rows (stride 1 along them), not stride {spec.stride[1]}"
    return blocked.refusal(spec)


def planar_fits(spec: ConvSpec) -> bool:
    """Whether the planar loop runs ``spec`` (NCHW): it can, and one pass holds every
    output channel of a group. Otherwise ``blocked``'s own tile loop does, band by
    band (:mod:`~dilconv._methods._blocked_bands`), reading the input once whatever
    the channel count."""
    return refusal(spec) is None and one_pass(spec)


@functools.lru_cache(maxsize=256)
def plan(spec: ConvSpec) -> PlanarPlan:
    """The blocking of ``spec`` on this CPU (see :class:`PlanarPlan`)."""
    host = tile_kernel.host_lanes()
    lanes = host["bytes"] // spec.dtype.itemsize
    og, cg = spec.out_per_group, spec.in_per_group
    # two vectors of pixels per tile where a row is that wide and the output
    # channels still fit in one pass, else one vector and twice the channels (every
    # further pass reads the input again)
    registers = host["registers"]
    vectors = 2 if spec.out_hw[1] >= 2 * lanes and og <= (registers - 4) // 2 else 1
    most = min(MAX_OUTS, (registers - vectors - 2) // vectors)
    count = math.ceil(og / most)
    outs = math.ceil(og / count)
    out_blocks = tuple((o0, min(og, o0 + outs)) for o0 in range(0, og, outs))
    taps = spec.kernel_hw[0] * spec.kernel_hw[1]
    blocks = math.ceil(cg * taps * outs * spec.dtype.itemsize / blocked.WEIGHT_BLOCK_BYTES)
    step = math.ceil(cg / blocks)
    in_blocks = tuple((c0, min(cg, c0 + step)) for c0 in range(0, cg, step))
    return PlanarPlan(lanes, vectors, out_blocks, outs, in_blocks)


def one_pass(spec: ConvSpec) -> bool:
    """Whether one tile holds every output channel of a group (the input is read once)."""
    return len(plan(spec).out_blocks) == 1


def pack_weights(w: np.ndarray, spec: ConvSpec, p: PlanarPlan) -> np.ndarray:
    """HWIO ``w`` as ``(groups, out blocks, taps, C/groups, outs)``, zero-padded."""
    kh, kw = spec.kernel_hw
    cg, og = spec.in_per_group, spec.out_per_group
    packed = np.zeros((spec.groups, len(p.out_blocks), kh * kw, cg, p.outs), dtype=spec.dtype)
    taps = w.reshape(kh * kw, cg, spec.groups, og)
    for b, (o0, o1) in enumerate(p.out_blocks):
        packed[:, b, :, :, : o1 - o0] = taps[..., o0:o1].transpose(2, 0, 1, 3)
    return packed


@functools.lru_cache(maxsize=128)
def tile_calls(spec: ConvSpec, threads: int) -> tuple[tuple[calls.Call, ...], ...]:
    """Each thread's calls of the planar loop, with slots ``x`` (NCHW input), ``w``
    (:func:`pack_weights`) and ``out`` (NCHW output); remembered per spec."""
    p = plan(spec)
    rows = blocked.layout(spec, channels_first=True).rows
    columns = blocked.column_tables(spec, p.vectors * p.lanes, channels_first=True)
    (h, wd), (ho, wo) = spec.in_hw, spec.out_hw
    cg, og = spec.in_per_group, spec.out_per_group
    (dh, dw), (kh, kw) = spec.dilation, spec.kernel_hw
    block = kh * kw * cg * p.outs  # elements of one (group, output block) of the packing
    shares = []
    for part, tables in blocked.thread_parts(rows, columns, threads):
        share = []
        for width, table in tables if len(part) else ():
            if not len(table):
                continue
            vectors, tail = math.ceil(width / p.lanes), width % p.lanes
            for g in range(spec.groups):
                for b, (o0, o1) in enumerate(p.out_blocks):
                    for i, (c0, c1) in enumerate(p.in_blocks):
                        kernel = kernels.planar(spec.dtype, p.lanes, vectors, tail, o1 - o0, i > 0)
                        share.append(
                            kernel.call(
                                x=calls.Slot("x", (g * cg + c0) * h * wd),
                                w=calls.Slot(
                                    "w", (g * len(p.out_blocks) + b) * block + c0 * p.outs
                                ),
                                out=calls.Slot("out", (g * og + o0) * ho * wo),
                                rows=calls.Ref(np.ascontiguousarray(part)),
                                n_rows=len(part),
                                columns=calls.Ref(table),
                                n_columns=len(table),
                                channels=c1 - c0,
                                w_row=kw * cg * p.outs,
                                w_col=cg * p.outs,
                                w_channel=p.outs,
                                x_channel=h * wd,
                                x_tap_row=dh * wd,
                                x_tap_col=dw,
                                out_channel=ho * wo,
                            )
                        )
        shares.append(Sequence(share))
    return tuple(shares)


def conv_channels_first(x: np.ndarray, w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Correlate NCHW ``x`` with HWIO ``w`` into a new NCHW array, neither transposed.

    ``spec`` is the call's lowered (NHWC) spec; ``blocked.refusal`` must be None.
    The planar loop runs it where :func:`planar_fits`, else ``blocked``'s tile loop
    by bands of rows (:mod:`~dilconv._methods._blocked_bands`, any stride).
    """
    reason = blocked.refusal(spec) or blocked._unavailable()
    if reason is not None:
        raise ValueError(f"method='blocked' cannot compute this call in NCHW: {reason}")
    n, (ho, wo), o = spec.batch, spec.out_hw, spec.out_channels
    y, complete = blocked.result_array((n, o, ho, wo), spec)
    if complete:
        return y
    x = np.ascontiguousarray(x, dtype=spec.dtype)
    threads = blocked.thread_count(spec)
    if not planar_fits(spec):
        _blocked_bands.conv(x, w, y, spec, threads)
        return y
    packed = pack_weights(np.asarray(w, dtype=spec.dtype), spec, plan(spec))
    bound = calls.Binding(x=x, w=packed, out=y)
    pool.parallel_map(bound.run, tile_calls(spec, threads), key=("blocked NCHW", spec))
    return y

"""``blocked`` over volumes: every depth tap in one tile loop, added in cache.

The 3-D engine (:mod:`dilconv._engine_nd`) runs a volume as one 2-D call per depth
tap on a stack of planes, then adds each result into the output: for 3x3x3 on
``(1, 32, 64, 64, 64)`` two of the three results are added in extra passes over
32 MiB, a fifth of the call. Here the tile loop's row table, which already carries
a weight offset per row, lists each output row once per depth tap that reads real
planes (that plane's input row, that tap's packed weights), the taps of one row
next to each other, the first of them starting from zero and the others adding to
the output: a tile's sums go back to the output between its depth taps while the
output is still in cache, and nothing else moves (no zeroed result either: filling
a 32 MiB result with zeros took 0.9 ms of a 33 ms call). The threads split the
output rows, never one row's taps.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from dilconv._methods import blocked
from dilconv._native import calls, pool
from dilconv._native import results as _results
from dilconv._spec import ConvSpec

#: ``(kd, first, stop, start)`` per depth tap that reads real planes: outputs
#: ``[first, stop)`` read input planes ``start, start + stride, ...``.
DepthTaps = tuple[tuple[int, int, int, int], ...]


def packed_size(plane: ConvSpec) -> int:
    """Elements of one depth tap's packed weights (:func:`blocked.pack_weights`)."""
    return blocked.packed_bytes(plane) // plane.dtype.itemsize


@functools.lru_cache(maxsize=64)
def volume_calls(
    plane: ConvSpec, batch: int, depth: tuple[int, int, int], taps: DepthTaps, threads: int
) -> blocked.TileCalls:
    """Each thread's calls over ``batch`` volumes (remembered per problem).

    ``plane``: the 2-D spec of one plane (batch 1); ``depth``: input and output
    planes and the depth stride; ``taps``: as :data:`DepthTaps`.
    """
    in_depth, out_depth, stride = depth
    lay = blocked.layout(plane)
    (h, wd), (ho, wo) = plane.in_hw, plane.out_hw
    x_plane, out_plane = h * wd * plane.in_channels, ho * wo * plane.out_channels
    weights = packed_size(plane)
    per_output: list[list[tuple[int, int]]] = [[] for _ in range(out_depth)]
    for kd, first, stop, start in taps:
        for od in range(first, stop):
            per_output[od].append((kd, start + (od - first) * stride))
    blocks, row_ids = [], []
    for n in range(batch):
        for od, live in enumerate(per_output):
            if not live:
                continue  # every tap reads padding: the zeros stay
            block = np.repeat(lay.rows[None], len(live), axis=0)  # (taps, ho, fields)
            for k, (kd, plane_in) in enumerate(live):
                block[k, :, 0] += (n * in_depth + plane_in) * x_plane
                block[k, :, 1] += (n * out_depth + od) * out_plane
                block[k, :, 4] = kd * weights if k else -1 - kd * weights  # first: afresh
            blocks.append(block.transpose(1, 0, 2).reshape(-1, block.shape[2]))
            row_ids.append(np.repeat(np.arange(ho) + (n * out_depth + od) * ho, len(live)))
    if not blocks:
        return blocked.TileCalls(())
    rows, ids = np.concatenate(blocks), np.concatenate(row_ids)
    # cut where an output row starts, nearest to equal shares
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    cuts = [0]
    for k in range(1, threads):
        nearest = int(np.searchsorted(starts, len(rows) * k // threads))
        at = int(starts[min(len(starts) - 1, nearest)])
        if at > cuts[-1]:
            cuts.append(at)
    cuts.append(len(rows))
    shares = []
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        part = np.ascontiguousarray(rows[a:b])
        part.flags.writeable = False
        shares.append(blocked.region_calls(plane, part, lay.columns, 1, accumulate=True).shares[0])
    return blocked.TileCalls(tuple(shares))


def agree_volume(
    x: np.ndarray, w: np.ndarray, plane: ConvSpec, depth: tuple[int, int], taps: DepthTaps
) -> None:
    """Raise ``ValueError`` unless the planes of ``x`` and ``w`` are ``plane``'s and
    every depth tap reads a plane and a weight that exist (the tile loop reads them
    by address)."""
    from dilconv._methods import agree

    if x.ndim != 5 or w.ndim != 5:
        raise ValueError(f"x and w: 5 axes expected, got shapes {x.shape} and {w.shape}")
    agree(x[:1, 0], w[0], plane)
    out_depth, stride = depth
    for kd, first, stop, start in taps:
        last = start + (stop - first - 1) * stride
        if not (0 <= kd < w.shape[0] and 0 <= first <= stop <= out_depth):
            raise ValueError(f"depth tap {kd} for outputs [{first}, {stop}): outside {w.shape}")
        if stop > first and not (0 <= start and last < x.shape[1]):
            raise ValueError(
                f"depth tap {kd} reads planes {start}..{last}, x has {x.shape[1]} planes"
            )


def conv(
    x: np.ndarray,
    w: np.ndarray,
    plane: ConvSpec,
    depth: tuple[int, int],
    taps: DepthTaps,
    threads: int,
) -> np.ndarray:
    """Correlate ``(N, D, H, W, C)`` ``x`` with ``(kd, kh, kw, C/groups, O)`` ``w`` over
    the depth ``taps`` into a new ``(N, Do, Ho, Wo, O)`` array.

    ``plane`` is the 2-D spec of one plane (batch 1, NHWC, zero padding in H and W),
    ``blocked.refusal(plane)`` None; ``depth``: output planes and the depth stride.
    """
    out_depth, stride = depth
    reason = blocked.refusal(plane) or blocked._unavailable()
    if reason is not None:
        raise ValueError(f"method='blocked' cannot compute this call: {reason}")
    agree_volume(x, w, plane, depth, taps)
    n, in_depth = x.shape[0], x.shape[1]
    shape = (n, out_depth, *plane.out_hw, plane.out_channels)
    if math.prod(shape) == 0 or plane.in_channels == 0 or not taps:
        return np.zeros(shape, dtype=plane.dtype)
    y = _results.new_result(shape, plane.dtype)
    for od in range(out_depth):  # planes every depth tap of which reads padding
        if not any(first <= od < stop for _, first, stop, _ in taps):
            y[:, od] = 0
    x = np.ascontiguousarray(x, dtype=plane.dtype)
    p = blocked.plan(plane)
    packed = np.concatenate(
        [
            blocked.pack_weights(np.asarray(w[kd], plane.dtype), plane, p).reshape(-1)
            for kd in range(w.shape[0])
        ]  # fmt: skip
    )
    shares = volume_calls(plane, n, (in_depth, out_depth, stride), taps, threads).shares
    bound = calls.Binding(x=x, w=packed, out=y)
    pool.parallel_map(bound.run, shares, key=("blocked volume", plane))
    return y

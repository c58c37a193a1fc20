"""``winograd`` over volumes: the depth taps' planes as one image's channels.

The 3-D engine (:mod:`dilconv._engine_nd`) otherwise runs a volume as one 2-D call per
depth tap and adds the results: on a 3x3x3 layer of 32 channels over ``64^3`` voxels
(d = 2, 2 vCPUs) Winograd so took 86 ms, each tap paying the output transform and
a pass over the result, against 44-47 ms for ``blocked``, whose tile loop runs every
tap (:mod:`._blocked_volume`).

An output plane is the 2-D correlation of the input planes its ``T`` depth taps read,
side by side as ``T * C`` channels of one image, with the taps' weights side by side
the same way (:func:`stacked_spec`). So this runs the 2-D Winograd of that *stacked*
spec (:func:`dilconv._methods.winograd.band_calls`: its bands, its products, its
output transform) with one change: each block of stacked channels is transformed
from the planes themselves, tap ``j``'s channels from slot ``x{j}`` into their place
in ``V`` (:func:`volume_steps`). Nothing is copied, and the products run over ``T *
C`` channels at once. That layer (2 vCPUs, 2026-12-07, medians of 9 alternating):
35.5, 37.1 and 37.0 ms at d = 1, 2 and 4 against 50.3, 48.8 and 42.6 for
``blocked``; on one thread 63.2 against 93.3. Before each band's calls were one
native call (:mod:`dilconv._native.sequence`) this route took 46-49 ms on two
threads and gained nothing, and adding each tap's products of 32 channels into one
``M`` instead took 70-72 ms.

A plane whose taps read fewer real planes (near the front and back of a volume
padded in depth) binds a plane of zeros to the missing taps' slots.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator

import numpy as np

from dilconv._methods import winograd
from dilconv._methods._blocked_volume import agree_volume
from dilconv._methods._winograd_products import product_calls, product_plan, transform_weights
from dilconv._native import calls, pool
from dilconv._native import results as _results
from dilconv._native.sequence import Sequence
from dilconv._spec import ConvSpec

#: ``(kd, first, stop, start)`` per depth tap that reads real planes: outputs
#: ``[first, stop)`` read input planes ``start, start + stride, ...``.
DepthTaps = tuple[tuple[int, int, int, int], ...]


def stacked_spec(plane: ConvSpec, taps: int) -> ConvSpec:
    """The 2-D spec of ``plane`` with ``taps`` times its input channels: the planes of
    every depth tap that reads real planes, side by side.

    >>> from dilconv._spec import make_spec
    >>> plane = make_spec((4, 8, 8, 32), (3, 3, 32, 16), padding=1, data_format="NHWC")
    >>> stacked_spec(plane.lowered(), 3).in_channels
    96
    """
    return dataclasses.replace(plane, in_channels=plane.in_channels * taps)


def refusal(plane: ConvSpec, taps: int) -> str | None:
    """Why a volume whose planes are ``plane`` (the 2-D spec of the stack of its output
    planes) and whose ``taps`` depth taps read real planes has no whole-volume route,
    or None: fewer than two taps; what ``winograd`` declines on the stacked spec;
    output channels so many that its bands run in groups
    (:func:`~dilconv._methods.winograd.output_groups`); and outputs that no whole tile
    covers (computed directly in 2-D). The engine then runs one 2-D call per tap."""
    if taps < 2:
        return "fewer than two depth taps read real planes"
    stacked = stacked_spec(plane, taps)
    reason = winograd.refusal(stacked)
    if reason is not None:
        return reason
    if winograd.output_groups(stacked) is not None:
        return "its output channels run in groups"
    lay = winograd.layout(stacked)
    if lay.single_rows or lay.single_cols:
        rows, columns = lay.single_rows, lay.single_cols
        return f"outputs of rows {rows} and columns {columns} are no whole tile's"
    return None


def _tap_input_calls(
    plane: ConvSpec,
    band: tuple[int, int, int, int],
    block: tuple[int, int],
    taps: int,
) -> list[calls.Call]:
    """The input transforms of stacked channels ``block`` for ``band``: each tap's part,
    read from slot ``x{j}`` (a plane of ``plane.in_channels``) into its place in ``V``,
    which holds the block's channels per position."""
    lay = winograd.layout(plane)  # its tile grid is the stacked spec's; only the pitch differs
    (c0, c1), c = block, plane.in_channels
    made = []
    for j in range(taps):
        lo, hi = max(c0, j * c), min(c1, (j + 1) * c)
        if lo < hi:
            source = calls.Slot(f"x{j}", lo - j * c)
            made.append(
                winograd._input_call(plane, lay, band, (lo, hi), c1 - c0, source=source, at=lo - c0)
            )
    return made


@functools.lru_cache(maxsize=32)
def volume_steps(plane: ConvSpec, taps: int) -> tuple[Sequence, ...]:
    """Per band of the stacked spec (:func:`stacked_spec`), its calls in order: for
    each block of stacked channels, each tap's input transform then the block's
    products (the first block's storing ``M``), then the output transform. Fixed per
    plane and tap count (remembered)."""
    stacked = stacked_spec(plane, taps)
    lay = winograd.layout(stacked)
    in_blocks = product_plan(stacked).in_blocks
    per_band = []
    for band in lay.bands:
        r0, r1, s0, s1 = band
        steps: list[calls.Call] = []
        products = product_calls(stacked, (r1 - r0) * (s1 - s0))
        for block, block_calls in zip(in_blocks, products, strict=True):
            steps.extend(_tap_input_calls(plane, band, block, taps))
            steps.extend(block_calls)
        steps.append(winograd._output_call(stacked, lay, band, (0, stacked.out_channels)))
        per_band.append(Sequence(steps))
    return tuple(per_band)


def live_taps(out_depth: int, stride: int, taps: DepthTaps) -> list[list[int | None]]:
    """Per output plane, the input plane each of ``taps`` reads, or None (padding).

    >>> live_taps(3, 1, ((0, 1, 3, 0), (1, 0, 3, 0), (2, 0, 2, 1)))
    [[None, 0, 1], [0, 1, 2], [1, 2, None]]
    """
    live: list[list[int | None]] = [[None] * len(taps) for _ in range(out_depth)]
    for j, (_, first, stop, start) in enumerate(taps):
        for od in range(first, stop):
            live[od][j] = start + (od - first) * stride
    return live


def conv(
    x: np.ndarray,
    w: np.ndarray,
    plane: ConvSpec,
    depth: tuple[int, int],
    taps: DepthTaps,
    threads: int,
) -> np.ndarray:
    """Correlate ``(N, D, H, W, C)`` ``x`` with ``(kd, 3, 3, C, O)`` ``w`` over the depth
    ``taps`` into a new ``(N, Do, Ho, Wo, O)`` array.

    ``plane`` is the 2-D spec of the stack of every output plane (batch ``N * Do``,
    NHWC, zero padding in H and W), ``refusal(plane, len(taps))`` None; ``depth``:
    output planes and the depth stride. Under
    :func:`~dilconv._methods.winograd.finite_guard` it raises
    :class:`~dilconv._methods.winograd.NonFiniteInput` as ``winograd.conv`` does.
    """
    out_depth, stride = depth
    count = len(taps)
    reason = refusal(plane, count) or winograd._unavailable()  # the latter loads the code
    if reason is not None:
        raise ValueError(f"method='winograd' cannot compute this call: {reason}")
    agree_volume(x, w, dataclasses.replace(plane, batch=1), depth, taps)
    n, (h, wd), c = x.shape[0], plane.in_hw, plane.in_channels
    if plane.batch != n * out_depth:
        raise ValueError(f"plane: a stack of {n * out_depth} planes expected, got {plane.batch}")
    y = _results.new_result((n, out_depth, *plane.out_hw, plane.out_channels), plane.dtype)
    if y.size == 0 or c == 0:
        y.fill(0)
        return y
    stacked = stacked_spec(plane, count)
    live = live_taps(out_depth, stride, taps)
    x = np.ascontiguousarray(x, dtype=plane.dtype)
    taps_w = np.concatenate([np.asarray(w[kd], plane.dtype) for kd, _, _, _ in taps], axis=2)
    packed, _ = transform_weights(taps_w, stacked, product_plan(stacked))
    plan = winograd.band_calls(stacked)  # the scratch is sized by its bands, as they were made
    steps = volume_steps(plane, count)
    blank = np.zeros((h, wd, c), dtype=plane.dtype) if any(None in p for p in live) else None
    items = [
        (image, od, k)
        for image in range(n)
        for od in range(out_depth)
        if any(p is not None for p in live[od])
        for k in range(len(steps))
    ]
    for od, planes in enumerate(live):
        if all(p is None for p in planes):  # every depth tap reads padding
            y[:, od] = 0
    shared = iter(items)  # taken one at a time by every thread, as in winograd.conv
    lanes = winograd.lanes(plane)
    zeros = np.zeros(math.ceil(stacked.in_channels / lanes) * lanes, dtype=plane.dtype)
    flags: list[np.ndarray] = []  # each thread's (list.append is atomic)

    def run(share: Iterator[tuple[int, int, int]]) -> None:
        bound = calls.Binding(U=packed, zeros=zeros, **winograd.scratch(stacked, plan))
        flags.append(bound.arrays["flags"])
        current = (-1, -1)
        for image, od, k in share:
            if (image, od) != current:  # the bands of a plane come one after another
                planes = {
                    f"x{j}": blank if p is None else x[image, p] for j, p in enumerate(live[od])
                }
                bound.set(y=y[image, od], **planes)  # type: ignore[arg-type]
                current = (image, od)
            bound.run(steps[k])

    pool.parallel_map(run, [shared] * max(1, threads), key=("winograd volume", plane))
    if winograd.guarded() and not all(np.isfinite(f).all() for f in flags):
        raise winograd.NonFiniteInput("winograd read a NaN or Inf in its input")
    return y

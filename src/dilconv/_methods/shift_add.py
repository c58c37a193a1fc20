"""Shift and add: one strided slice per kernel tap, multiplied and accumulated.

No zero is ever inserted: tap ``(i, j)`` reads the input at offset
``(i * dh - top, j * dw - left)`` with step ``stride``, so the cost is the same at
every dilation. Each tap only touches the output pixels where it reads real input
(taps that would read only padding are skipped).

* One input channel per output channel (a single channel, or depthwise): the
  output is built in row strips small enough to stay in cache, each tap a scalar
  (or per-channel) multiply into a reused buffer and an add, with the strips
  shared among threads (NumPy releases the GIL in its loops).
* Otherwise: one matrix product per tap and group on the region that tap reads.
  Where that region is whole rows (no horizontal offset, stride 1) the product is
  accumulated straight into the output by BLAS (``gemm`` with ``beta = 1``);
  elsewhere the slice is gathered into a reused buffer, multiplied, and added.
  Output rows are taken in bands that keep the buffers under the workspace limit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from dilconv import _cost, _shapes
from dilconv._config import get_workspace_limit
from dilconv._methods import _single
from dilconv._native import pool
from dilconv._native import results as _results
from dilconv._spec import ConvSpec

#: Target bytes of one output strip of the elementwise path (its temporary is as
#: large): two of them and the input rows they read fit a 1 MiB L2 cache (32-512 KiB
#: timed alike on the ``seed`` case under load).
STRIP_BYTES = 128 * 2**10

#: Below this many output elements the elementwise path runs on one thread.
PARALLEL_MIN = 2**16

Tap = tuple[int, int, slice, slice, tuple[int, int], tuple[int, int]]


def elementwise(spec: ConvSpec) -> bool:
    """True when each output channel reads one input channel (single channel, depthwise)."""
    return spec.in_per_group == 1 and spec.out_per_group == 1


def strip_rows(spec: ConvSpec) -> int:
    """Output rows per strip (elementwise) or per band (matrix products)."""
    ho, wo = spec.out_hw
    item = spec.dtype.itemsize
    limit = get_workspace_limit()
    if elementwise(spec):
        row = wo * spec.out_channels * item
        budget = min(STRIP_BYTES, limit // (2 * pool.num_threads()))
    else:
        row = spec.batch * wo * (spec.in_per_group + spec.out_per_group) * item
        budget = limit
    return int(min(ho, max(1, budget // max(row, 1))))


def tap_ranges(spec: ConvSpec) -> list[Tap]:
    """For each tap that reads real input: ``(i, j, rows, cols, out_rows, out_cols)``.

    ``rows``/``cols`` slice the unpadded input; ``out_rows``/``out_cols`` are the
    ``[first, stop)`` output ranges those slices feed.
    """
    (h, w), (kh, kw) = spec.in_hw, spec.kernel_hw
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    top, left = spec.pad[0][0], spec.pad[1][0]
    ho, wo = spec.out_hw
    taps = []
    for i in range(kh):
        r0, r1 = _shapes.tap_output_range(h, i, sh, dh, top, ho)
        if r0 >= r1:
            continue
        for j in range(kw):
            c0, c1 = _shapes.tap_output_range(w, j, sw, dw, left, wo)
            if c0 >= c1:
                continue
            rows = slice(r0 * sh + i * dh - top, (r1 - 1) * sh + i * dh - top + 1, sh)
            cols = slice(c0 * sw + j * dw - left, (c1 - 1) * sw + j * dw - left + 1, sw)
            taps.append((i, j, rows, cols, (r0, r1), (c0, c1)))
    return taps


def _band_rows(tap: Tap, sh: int, s0: int, s1: int) -> tuple[int, int, slice]:
    """Output rows ``[a, b)`` of band ``[s0, s1)`` fed by ``tap``, and the input rows."""
    _, _, rows, _, (r0, r1), _ = tap
    a, b = max(r0, s0), min(r1, s1)
    first = rows.start + (a - r0) * sh
    return a, b, slice(first, first + (b - a - 1) * sh + 1, sh)


def _covers(tap: Tap, spec: ConvSpec) -> bool:
    return tap[4] == (0, spec.out_hw[0]) and tap[5] == (0, spec.out_hw[1])


def _flat_rows(a: np.ndarray) -> np.ndarray:
    """``(rows, cols, C)`` -> ``(rows, cols * C)`` where that is a view (contiguous rows)."""
    if a.shape[1] * a.shape[2] == 0 or a.strides[1] != a.shape[2] * a.itemsize:
        return a
    if a.shape[2] != 1 and a.strides[2] != a.itemsize:
        return a
    return a.reshape(a.shape[0], a.shape[1] * a.shape[2])


def _elementwise(x: np.ndarray, w: np.ndarray, spec: ConvSpec, y: np.ndarray) -> None:
    ho, wo = spec.out_hw
    sh, channels = spec.stride[0], spec.out_channels
    taps = tap_ranges(spec)
    # a tap reading real input for every output pixel writes the strip first: no zeroing
    full = [t for t in taps if _covers(t, spec)][:1]
    taps = full + [t for t in taps if t not in full]
    step = strip_rows(spec)
    strips = [(b, s0) for b in range(spec.batch) for s0 in range(0, ho, step)]
    threads = 1 if y.size < PARALLEL_MIN else min(pool.num_threads(), len(strips))
    chunks = [c for c in np.array_split(np.arange(len(strips)), threads) if c.size]
    # the weights of a tap tiled along a row, so every loop runs over whole rows
    weights = {(i, j): np.tile(w[i, j, 0], c1 - c0) for i, j, _, _, _, (c0, c1) in taps}

    def run(chunk: np.ndarray) -> None:
        tmp = np.empty((step, wo, channels), dtype=spec.dtype)
        for k in chunk:
            b, s0 = strips[k]
            s1 = min(ho, s0 + step)
            if not full:
                y[b, s0:s1].fill(0)
            for n_tap, tap in enumerate(taps):
                i, j, _, cols, _, (c0, c1) = tap
                a, e, rows = _band_rows(tap, sh, s0, s1)
                if a >= e:
                    continue
                src, out = x[b, rows, cols], y[b, a:e, c0:c1]
                flat_src, flat_out = _flat_rows(src), _flat_rows(out)
                wt = w[i, j, 0]
                if flat_src.ndim == 2 and flat_out.ndim == 2:
                    src, out, wt = flat_src, flat_out, weights[i, j]
                if full and n_tap == 0:
                    np.multiply(src, wt, out=out)
                    continue
                t = tmp[: e - a, : c1 - c0]
                t = t.reshape(out.shape) if out.ndim == 2 else t
                np.multiply(src, wt, out=t)
                np.add(out, t, out=out)

    pool.parallel_map(run, chunks)


def _whole_rows(tap: Tap, spec: ConvSpec) -> bool:
    """The tap reads whole input rows into whole output rows (contiguous in both)."""
    wd, wo = spec.in_hw[1], spec.out_hw[1]
    return tap[3] == slice(0, wd, 1) and tap[5] == (0, wd) == (0, wo)


def column_window_bytes(spec: ConvSpec) -> int:
    """Workspace of :func:`_column_windows`: the widest column window and its sums."""
    widths = [t[5][1] - t[5][0] for t in tap_ranges(spec) if not _whole_rows(t, spec)]
    width = max(widths, default=0)
    (h, _), (ho, _) = spec.in_hw, spec.out_hw
    items = spec.batch * width * (h * spec.in_channels + ho * spec.out_channels)
    return items * spec.dtype.itemsize


def _column_windows(x: np.ndarray, w: np.ndarray, spec: ConvSpec, y: np.ndarray) -> bool:
    """Stride 1, one group: the taps of one kernel column share one input column window.

    That window (every input row, the columns the column's taps read) is copied
    once; each tap of the column then reads a contiguous block of it (its rows)
    and accumulates in place into a contiguous block of the column's sum, which
    is added into the output once. A column whose window is whole rows needs no
    copy and accumulates straight into the output. False when it does not apply.
    """
    if spec.stride != (1, 1) or spec.groups != 1:
        return False
    if column_window_bytes(spec) > get_workspace_limit():
        return False
    n, c, o = spec.batch, spec.in_channels, spec.out_channels
    (h, _), ho = spec.in_hw, spec.out_hw[0]
    columns: dict[int, list[Tap]] = {}
    for tap in tap_ranges(spec):
        columns.setdefault(tap[1], []).append(tap)
    partial = [t[5][1] - t[5][0] for t in tap_ranges(spec) if not _whole_rows(t, spec)]
    width = max(partial, default=0)
    window = np.empty(n * h * width * c, dtype=spec.dtype)
    sums = np.empty(n * ho * width * o, dtype=spec.dtype)
    y.fill(0)
    for taps in columns.values():
        _, _, _, cols, _, (c0, c1) = taps[0]
        whole = _whole_rows(taps[0], spec)
        if whole:
            source, target = x, y
        else:
            source = window[: n * h * (c1 - c0) * c].reshape(n, h, c1 - c0, c)
            pool.copy(source, x[:, :, cols])
            target = sums[: n * ho * (c1 - c0) * o].reshape(n, ho, c1 - c0, o)
            target.fill(0)
        for i, j, rows, _, (r0, r1), _ in taps:
            weight = np.ascontiguousarray(w[i, j])
            for b in range(n):
                pool.accumulate_product(
                    target[b, r0:r1].reshape(-1, o), source[b, rows].reshape(-1, c), weight
                )
        if not whole:
            pool.add(y[:, :, c0:c1], target)
    return True


def _products(x: np.ndarray, w: np.ndarray, spec: ConvSpec, y: np.ndarray) -> None:
    if _column_windows(x, w, spec, y):
        return
    n = spec.batch
    ho = spec.out_hw[0]
    sh = spec.stride[0]
    cg, og, groups = spec.in_per_group, spec.out_per_group, spec.groups
    step = strip_rows(spec)
    gathered = np.empty(n * step * spec.out_hw[1] * cg, dtype=spec.dtype)
    product = np.empty(n * step * spec.out_hw[1] * og, dtype=spec.dtype)
    w_taps = {
        (i, j): [np.ascontiguousarray(w[i, j, :, g * og : (g + 1) * og]) for g in range(groups)]
        for i, j, *_ in tap_ranges(spec)
    }
    y.fill(0)
    for s0 in range(0, ho, step):
        s1 = min(ho, s0 + step)
        for tap in tap_ranges(spec):
            i, j, _, cols, _, (c0, c1) = tap
            a, e, rows = _band_rows(tap, sh, s0, s1)
            if a >= e:
                continue
            if sh == 1 and groups == 1 and _whole_rows(tap, spec):  # in place, no copy
                for b in range(n):
                    pool.accumulate_product(
                        y[b, a:e].reshape(-1, og),
                        x[b, rows].reshape(-1, cg),
                        w_taps[i, j][0],
                    )
                continue
            shape = (n, e - a, c1 - c0)
            m = n * (e - a) * (c1 - c0)
            for g in range(groups):
                buf = gathered[: m * cg].reshape(*shape, cg)
                pool.copy(buf, x[:, rows, cols, g * cg : (g + 1) * cg])
                prod = product[: m * og].reshape(m, og)
                np.matmul(buf.reshape(m, cg), w_taps[i, j][g], out=prod)
                out = y[:, a:e, c0:c1, g * og : (g + 1) * og]
                pool.add(out, prod.reshape(*shape, og))


def conv(x: np.ndarray, w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Zero-padded cross-correlation of NHWC ``x`` with HWIO ``w`` by shifted slices."""
    y = _results.new_result((spec.batch, *spec.out_hw, spec.out_channels), spec.dtype)
    if y.size == 0:
        return y
    if _single.applies(spec):
        _single.conv(x, w, spec, y)
    elif elementwise(spec):
        _elementwise(x, w, spec, y)
    else:
        _products(x, w, spec, y)
    return y


def workspace_bytes(spec: ConvSpec) -> int:
    """Elementwise: one strip buffer per thread; products: the column windows or a band's."""
    rows, wo = strip_rows(spec), spec.out_hw[1]
    windows = column_window_bytes(spec)
    if _single.applies(spec):
        return _single.slab_bytes(spec) * pool.num_threads()
    if elementwise(spec):
        per = rows * wo * spec.out_channels * pool.num_threads()
    elif spec.stride == (1, 1) and spec.groups == 1 and windows <= get_workspace_limit():
        return windows
    else:
        per = spec.batch * rows * wo * (spec.in_per_group + spec.out_per_group)
    return per * spec.dtype.itemsize


def refusal(spec: ConvSpec) -> str | None:
    """Any valid spec works."""
    return None


def tap_area(spec: ConvSpec) -> tuple[int, int]:
    """Output pixels summed over the taps that read real input, and the count of such taps."""
    area = 0
    taps = tap_ranges(spec)
    for _, _, _, _, (r0, r1), (c0, c1) in taps:
        area += (r1 - r0) * (c1 - c0)
    return spec.batch * area, len(taps)


def estimate_seconds(spec: ConvSpec, costs: Mapping[str, float]) -> float:
    """Modelled time of whichever of the three forms :func:`conv` takes on ``spec``."""
    item = spec.dtype.itemsize
    cg, og, groups = spec.in_per_group, spec.out_per_group, spec.groups
    area, taps = tap_area(spec)
    if elementwise(spec):
        strips = spec.batch * math.ceil(spec.out_hw[0] / strip_rows(spec))
        rate = costs["elementwise"] * (costs["threads"] if area > PARALLEL_MIN else 1)
        # a multiply and an add per tap over strided slices; effective passes timed
        # against the compiled loops on depthwise 16-64 channels, 64-256 pixels
        passes, calls = 5.0, strips * taps * 2
        if _single.applies(spec):  # one einsum pass per strip (per kernel column when tied)
            # effective passes, timed against the compiled loops on 128-2048 pixel
            # squares: einsum's strided loop runs at about half the in-cache rate
            tied = spec.dilation[1] == spec.stride[1]
            passes = 5.0 if tied else 2.0
            calls = strips * (2 * spec.kernel_hw[1] if tied else 1)
        return costs["call"] + calls * costs["tap"] + passes * area * spec.out_channels / rate
    windows = column_window_bytes(spec)
    if spec.stride == (1, 1) and groups == 1 and windows <= get_workspace_limit():
        gemm = sum(
            _cost.gemm_seconds(spec, (r1 - r0) * (c1 - c0), cg, og, costs) * spec.batch
            for _, _, _, _, (r0, r1), (c0, c1) in tap_ranges(spec)
        )
        copied = sum(
            spec.batch * (c1 - c0) * (spec.in_hw[0] * cg + 3 * spec.out_hw[0] * og)
            for c0, c1 in {t[5] for t in tap_ranges(spec)}
            if (c0, c1) != (0, spec.in_hw[1]) or spec.out_hw[1] != spec.in_hw[1]
        )
        return costs["call"] + gemm + copied * item / costs["copy"]
    bands = math.ceil(spec.out_hw[0] / strip_rows(spec))
    per_tap = area / max(taps, 1)
    gemm = taps * bands * groups * _cost.gemm_seconds(spec, per_tap / bands, cg, og, costs)
    moved = area * groups * (cg + 2 * og) * item / costs["copy"]
    return costs["call"] + gemm + moved

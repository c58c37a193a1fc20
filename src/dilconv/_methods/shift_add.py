"""Shift and add: one strided slice per kernel tap, multiplied and accumulated.

No zero is ever inserted: tap ``(i, j)`` reads the input at offset
``(i * dh - top, j * dw - left)`` with step ``stride``, so the cost is the same at
every dilation. Each tap only touches the output pixels where it reads real input
(taps that would read only padding are skipped), and the output is built in row
strips small enough to stay in cache. A single channel is a scalar multiply-add; a
depthwise layer an elementwise one; otherwise one matrix product per tap and group.
"""

from __future__ import annotations

import numpy as np

from dilconv import _shapes
from dilconv._config import get_workspace_limit
from dilconv._spec import ConvSpec

#: Target bytes of one output strip (with its per-tap temporary): about an L2 cache.
STRIP_BYTES = 512 * 2**10


def strip_rows(spec: ConvSpec) -> int:
    """Output rows per strip, bounded by the cache target and the workspace limit."""
    ho, wo = spec.out_hw
    row = spec.batch * wo * max(spec.out_channels, spec.in_per_group) * spec.dtype.itemsize
    budget = min(STRIP_BYTES, get_workspace_limit() // 2)
    return int(min(ho, max(1, budget // max(row, 1))))


def tap_ranges(
    spec: ConvSpec,
) -> list[tuple[int, int, slice, slice, tuple[int, int], tuple[int, int]]]:
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


def conv(x: np.ndarray, w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Zero-padded cross-correlation of NHWC ``x`` with HWIO ``w`` by shifted slices."""
    n = x.shape[0]
    ho, wo = spec.out_hw
    sh = spec.stride[0]
    cg, og = spec.in_per_group, spec.out_per_group
    y = np.zeros((n, ho, wo, spec.out_channels), dtype=spec.dtype)
    taps = tap_ranges(spec)
    step = strip_rows(spec)
    scalar = spec.in_channels == 1 and spec.out_channels == 1
    depthwise = cg == 1 and og == 1
    for s0 in range(0, ho, step):
        s1 = min(ho, s0 + step)
        for i, j, rows, cols, (r0, r1), (c0, c1) in taps:
            a, b = max(r0, s0), min(r1, s1)
            if a >= b:
                continue
            first = rows.start + (a - r0) * sh
            xs = x[:, first : first + (b - a - 1) * sh + 1 : sh, cols]
            out = y[:, a:b, c0:c1]
            if scalar or depthwise:
                out += xs * w[i, j, 0]
                continue
            for g in range(spec.groups):
                x_g = xs[..., g * cg : (g + 1) * cg].reshape(-1, cg)
                out[..., g * og : (g + 1) * og] += (
                    x_g @ w[i, j, :, g * og : (g + 1) * og]
                ).reshape(n, b - a, c1 - c0, og)
    return y


def workspace_bytes(spec: ConvSpec) -> int:
    """One strip's gathered slice and product."""
    ho, wo = spec.out_hw
    rows = strip_rows(spec)
    per = spec.batch * rows * wo * (spec.in_per_group + spec.out_per_group)
    return per * spec.dtype.itemsize


def refusal(spec: ConvSpec) -> str | None:
    """Any valid spec works."""
    return None

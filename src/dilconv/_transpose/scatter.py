"""Per-tap scatter-add: the exact adjoint of shift and add, no zero ever inserted.

Tap ``(i, j)`` of the forward convolution read the input at offset
``(i * dh - top, j * dw - left)`` with step ``stride``; its adjoint adds
``g @ w[i, j].T`` back into that strided slice of the result, only over the output
pixels whose tap read real input (:func:`dilconv._methods.shift_add.tap_ranges`).
So the cost is one matrix product per tap on the region that tap reaches, whatever
the stride and the dilation: nothing is spent on the ``stride - 1`` zeros that the
textbook transposed convolution inserts between source pixels. The result is built
in row strips: for a single channel or a depthwise layer (elementwise products)
small enough that every tap adds into a strip while it is still in cache; with
matrix products, as large as the workspace allows, since a few large products run
far closer to the machine's peak than many small ones. When each tap's product
would be narrow (few result channels per group), all the taps share one product
with their weights side by side, ``g @ [w[0, 0].T | w[0, 1].T | ...]``, and each
tap's block of columns is added where that tap reaches.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from dilconv import _shapes
from dilconv._config import get_workspace_limit
from dilconv._methods import shift_add
from dilconv._spec import ConvSpec

#: Target bytes of one result strip when the taps are elementwise: about an L2 cache.
STRIP_BYTES = 512 * 2**10


#: Taps share one matrix product when the result has at most this many channels per
#: group (a product only that wide runs well below the machine's peak).
COMBINE_MAX_CHANNELS = 128


def strip_rows(spec: ConvSpec) -> int:
    """Result rows per strip: a cache-sized strip for elementwise taps, else a quarter
    of the workspace limit for one tap's product."""
    h, w = spec.in_hw
    row = spec.batch * w * spec.in_channels * spec.dtype.itemsize
    if spec.in_per_group == 1 and spec.out_per_group == 1:
        budget = min(STRIP_BYTES, get_workspace_limit() // 2)
    else:
        budget = get_workspace_limit() // 4
    return int(min(h, max(1, budget // max(row, 1))))


def ufunc_buffer_bytes(spec: ConvSpec) -> int:
    """What NumPy's ufuncs allocate themselves to add into or from strided slices:
    a few buffers of :func:`numpy.getbufsize` elements (measured with tracemalloc:
    up to 3.4 of them, float64)."""
    return 4 * np.getbufsize() * spec.dtype.itemsize


def combined_rows(spec: ConvSpec, taps: int) -> int:
    """Source rows per shared product of ``taps`` taps: a quarter of the workspace limit."""
    per_row = spec.batch * spec.out_hw[1] * taps * spec.in_per_group * spec.dtype.itemsize
    return int(max(1, min(spec.out_hw[0], (get_workspace_limit() // 4) // max(per_row, 1))))


def workspace_bytes(spec: ConvSpec) -> int:
    """Scratch beyond the result, at its largest, for a lowered spec.

    Shared product: one chunk of source rows (:func:`combined_rows`) copied and
    multiplied by every tap's weights at once, and those weights side by side. Per
    tap: the sources of one strip (:func:`strip_rows`) times the tap's weights (and,
    with matrix products, those sources copied, and every tap's weights transposed).
    A strip or chunk is never less than one row, so a row wider than the limit allows
    needs more than the limit. Plus NumPy's own buffers (:func:`ufunc_buffer_bytes`).
    """
    n, (ho, wo), item = spec.batch, spec.out_hw, spec.dtype.itemsize
    cg, og = spec.in_per_group, spec.out_per_group
    taps = len(shift_add.tap_ranges(spec))
    if taps == 0:
        return 0
    buffers = ufunc_buffer_bytes(spec)
    elementwise = cg == 1 and og == 1
    if not elementwise and cg <= COMBINE_MAX_CHANNELS:
        rows = combined_rows(spec, taps)
        return (n * rows * wo * (taps * cg + og) + spec.groups * og * taps * cg) * item + buffers
    sources = min(ho, -(-strip_rows(spec) // spec.stride[0]))  # reached by one strip
    if elementwise:
        return n * sources * wo * spec.out_channels * item + buffers
    return (n * sources * wo * (og + cg) + taps * spec.groups * og * cg) * item + buffers


def conv_transpose(g: np.ndarray, w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Adjoint of the zero-padded cross-correlation of ``spec``, by per-tap scatter-adds.

    ``g`` is ``(N, Ho, Wo, O)``, ``w`` HWIO ``(kh, kw, C/groups, O)``; returns
    ``(N, H, W, C)`` in ``spec.dtype``.
    """
    n = g.shape[0]
    h = spec.in_hw[0]
    sh, dh, top = spec.stride[0], spec.dilation[0], spec.pad[0][0]
    ho = spec.out_hw[0]
    cg, og = spec.in_per_group, spec.out_per_group
    x = np.zeros((n, *spec.in_hw, spec.in_channels), dtype=spec.dtype)
    taps = shift_add.tap_ranges(spec)
    elementwise = cg == 1 and og == 1
    if not elementwise and cg <= COMBINE_MAX_CHANNELS and taps:
        _combined(g, w, spec, taps, x)
        return x
    w_t = {
        (i, j): [
            np.ascontiguousarray(w[i, j, :, k * og : (k + 1) * og].T) for k in range(spec.groups)
        ]
        for i, j, *_ in taps
    }
    step = strip_rows(spec)
    for a0 in range(0, h, step):
        a1 = min(h, a0 + step)
        for i, j, _, cols, _, (c0, c1) in taps:
            # sources whose tap (i, j) lands in result rows [a0, a1)
            o0, o1 = _shapes.tap_output_range(a1 - a0, i, sh, dh, top + a0, ho)
            if o0 >= o1:
                continue
            t0 = o0 * sh + i * dh - top
            target = x[:, t0 : t0 + (o1 - o0 - 1) * sh + 1 : sh, cols]
            src = g[:, o0:o1, c0:c1]
            if elementwise:
                target += src * w[i, j, 0]
                continue
            for k in range(spec.groups):
                g_k = src[..., k * og : (k + 1) * og].reshape(-1, og)
                target[..., k * cg : (k + 1) * cg] += (g_k @ w_t[i, j][k]).reshape(
                    n, o1 - o0, c1 - c0, cg
                )
    return x


def _combined(g: np.ndarray, w: np.ndarray, spec: ConvSpec, taps: list[Any], x: np.ndarray) -> None:
    """All taps in one product per group and chunk of source rows, scattered per tap."""
    n, ho, wo, _ = g.shape
    cg, og, t = spec.in_per_group, spec.out_per_group, len(taps)
    sh, dh, top = spec.stride[0], spec.dilation[0], spec.pad[0][0]
    rows = combined_rows(spec, t)
    w_all = [
        np.ascontiguousarray(
            np.stack([w[i, j, :, k * og : (k + 1) * og].T for i, j, *_ in taps], axis=1)
        ).reshape(og, t * cg)
        for k in range(spec.groups)
    ]
    for o_a in range(0, ho, rows):
        o_b = min(ho, o_a + rows)
        for k in range(spec.groups):
            src = g[:, o_a:o_b, :, k * og : (k + 1) * og].reshape(-1, og)
            prod = (src @ w_all[k]).reshape(n, o_b - o_a, wo, t, cg)
            for tap, (i, _, _, cols, (r0, r1), (c0, c1)) in enumerate(taps):
                a, b = max(r0, o_a), min(r1, o_b)
                if a >= b:
                    continue
                t0 = a * sh + i * dh - top
                target = x[:, t0 : t0 + (b - a - 1) * sh + 1 : sh, cols, k * cg : (k + 1) * cg]
                target += prod[:, a - o_a : b - o_a, c0:c1, tap]
            del prod, src  # freed before the next product: one at a time


def refusal(spec: ConvSpec) -> str | None:
    """Any stride, dilation, padding and group count."""
    return None


def estimate_seconds(spec: ConvSpec, costs: Mapping[str, float]) -> float:
    """Modelled time: the products and adds of ``shift_add``'s forward pass on the same
    spec (one product per tap on the region it reaches), its exact adjoint."""
    return shift_add.estimate_seconds(spec, costs)

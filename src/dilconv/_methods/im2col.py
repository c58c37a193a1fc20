"""im2col: gather the dilated windows into a matrix, then one matrix product.

The windows of a chunk of output rows are gathered from a zero-padded slab of
just the input rows they need (a strided view, copied once into the column
matrix ``(pixels, kh * kw * C/groups)``), then multiplied by the weights reshaped to
``(kh * kw * C/groups, O/groups)``. Chunks are sized so the slab and the column
matrix stay under the workspace limit (:func:`dilconv.get_workspace_limit`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from numpy.lib.stride_tricks import as_strided

from dilconv import _cost
from dilconv._config import get_workspace_limit
from dilconv._native import results as _results
from dilconv._padding import zero_padded_rows
from dilconv._spec import ConvSpec


def row_bytes(spec: ConvSpec) -> int:
    """Workspace of one output row of one image: its columns and its slab rows."""
    kh, kw = spec.kernel_hw
    wo, pw = spec.out_hw[1], spec.padded_hw[1]
    cols = wo * kh * kw * spec.in_per_group
    slab = spec.stride[0] * pw * spec.in_channels
    return (cols + slab + wo * spec.out_per_group) * spec.dtype.itemsize


def halo_bytes(spec: ConvSpec) -> int:
    """The slab rows of one image beyond ``stride`` per output row: the kernel's reach
    less the stride, negative where the stride is longer (a chunk of ``r`` output rows
    has a slab of ``(r - 1) * stride + reach`` rows: one row's slab is its reach only,
    however long the stride)."""
    extra = spec.effective_kernel_hw[0] - spec.stride[0]
    return extra * spec.padded_hw[1] * spec.in_channels * spec.dtype.itemsize


#: Target bytes of one chunk (columns, slab and product): small enough that the
#: product reads its columns from cache, large enough for an efficient product.
#: Chosen from interleaved timings of 0.5, 2, 8 and 256 MiB on the ``context`` shapes.
CHUNK_BYTES = 4 * 2**20

#: Fewest output pixels (product rows) a chunk holds where the workspace allows:
#: a product with few rows and a long inner size runs far below the BLAS peak
#: (measured here: 216 x 4225 @ 4225 x 256 at 3 GFLOP/s, 4096 rows at 60).
MIN_PIXELS = 4096


def chunking(spec: ConvSpec) -> tuple[int, int]:
    """``(images, rows)`` per chunk: the cache target, under the workspace limit."""
    per_row = row_bytes(spec)
    ho, wo = spec.out_hw
    target = max(CHUNK_BYTES, -(-MIN_PIXELS // max(wo, 1)) * per_row)
    kh, kw = spec.kernel_hw
    weights = kh * kw * spec.in_per_group * spec.out_channels * spec.dtype.itemsize
    # the weights' contiguous copy and the slab's halo are there whatever the chunk
    limit = min(get_workspace_limit() - weights, target) - halo_bytes(spec)
    rows = int(min(ho, max(1, limit // per_row)))
    whole = per_row * ho + halo_bytes(spec)
    images = int(min(spec.batch, max(1, (limit + halo_bytes(spec)) // whole))) if rows == ho else 1
    return images, rows


def conv(x: np.ndarray, w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Zero-padded cross-correlation of NHWC ``x`` with HWIO ``w`` by gathered columns."""
    n = x.shape[0]
    kh, kw, cg, out_channels = w.shape
    og = out_channels // spec.groups
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    ho, wo = spec.out_hw
    eh = spec.effective_kernel_hw[0]
    y = _results.new_result((n, ho, wo, out_channels), spec.dtype)
    images, rows = chunking(spec)
    w_groups = [
        # contiguous, or NumPy's product may fall back from BLAS to a plain loop
        np.ascontiguousarray(w[:, :, :, g * og : (g + 1) * og].reshape(kh * kw * cg, og))
        for g in range(spec.groups)
    ]
    for b0 in range(0, n, images):
        b1 = min(n, b0 + images)
        for r0 in range(0, ho, rows):
            r1 = min(ho, r0 + rows)
            slab = zero_padded_rows(x[b0:b1], spec.pad, r0 * sh, (r1 - 1) * sh + eh)
            s_n, s_h, s_w, s_c = slab.strides
            windows = as_strided(
                slab,
                shape=(b1 - b0, r1 - r0, wo, kh, kw, slab.shape[3]),
                strides=(s_n, sh * s_h, sw * s_w, dh * s_h, dw * s_w, s_c),
                writeable=False,
            )
            for g in range(spec.groups):
                cols = windows[..., g * cg : (g + 1) * cg].reshape(-1, kh * kw * cg)
                y[b0:b1, r0:r1, :, g * og : (g + 1) * og] = (cols @ w_groups[g]).reshape(
                    b1 - b0, r1 - r0, wo, og
                )
                del cols  # free before the next gather: one chunk alive at a time
            del slab, windows
    return y


def workspace_bytes(spec: ConvSpec) -> int:
    """One chunk's slab (halo included), columns and product, and the weights' copy."""
    images, rows = chunking(spec)
    kh, kw = spec.kernel_hw
    weights = kh * kw * spec.in_per_group * spec.out_channels * spec.dtype.itemsize
    return images * (rows * row_bytes(spec) + halo_bytes(spec)) + weights


def refusal(spec: ConvSpec) -> str | None:
    """Any valid spec works."""
    return None


def estimate_seconds(spec: ConvSpec, costs: Mapping[str, float]) -> float:
    """Modelled time: the gather of the columns, by run length, plus the chunks' products."""
    n, item = spec.batch, spec.dtype.itemsize
    (ho, wo), (kh, kw) = spec.out_hw, spec.kernel_hw
    pixels = n * ho * wo
    gathered = pixels * kh * kw * spec.in_channels * item
    run = spec.in_channels * item * (kw if spec.dilation[1] == 1 else 1)
    images, rows = chunking(spec)
    chunks = math.ceil(n / images) * math.ceil(ho / rows)
    m = pixels / chunks
    gemm = (
        chunks
        * spec.groups
        * _cost.gemm_seconds(spec, m, kh * kw * spec.in_per_group, spec.out_per_group, costs)
    )
    return costs["call"] + chunks * costs["tap"] + gathered / _cost.gather_rate(run, costs) + gemm

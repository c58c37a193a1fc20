"""Tap GEMM: one in-place matrix product per tap on a row-pitched padded slab, no gathering.

Output rows are taken in bands. For each band the input rows it reads are copied
once into a zero-padded slab of width ``W + left + right`` (the *pitch*), stored
flat as ``(rows * pitch, C)``. Output pixel ``(r, c)`` of the band, stored at flat
row ``r * pitch + c`` of an output slab with the same pitch, reads slab row
``(r + i * dh) * pitch + c + j * dw`` through tap ``(i, j)``: a constant offset. So
every tap is one matrix product of a contiguous block of the slab with
``w[i, j]``, accumulated in place into the output slab by BLAS (``beta = 1``),
with no copy of strided slices. The ``pitch - Wo`` columns at the end of each
output row are computed and dropped; rows where a tap reads only padding are
skipped. Strided or grouped calls are handed to :mod:`shift_add`, which has no
such layout constraint.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from dilconv import _cost, _shapes
from dilconv._config import get_workspace_limit
from dilconv._methods import shift_add
from dilconv._native import pool
from dilconv._native import results as _results
from dilconv._spec import ConvSpec

#: Target bytes of one band's slabs. Large products (many channels) run one band
#: at a time on BLAS's threads: bands of LARGE_BAND_BYTES. Small products run in
#: cache-sized bands of SMALL_BAND_BYTES shared among our own threads, BLAS on one
#: thread each. Chosen from interleaved timings on the ``context`` and ``wave`` shapes
#: (256 KiB to 8 MiB bands were within 10% of each other).
LARGE_BAND_BYTES = 64 * 2**20
SMALL_BAND_BYTES = 768 * 2**10

#: Flops of one tap's product below which the bands are shared among our threads.
THREAD_FLOPS = 1e8


def applies(spec: ConvSpec) -> bool:
    """True when the pitched layout applies: stride 1 and one group."""
    return spec.stride == (1, 1) and spec.groups == 1


def pitch(spec: ConvSpec) -> int:
    """Width of the padded slab rows."""
    return spec.padded_hw[1]


def _row_bytes(spec: ConvSpec) -> int:
    return pitch(spec) * (spec.in_channels + 2 * spec.out_channels) * spec.dtype.itemsize


def threaded(spec: ConvSpec) -> bool:
    """True when bands are small and shared among threads (small matrix products)."""
    rows = max(1, min(spec.out_hw[0], SMALL_BAND_BYTES // _row_bytes(spec)))
    flops = 2 * rows * pitch(spec) * spec.in_channels * spec.out_channels
    return flops < THREAD_FLOPS and pool.num_threads() > 1


def band_rows(spec: ConvSpec) -> int:
    """Output rows per band: the target size, at least the halo, under the workspace."""
    ho, row = spec.out_hw[0], _row_bytes(spec)
    halo = spec.effective_kernel_hw[0] - 1
    many = pool.num_threads() if threaded(spec) else 1
    target = SMALL_BAND_BYTES if threaded(spec) else LARGE_BAND_BYTES
    rows = max(target // row, halo, 1)
    fit = get_workspace_limit() // (row * many) - halo - 1
    return int(max(1, min(ho, rows, fit)))


def live_taps(spec: ConvSpec) -> list[tuple[int, int, int, int]]:
    """``(i, j, first, stop)``: the taps that read real input, and the output rows they do."""
    (h, wd), (ho, wo) = spec.in_hw, spec.out_hw
    (kh, kw), (dh, dw) = spec.kernel_hw, spec.dilation
    top, left = spec.pad[0][0], spec.pad[1][0]
    cols = [_shapes.tap_output_range(wd, j, 1, dw, left, wo) for j in range(kw)]
    taps: list[tuple[int, int, int, int]] = []
    for i in range(kh):
        r0, r1 = _shapes.tap_output_range(h, i, 1, dh, top, ho)
        taps.extend((i, j, r0, r1) for j in range(kw) if r0 < r1 and cols[j][0] < cols[j][1])
    return taps


def conv(x: np.ndarray, w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Zero-padded cross-correlation of NHWC ``x`` with HWIO ``w`` by pitched tap products."""
    if not applies(spec):
        return shift_add.conv(x, w, spec)
    n, c, o = spec.batch, spec.in_channels, spec.out_channels
    (h, wd), (ho, wo) = spec.in_hw, spec.out_hw
    kh, (dh, dw) = spec.kernel_hw[0], spec.dilation
    top, left = spec.pad[0][0], spec.pad[1][0]
    p = pitch(spec)
    y = _results.new_result((n, ho, wo, o), spec.dtype)
    if y.size == 0:
        return y
    band = band_rows(spec)
    halo = (kh - 1) * dh
    slack = (spec.kernel_hw[1] - 1) * dw  # dropped columns of a band's last row read past it
    taps = live_taps(spec)
    weights = {(i, j): np.ascontiguousarray(w[i, j]) for i, j, _, _ in taps}
    jobs = [(b, s0) for b in range(n) for s0 in range(0, ho, band)]
    shared = threaded(spec) and len(jobs) > 1
    parts = min(pool.num_threads(), len(jobs)) if shared else 1

    def run(chunk: np.ndarray) -> None:
        slab = np.zeros(((band + halo) * p + slack, c), dtype=spec.dtype)
        rows3 = slab[: (band + halo) * p].reshape(band + halo, p, c)
        out = np.empty((band * p, o), dtype=spec.dtype)
        tmp = np.empty((band * p, o), dtype=spec.dtype) if shared else out
        for k in chunk:
            b, s0 = jobs[k]
            s1 = min(ho, s0 + band)
            need = s1 - s0 + halo
            # slab row k is padded row s0 + k, that is input row s0 + k - top
            k0, k1 = max(0, top - s0), min(need, h + top - s0)
            body = rows3[:need, left : left + wd]
            if k1 > k0:
                body[k0:k1] = x[b, s0 + k0 - top : s0 + k1 - top]
            body[:k0] = 0
            body[max(k1, k0) :] = 0
            band_out = out[: (s1 - s0) * p]
            band_out.fill(0)
            for i, j, r0, r1 in taps:
                a, e = max(r0, s0), min(r1, s1)
                if a >= e:
                    continue
                start = (a - s0 + i * dh) * p + j * dw
                src = slab[start : start + (e - a) * p]
                dst = band_out[(a - s0) * p : (e - s0) * p]
                if shared:  # NumPy's product releases the GIL; BLAS's in-place one does not
                    prod = tmp[: (e - a) * p]
                    np.matmul(src, weights[i, j], out=prod)
                    np.add(dst, prod, out=dst)
                else:
                    pool.accumulate_product(dst, src, weights[i, j])
            y[b, s0:s1] = band_out.reshape(s1 - s0, p, o)[:, :wo]

    chunks = [ch for ch in np.array_split(np.arange(len(jobs)), parts) if ch.size]
    if parts > 1:
        with pool.single_threaded_blas():
            pool.parallel_map(run, chunks)
    else:
        run(chunks[0])
    return y


def workspace_bytes(spec: ConvSpec) -> int:
    """The input and output slabs of one band (or :mod:`shift_add`'s, when handed over)."""
    if not applies(spec):
        return shift_add.workspace_bytes(spec)
    band, halo = band_rows(spec), spec.effective_kernel_hw[0] - 1
    p = pitch(spec)
    items = ((band + halo) * p + spec.effective_kernel_hw[1]) * spec.in_channels
    items += band * p * spec.out_channels * (2 if threaded(spec) else 1)
    return items * spec.dtype.itemsize * (pool.num_threads() if threaded(spec) else 1)


def refusal(spec: ConvSpec) -> str | None:
    """Any valid spec works."""
    return None


def estimate_seconds(spec: ConvSpec, costs: Mapping[str, float]) -> float:
    """Modelled time: the band products plus the copies into and out of the slabs
    (where the pitched form does not apply, ``shift_add``'s, which :func:`conv` runs)."""
    if not applies(spec):
        return shift_add.estimate_seconds(spec, costs)
    item, c, o = spec.dtype.itemsize, spec.in_channels, spec.out_channels
    ho, wd = spec.out_hw[0], spec.in_hw[1]
    band, p = band_rows(spec), pitch(spec)
    halo = spec.effective_kernel_hw[0] - 1
    bands = spec.batch * math.ceil(ho / band)
    taps = live_taps(spec)
    rows = spec.batch * sum(r1 - r0 for _, _, r0, r1 in taps)
    m = min(band, ho) * p
    per_block = _cost.gemm_seconds(spec, m, c, o, costs, shared=threaded(spec)) - costs["tap"]
    seconds = rows * p / m * per_block + bands * len(taps) * costs["tap"]
    moved = bands * (band + halo) * wd * c + 2 * spec.batch * ho * p * o
    return costs["call"] + seconds + moved * item / costs["copy"]

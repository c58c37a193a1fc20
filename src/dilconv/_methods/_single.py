"""One channel in, one out: every tap of a strip summed in one pass by ``einsum``.

The input rows a band of output rows reads are copied once into a zero-padded
slab (per thread). On that slab the ``kh x kw`` taps of a strip of output rows are
one strided view ``(kh, kw, rows, Wo)`` (strides: dilation times the row pitch,
dilation, stride times the pitch, stride), and ``einsum("ij,ijrc->rc")`` sums the
weighted taps in a single pass over the strip, with a fused multiply-add loop
over each row: half the memory traffic of a separate multiply and add per tap,
and no temporary. The cost does not depend on the dilation (only the slab's
halo, ``(kh - 1) * dilation`` rows per band, does). Bands are shared among threads.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from dilconv._config import get_workspace_limit
from dilconv._native import pool
from dilconv._spec import ConvSpec

#: Output rows summed by one ``einsum`` call: its strip stays in cache.
STRIP_BYTES = 64 * 2**10

#: Target bytes of one thread's padded slab.
BAND_BYTES = 2 * 2**20


def applies(spec: ConvSpec) -> bool:
    """True for one input and one output channel."""
    return spec.in_channels == 1 and spec.out_channels == 1


def plan(spec: ConvSpec) -> tuple[int, int, int]:
    """``(band rows, strip rows, slab pitch)`` of output rows per band and per strip."""
    (ho, wo), item = spec.out_hw, spec.dtype.itemsize
    pitch = (wo - 1) * spec.stride[1] + spec.effective_kernel_hw[1]
    strip = max(1, min(ho, STRIP_BYTES // max(wo * item, 1)))
    slab_row = pitch * item * spec.stride[0]
    budget = min(BAND_BYTES, get_workspace_limit() // (2 * pool.num_threads()))
    band = max(strip, budget // max(slab_row, 1) // strip * strip)
    return int(min(ho, band)), int(strip), int(pitch)


def slab_bytes(spec: ConvSpec) -> int:
    """One thread's slab and strip buffer."""
    band, strip, pitch = plan(spec)
    rows = (band - 1) * spec.stride[0] + spec.effective_kernel_hw[0]
    return (rows * pitch + strip * spec.out_hw[1]) * spec.dtype.itemsize


def conv(x: np.ndarray, w: np.ndarray, spec: ConvSpec, y: np.ndarray) -> None:
    """Fill ``y`` ``(N, Ho, Wo, 1)`` with the correlation of ``x`` ``(N, H, W, 1)``."""
    (h, wd), (ho, wo) = spec.in_hw, spec.out_hw
    (kh, kw), (sh, sw), (dh, dw) = spec.kernel_hw, spec.stride, spec.dilation
    top, left = spec.pad[0][0], spec.pad[1][0]
    eh = spec.effective_kernel_hw[0]
    band, strip, pitch = plan(spec)
    taps = np.ascontiguousarray(w[:, :, 0, 0])
    jobs = [(b, s0) for b in range(spec.batch) for s0 in range(0, ho, band)]
    big = y.size * spec.dtype.itemsize >= pool.PARALLEL_BYTES
    parts = min(pool.num_threads(), len(jobs)) if big else 1
    cols = min(wd, pitch - left)  # input columns the slab holds
    column_tie = dw == sw and kw > 1

    def run(chunk: np.ndarray) -> None:
        slab = np.zeros(((band - 1) * sh + eh, pitch), dtype=spec.dtype)
        tmp = np.empty((strip, wo), dtype=spec.dtype)
        item = slab.itemsize
        for k in chunk:
            b, s0 = jobs[k]
            s1 = min(ho, s0 + band)
            first = s0 * sh - top  # input row of slab row 0
            need = (s1 - s0 - 1) * sh + eh
            k0, k1 = max(0, -first), max(0, min(need, h - first))
            if k1 > k0 and cols > 0:
                slab[k0:k1, left : left + cols] = x[b, first + k0 : first + k1, :cols, 0]
            slab[:k0] = 0
            slab[max(k0, k1) : need] = 0
            for r0 in range(s0, s1, strip):
                r1 = min(s1, r0 + strip)
                start = slab[(r0 - s0) * sh :]
                out = y[b, r0:r1, :, 0]
                if not column_tie:
                    view = as_strided(
                        start,
                        shape=(kh, kw, r1 - r0, wo),
                        strides=(dh * pitch * item, dw * item, sh * pitch * item, sw * item),
                        writeable=False,
                    )
                    np.einsum("ij,ijrc->rc", taps, view, out=out)
                    continue
                # equal column strides of taps and outputs send einsum down a slow
                # loop order (measured 15x slower), so one call per kernel column
                part = tmp[: r1 - r0]
                for j in range(kw):
                    view = as_strided(
                        start[:, j * dw :],
                        shape=(kh, r1 - r0, wo),
                        strides=(dh * pitch * item, sh * pitch * item, sw * item),
                        writeable=False,
                    )
                    np.einsum("i,irc->rc", taps[:, j], view, out=out if j == 0 else part)
                    if j:
                        np.add(out, part, out=out)

    chunks = [c for c in np.array_split(np.arange(len(jobs)), parts) if c.size]
    pool.parallel_map(run, chunks)

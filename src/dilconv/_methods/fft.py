"""FFT: the dilated kernel's spectrum times the input's, summed over input channels.

The zero-padded input and the dilated, reversed kernel are transformed at a fast
length covering the padded input; their product, contracted over the input
channels of each group, is transformed back, and the fully overlapping part is
subsampled by the stride. Integer input is refused (the answer would not be exact).

Error model: unlike every other method, the error of one output does not depend on
the values that output reads alone. The transforms mix every input value into
every frequency, so each output carries a rounding error of about
``eps * log2(fh * fw)`` times the largest ``|x|`` and ``|w|`` of the whole call:
one value of 1e300 shifts outputs far from it by about 1e284 in float64, and one
pixel of 1e6 in float32 gives the rest a relative error of about 1e-4 (against
1e-7 for the other methods). One NaN or Inf anywhere in the input makes every
output NaN. So ``method="auto"`` never picks the FFT unless
:func:`dilconv._select.allow_fft` is true; ``method="fft"`` runs it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from dilconv import _imports
from dilconv._kernel import dilate_taps
from dilconv._padding import pad_spatial
from dilconv._spec import ConvSpec


def _lengths(spec: ConvSpec) -> tuple[int, int]:
    sfft = _imports.whole("scipy.fft")  # on first use, like every part of SciPy

    ph, pw = spec.padded_hw
    return sfft.next_fast_len(ph, real=True), sfft.next_fast_len(pw, real=True)


def conv(x: np.ndarray, w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Zero-padded cross-correlation of NHWC ``x`` with HWIO ``w`` by FFT."""
    sfft = _imports.whole("scipy.fft")

    fh, fw = _lengths(spec)
    (eh, ew), (ph, pw) = spec.effective_kernel_hw, spec.padded_hw
    (sh, sw), (ho, wo) = spec.stride, spec.out_hw
    cg, og = spec.in_per_group, spec.out_per_group
    xp = pad_spatial(x, spec.pad, "zeros")
    kernel = dilate_taps(w, spec.dilation, axes=(0, 1))[::-1, ::-1]
    xf = sfft.rfft2(xp, s=(fh, fw), axes=(1, 2))
    kf = sfft.rfft2(kernel, s=(fh, fw), axes=(0, 1))
    yf = np.empty((*xf.shape[:3], spec.out_channels), dtype=xf.dtype)
    for g in range(spec.groups):
        yf[..., g * og : (g + 1) * og] = np.einsum(
            "nhwc,hwco->nhwo", xf[..., g * cg : (g + 1) * cg], kf[..., g * og : (g + 1) * og]
        )
    full = sfft.irfft2(yf, s=(fh, fw), axes=(1, 2))
    valid = full[:, eh - 1 : ph, ew - 1 : pw]
    return np.ascontiguousarray(valid[:, ::sh, ::sw][:, :ho, :wo], dtype=spec.dtype)


def workspace_bytes(spec: ConvSpec) -> int:
    """The padded input, the spectra and the full-resolution result."""
    fh, fw = _lengths(spec)
    half = fh * (fw // 2 + 1)
    c_item = 2 * spec.dtype.itemsize
    n, c, o = spec.batch, spec.in_channels, spec.out_channels
    spectra = (n * half * (c + o) + half * spec.in_per_group * o) * c_item
    real = (n * spec.padded_hw[0] * spec.padded_hw[1] * c + n * fh * fw * o) * spec.dtype.itemsize
    return spectra + real


def refusal(spec: ConvSpec) -> str | None:
    """Integer input: an FFT cannot give the exact integer answer."""
    if spec.dtype.kind in "iu":
        return "integer input must be exact, which an FFT cannot guarantee"
    return None


def estimate_seconds(spec: ConvSpec, costs: Mapping[str, float]) -> float:
    """Modelled time: the real transforms (5 n log2 n flop) and the spectral contraction."""
    fh, fw = spec.padded_hw
    size = fh * fw
    cg, og = spec.in_per_group, spec.out_per_group
    transforms = spec.batch * (spec.in_channels + spec.out_channels) + cg * spec.out_channels
    flops = 5 * transforms * size * math.log2(max(size, 2)) / 2
    contraction = spec.batch * size / 2 * cg * og * spec.groups
    return costs["call"] + costs["fft_call"] + flops / costs["fft"] + contraction / costs["einsum"]

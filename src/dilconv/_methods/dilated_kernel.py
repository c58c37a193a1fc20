"""The tutorial's method: build the dilated kernel, then run an ordinary convolution.

Each kernel gets ``dilation - 1`` zeros between taps (:func:`dilconv.dilate_kernel`),
and every (input channel, output channel) pair is one ordinary
``scipy.signal.correlate2d`` at full resolution, subsampled by the stride. Its
cost grows with the square of the dilation: this is the method to learn from and
to measure against, not the fast one.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from dilconv import _imports
from dilconv._kernel import dilate_taps
from dilconv._padding import pad_spatial
from dilconv._spec import ConvSpec


def conv(x: np.ndarray, w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Zero-padded cross-correlation via the explicit dilated kernel."""
    signal = _imports.whole("scipy.signal")  # on first use: 0.6 s of ``import dilconv``

    xp = pad_spatial(x, spec.pad, "zeros")
    wd = dilate_taps(w, spec.dilation, axes=(0, 1))
    n = x.shape[0]
    cg, og = spec.in_per_group, spec.out_per_group
    (sh, sw), (ho, wo) = spec.stride, spec.out_hw
    y = np.zeros((n, ho, wo, spec.out_channels), dtype=spec.dtype)
    for b in range(n):
        for o in range(spec.out_channels):
            g = o // og
            for c in range(cg):
                full = signal.correlate2d(xp[b, :, :, g * cg + c], wd[:, :, c, o], mode="valid")
                y[b, :, :, o] += full[::sh, ::sw][:ho, :wo]
    return y


def workspace_bytes(spec: ConvSpec) -> int:
    """The padded input, the dilated kernel and one full-resolution plane."""
    (ph, pw), (eh, ew) = spec.padded_hw, spec.effective_kernel_hw
    items = (
        spec.batch * ph * pw * spec.in_channels + eh * ew * spec.in_per_group * spec.out_channels
    )
    return (items + ph * pw) * spec.dtype.itemsize


def refusal(spec: ConvSpec) -> str | None:
    """Any valid spec works."""
    return None


def estimate_seconds(spec: ConvSpec, costs: Mapping[str, float]) -> float:
    """Modelled time: one ``correlate2d`` per (image, output, input channel) over the plane."""
    (ph, pw), (eh, ew) = spec.padded_hw, spec.effective_kernel_hw
    plane = (ph - eh + 1) * (pw - ew + 1) * eh * ew
    calls = spec.batch * spec.out_channels * spec.in_per_group
    return costs["call"] + calls * (costs["scipy_call"] + plane / costs["scipy_direct"])

"""The loop oracle: one output pixel, one tap at a time. Written for clarity; never optimise.

Output pixel ``(oh, ow)`` of group ``g`` is the sum over taps ``(i, j)`` of
``x[ih, iw, group g channels] @ w[i, j, :, group g outputs]`` where
``ih = oh * stride_h - pad_top + i * dilation_h`` (and likewise for ``iw``), skipping
taps that land in the zero padding.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from dilconv._spec import ConvSpec


def conv(x: np.ndarray, w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Zero-padded cross-correlation of NHWC ``x`` with HWIO ``w``, by loops."""
    n, h, wd, _ = x.shape
    kh, kw, cg, out_channels = w.shape
    og = out_channels // spec.groups
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    top, left = spec.pad[0][0], spec.pad[1][0]
    ho, wo = spec.out_hw
    y = np.zeros((n, ho, wo, out_channels), dtype=spec.dtype)
    for oh in range(ho):
        for ow in range(wo):
            for i in range(kh):
                for j in range(kw):
                    ih = oh * sh - top + i * dh
                    iw = ow * sw - left + j * dw
                    if not (0 <= ih < h and 0 <= iw < wd):
                        continue  # this tap reads the zero padding
                    for g in range(spec.groups):
                        x_g = x[:, ih, iw, g * cg : (g + 1) * cg]
                        w_g = w[i, j, :, g * og : (g + 1) * og]
                        y[:, oh, ow, g * og : (g + 1) * og] += x_g @ w_g
    return y


def workspace_bytes(spec: ConvSpec) -> int:
    """No scratch memory beyond the output."""
    return 0


def refusal(spec: ConvSpec) -> str | None:
    """The oracle takes any valid spec."""
    return None


def estimate_seconds(spec: ConvSpec, costs: Mapping[str, float]) -> float:
    """Modelled time: one Python step per output pixel, tap and group."""
    (ho, wo), (kh, kw) = spec.out_hw, spec.kernel_hw
    return costs["call"] + ho * wo * kh * kw * spec.groups * costs["tap"]

"""The transposed loop oracle: one source pixel, one tap at a time. For clarity; never optimise.

It is the exact adjoint of :mod:`dilconv._methods.direct`: where the forward oracle
reads input ``ih = oh * stride_h - pad_top + i * dilation_h`` (and likewise ``iw``)
into output ``(oh, ow)`` through tap ``(i, j)``, this one writes source pixel
``(oh, ow)`` back into that input position, ``g[oh, ow, group outputs] @ w[i, j].T``,
skipping positions that fall in the zero padding.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from dilconv._spec import ConvSpec


def conv_transpose(g: np.ndarray, w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Adjoint of the zero-padded cross-correlation of ``spec``, by loops.

    ``g`` is ``(N, Ho, Wo, O)`` (the forward output's shape), ``w`` is HWIO
    ``(kh, kw, C/groups, O)``; the result is ``(N, H, W, C)``, the forward input's shape.
    """
    n, ho, wo, _ = g.shape
    kh, kw, cg, out_channels = w.shape
    og = out_channels // spec.groups
    h, wd = spec.in_hw
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    top, left = spec.pad[0][0], spec.pad[1][0]
    x = np.zeros((n, h, wd, spec.in_channels), dtype=spec.dtype)
    for oh in range(ho):
        for ow in range(wo):
            for i in range(kh):
                for j in range(kw):
                    ih = oh * sh - top + i * dh
                    iw = ow * sw - left + j * dw
                    if not (0 <= ih < h and 0 <= iw < wd):
                        continue  # this tap wrote into the zero padding
                    for grp in range(spec.groups):
                        g_g = g[:, oh, ow, grp * og : (grp + 1) * og]
                        w_g = w[i, j, :, grp * og : (grp + 1) * og]
                        x[:, ih, iw, grp * cg : (grp + 1) * cg] += g_g @ w_g.T
    return x


def refusal(spec: ConvSpec) -> str | None:
    """The oracle computes every spec."""
    return None


def workspace_bytes(spec: ConvSpec) -> int:
    """No scratch memory."""
    return 0


def estimate_seconds(spec: ConvSpec, costs: Mapping[str, float]) -> float:
    """Modelled time: one Python step per source pixel, tap and group (never chosen)."""
    (ho, wo), (kh, kw) = spec.out_hw, spec.kernel_hw
    return costs["call"] + ho * wo * kh * kw * spec.groups * costs["tap"]

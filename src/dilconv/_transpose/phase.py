"""Dilation a multiple of the stride: one phase of the result, a stride-1 problem.

Source pixel ``o`` reaches result pixel ``p = o * s - lo + t * d`` through tap ``t``.
When the stride ``s`` divides the dilation ``d``, every tap reaches the same phase
``p = r (mod s)`` with ``r = -lo mod s``; the other phases receive nothing. On that
phase, ``p = r + s * m`` and ``m = o - (lo + r) / s + t * (d / s)``: the adjoint of
an ordinary stride-1 correlation with dilation ``d / s``, computed by
:mod:`~dilconv._transpose.correlate` on the forward engine (so a 3x3 kernel runs
Winograd's F(2x2, 3x3), extended by the outputs that make every tile whole where
that is cheaper, :func:`~dilconv._transpose.correlate.whole_tiles`), then written
into every ``s``-th row and column. Calls whose padding puts the phase's last
sources outside the stride-1 problem (a negative pad at the end) are refused;
``"auto"`` then uses ``"scatter"``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from dilconv import _shapes
from dilconv._spec import ConvSpec
from dilconv._transpose import correlate, scatter


def phase_spec(spec: ConvSpec) -> tuple[ConvSpec, tuple[int, int]] | str:
    """The stride-1 forward spec of the phase and its residues ``(r_h, r_w)``, or why not."""
    sizes, pads, dilations, residues = [], [], [], []
    for axis in range(2):
        s, d = spec.stride[axis], spec.dilation[axis]
        lo = spec.pad[axis][0]
        if d % s:
            return f"the dilation {spec.dilation} is not a multiple of the stride {spec.stride}"
        r = -lo % s
        n = len(range(r, spec.in_hw[axis], s))
        inner_d, inner_lo = d // s, (lo + r) // s
        k_eff = _shapes.effective_size(spec.kernel_hw[axis], inner_d)
        inner_hi = spec.out_hw[axis] - 1 + k_eff - n - inner_lo
        if inner_hi < 0 or n == 0:
            return "the padding leaves sources outside the phase's stride-1 problem"
        sizes.append(n)
        pads.append((inner_lo, inner_hi))
        dilations.append(inner_d)
        residues.append(r)
    inner = dataclasses.replace(
        spec,
        in_hw=(sizes[0], sizes[1]),
        stride=(1, 1),
        dilation=(dilations[0], dilations[1]),
        pad=(pads[0], pads[1]),
    )
    if inner.out_hw != spec.out_hw:  # pragma: no cover - the arithmetic above guarantees it
        raise RuntimeError(f"phase spec {inner} does not reproduce the sources {spec.out_hw}")
    return inner, (residues[0], residues[1])


def refusal(spec: ConvSpec) -> str | None:
    """Why this spec has no single-phase form, or None."""
    found = phase_spec(spec)
    return found if isinstance(found, str) else None


def workspace_bytes(spec: ConvSpec) -> int:
    """Scratch beyond the result, for a lowered spec it computes: the phase's result
    before it is written into every ``s``-th pixel, the sources copied for the
    correlation, and the reversed weights (the forward method that runs the
    correlation keeps its own scratch under the limit, or is refused), and NumPy's
    buffers (:func:`~dilconv._transpose.scatter.ufunc_buffer_bytes`)."""
    found = phase_spec(spec)
    if isinstance(found, str):
        return 0
    inner, _ = found
    kh, kw = spec.kernel_hw
    ph, pw = correlate.whole_tiles(correlate.adjoint_spec(inner)[0]).out_hw
    phase_result = spec.batch * max(ph, inner.in_hw[0]) * max(pw, inner.in_hw[1]) * spec.in_channels
    sources = spec.batch * spec.out_hw[0] * spec.out_hw[1] * spec.out_channels
    weights = kh * kw * spec.in_per_group * spec.out_channels
    item = spec.dtype.itemsize
    return (phase_result + sources + weights) * item + scatter.ufunc_buffer_bytes(spec)


def conv_transpose(g: np.ndarray, w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Adjoint of ``spec``'s correlation when its stride divides its dilation."""
    found = phase_spec(spec)
    if isinstance(found, str):
        raise ValueError(f"method='phase' cannot compute this call: {found}")
    inner, (rh, rw) = found
    (sh, sw), (h, wd) = spec.stride, spec.in_hw
    x = np.zeros((spec.batch, h, wd, spec.in_channels), dtype=spec.dtype)
    phase_result = correlate.conv_transpose(g, w, inner, extend=True)
    x[:, rh::sh, rw::sw] = phase_result[:, : inner.in_hw[0], : inner.in_hw[1]]
    return x


def estimate_seconds(spec: ConvSpec, costs: Mapping[str, float]) -> float:
    """Modelled time: the phase's correlation plus zeroing the result and writing the
    phase into every ``stride``-th row and column of it."""
    found = phase_spec(spec)
    if isinstance(found, str):
        return float("inf")
    inner = found[0]
    h, w = spec.in_hw
    written = spec.batch * h * w * spec.in_channels * spec.dtype.itemsize
    return correlate.estimate_seconds(inner, costs) + 2 * written / costs["copy"]

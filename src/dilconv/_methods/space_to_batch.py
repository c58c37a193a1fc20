"""Space to batch: TensorFlow's atrous method, generalised to any stride.

The zero-padded input is split into its dilation phases (sub-images
``x[r_h::d_h, r_w::d_w]``); on a phase sub-image the dilated kernel's taps are
adjacent, so an ordinary (1-dilated) convolution computes the outputs of that
phase. The phases are stacked into the batch axis, convolved in one call, and the
results interleaved back. With stride ``s`` and dilation ``d`` the phases are
those of ``o * s mod d`` (:func:`dilconv._shapes.dilation_phases`), each an
ordinary convolution of stride ``s / gcd(s, d)``, so stride and dilation combine
exactly where TensorFlow refuses them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from dilconv import _shapes
from dilconv._methods import shift_add
from dilconv._native import results as _results
from dilconv._padding import pad_spatial
from dilconv._spec import ConvSpec


def _axis_plan(spec: ConvSpec, axis: int) -> tuple[list[_shapes.Phase], int, int]:
    """Phases of one axis, the common sub-image length and the common output count."""
    phases = _shapes.dilation_phases(spec.out_hw[axis], spec.stride[axis], spec.dilation[axis])
    k = spec.kernel_hw[axis]
    count = max(p.count for p in phases)
    length = (count - 1) * phases[0].inner_stride + k
    return phases, length, count


def inner_spec(spec: ConvSpec) -> ConvSpec:
    """The ordinary (1-dilated) convolution of the stacked phase sub-images."""
    rows, len_h, _ = _axis_plan(spec, 0)
    cols, len_w, _ = _axis_plan(spec, 1)
    return dataclasses.replace(
        spec,
        batch=len(rows) * len(cols) * spec.batch,
        in_hw=(len_h, len_w),
        stride=(rows[0].inner_stride, cols[0].inner_stride),
        dilation=(1, 1),
        pad=((0, 0), (0, 0)),
    )


def conv(x: np.ndarray, w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Zero-padded cross-correlation of NHWC ``x`` with HWIO ``w`` by phase sub-images."""
    n = x.shape[0]
    (dh, dw) = spec.dilation
    xp = pad_spatial(x, spec.pad, "zeros")
    rows, len_h, count_h = _axis_plan(spec, 0)
    cols, len_w, count_w = _axis_plan(spec, 1)
    batch = np.zeros((len(rows) * len(cols) * n, len_h, len_w, x.shape[3]), dtype=spec.dtype)
    for a, ph in enumerate(rows):
        for b, pw in enumerate(cols):
            sub = xp[:, ph.residue :: dh, pw.residue :: dw][:, ph.sub_first :, pw.sub_first :]
            sub = sub[:, :len_h, :len_w]
            k = (a * len(cols) + b) * n
            batch[k : k + n, : sub.shape[1], : sub.shape[2]] = sub
    out = shift_add.conv(batch, w, inner_spec(spec))
    y = _results.new_result((n, *spec.out_hw, spec.out_channels), spec.dtype)
    for a, ph in enumerate(rows):
        for b, pw in enumerate(cols):
            k = (a * len(cols) + b) * n
            y[:, ph.out_first :: ph.out_step, pw.out_first :: pw.out_step] = out[
                k : k + n, : ph.count, : pw.count
            ]
    return y


def workspace_bytes(spec: ConvSpec) -> int:
    """The padded input, the stacked phases and their outputs."""
    (ph, pw) = spec.padded_hw
    _, len_h, count_h = _axis_plan(spec, 0)
    _, len_w, count_w = _axis_plan(spec, 1)
    phases = len(_axis_plan(spec, 0)[0]) * len(_axis_plan(spec, 1)[0])
    items = spec.batch * spec.in_channels * (ph * pw + phases * len_h * len_w)
    items += spec.batch * phases * count_h * count_w * spec.out_channels
    return items * spec.dtype.itemsize


def refusal(spec: ConvSpec) -> str | None:
    """Any valid spec works."""
    return None


def estimate_seconds(spec: ConvSpec, costs: Mapping[str, float]) -> float:
    """Modelled time: ``shift_add`` on the dense inner problem plus the two reshuffles."""
    item, (ho, wo) = spec.dtype.itemsize, spec.out_hw
    moved = 2 * spec.batch * spec.in_channels * spec.padded_hw[0] * spec.padded_hw[1] * item
    moved += spec.batch * ho * wo * spec.out_channels * item
    return shift_add.estimate_seconds(inner_spec(spec), costs) + moved / costs["copy"]

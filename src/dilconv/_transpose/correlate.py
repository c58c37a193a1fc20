"""Stride 1: the transposed convolution is a correlation with the reversed, transposed kernel.

Source pixel ``o`` reached result pixel ``p = o - lo + t * d`` through tap ``t``; so
``p`` reads source ``p - (k_eff - 1 - lo) + t' * d`` through the reversed tap
``t' = k - 1 - t``: an ordinary dilated correlation of the sources with pads
``k_eff - 1 - lo`` and ``k_eff - 1 - hi`` (sources are cropped where a pad would be
negative), whose weights are each tap's ``w[t].T``, group by group. It runs on the
forward engine (:data:`dilconv._methods.METHODS`, chosen by its cost model), so it is
as fast as ``conv2d`` itself. Other strides are refused: they would need zeros
between the sources, which :mod:`scatter` never inserts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from dilconv import _select, _shapes
from dilconv._methods import METHODS, winograd
from dilconv._native import channels
from dilconv._spec import ConvSpec


def adjoint_spec(spec: ConvSpec) -> tuple[ConvSpec, tuple[slice, slice]]:
    """The forward spec of the correlation, and the crop of the sources it reads."""
    crops, pads = [], []
    for axis in range(2):
        k_eff = _shapes.effective_size(spec.kernel_hw[axis], spec.dilation[axis])
        lo, hi = spec.pad[axis]
        n_src = spec.out_hw[axis]
        top, bottom = k_eff - 1 - lo, k_eff - 1 - hi
        crops.append(slice(max(-top, 0), n_src - max(-bottom, 0)))
        pads.append((max(top, 0), max(bottom, 0)))
    n_h, n_w = (c.stop - c.start for c in crops)
    inner = dataclasses.replace(
        spec,
        in_channels=spec.out_channels,
        out_channels=spec.in_channels,
        in_hw=(n_h, n_w),
        pad=(pads[0], pads[1]),
    )
    return inner, (crops[0], crops[1])


def transposed_weight(w: np.ndarray, groups: int) -> np.ndarray:
    """HWIO ``(kh, kw, C/groups, O)`` -> reversed taps, ``(kh, kw, O/groups, C)``.

    One group: by the compiled transpose where it applies
    (:func:`~dilconv._native.channels.swap_last_axes`)."""
    kh, kw, cg, out = w.shape
    if groups == 1:
        moved = channels.swap_last_axes(w.reshape(kh * kw, cg, out), reverse_first=True)
        if moved is not None:
            return moved.reshape(kh, kw, out, cg)
    og = out // groups
    wt = w[::-1, ::-1].reshape(kh, kw, cg, groups, og).transpose(0, 1, 4, 3, 2)
    return np.ascontiguousarray(wt.reshape(kh, kw, og, groups * cg))


def whole_tiles(inner: ConvSpec) -> ConvSpec:
    """The correlation ``inner`` with the outputs added at its end that make every
    output a whole Winograd tile's (:func:`~dilconv._methods.winograd.whole_tile_extension`),
    where ``"auto"`` runs it by Winograd; else ``inner`` itself. The added outputs
    read only padding and come after the others, which are unchanged."""
    if winograd.refusal(inner) is not None:
        return inner
    eh, ew = winograd.whole_tile_extension(inner)
    if not eh and not ew:
        return inner
    (top, bottom), (left, right) = inner.pad
    extended = dataclasses.replace(inner, pad=((top, bottom + eh), (left, right + ew)))
    return extended if _select.cheapest(extended) == "winograd" else inner


def conv_transpose(
    g: np.ndarray, w: np.ndarray, spec: ConvSpec, *, extend: bool = False
) -> np.ndarray:
    """Adjoint of the stride-1 zero-padded cross-correlation of ``spec``, on the forward engine.

    With ``extend`` the result may have more rows and columns at the end
    (:func:`whole_tiles`), for a caller that copies the first ``spec.in_hw`` of
    them anyway.
    """
    if spec.stride != (1, 1):
        raise ValueError(f"the correlate method needs stride 1, got stride {spec.stride}")
    inner, (rows, cols) = adjoint_spec(spec)
    if min(inner.in_hw) < 1:  # every source lands in the padding
        return np.zeros((spec.batch, *spec.in_hw, spec.in_channels), dtype=spec.dtype)
    if extend:
        inner = whole_tiles(inner)
    src = np.ascontiguousarray(g[:, rows, cols])
    wt = transposed_weight(w, spec.groups)
    return _select.run_resolved(
        "auto", inner, (src, w), lambda name: METHODS[name].conv(src, wt, inner)
    )


def refusal(spec: ConvSpec) -> str | None:
    """Other strides would need zeros between the sources."""
    if spec.stride != (1, 1):
        return f"needs stride 1, got stride {spec.stride}"
    return None


def workspace_bytes(spec: ConvSpec) -> int:
    """The cropped copy of the sources and the reversed kernel (the forward engine's own
    workspace is within the limit by its own guard)."""
    inner, _ = adjoint_spec(spec)
    n_h, n_w = inner.in_hw
    items = spec.batch * max(n_h, 0) * max(n_w, 0) * spec.out_channels
    items += spec.kernel_hw[0] * spec.kernel_hw[1] * spec.in_channels * spec.out_per_group
    return items * spec.dtype.itemsize


def estimate_seconds(spec: ConvSpec, costs: Mapping[str, float]) -> float:
    """Modelled time: the forward engine's choice for the correlation (what runs)."""
    inner, _ = adjoint_spec(spec)
    if min(inner.in_hw) < 1:
        return costs["call"]
    return METHODS[_select.cheapest(inner)].estimate_seconds(inner, costs)

"""Exact integers: a bound on every sum, and Python integers where int64 could overflow.

Integer input is accumulated and returned as int64. Before a call runs, the
largest sum it can form is bounded from the actual largest ``|value|`` of each
array (one pass each): ``max|a| * max|b| * terms + max|bias|``, where ``terms``
is the count of products in one output. Where that bound fits int64 (or the
input holds a value int64 cannot, such as a uint64 above ``2**63 - 1``), the
ordinary methods run; otherwise the call is computed here on Python integers, one
tap at a time, and the result is returned as int64 when every value fits, or
refused with an OverflowError that names the value and int64's range. Nothing
ever wraps.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dilconv import _shapes
from dilconv._spec import ConvSpec

INT64_MIN, INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)
OBJECT = np.dtype(object)


def largest(a: np.ndarray | None) -> int:
    """The largest ``|value|`` of an integer array, as a Python int (0 for None)."""
    if a is None or a.size == 0:
        return 0
    return max(abs(int(a.max())), abs(int(a.min())))


def overflows(
    spec: ConvSpec, a: np.ndarray, b: np.ndarray, terms: int, bias: np.ndarray | None = None
) -> bool:
    """Whether a sum of ``terms`` products of ``a`` and ``b`` values (plus ``bias``)
    may leave int64, or an input value is outside int64: then use :func:`exact_spec`."""
    if spec.dtype.kind not in "iu":
        return False
    big_a, big_b, big_bias = largest(a), largest(b), largest(bias)
    if max(big_a, big_b, big_bias) > INT64_MAX:  # uint64 above 2**63 - 1
        return True
    return big_a * big_b * terms + big_bias > INT64_MAX


def exact_spec(spec: ConvSpec) -> ConvSpec:
    """``spec`` computed and returned in Python integers (object arrays)."""
    return dataclasses.replace(spec, dtype=OBJECT, out_dtype=OBJECT)


def to_int64(a: np.ndarray, what: str) -> np.ndarray:
    """An exact object-array result as int64, or OverflowError naming the value."""
    if a.dtype != OBJECT:
        return a
    flat = a.ravel().tolist()
    high, low = max(flat, default=0), min(flat, default=0)
    if high > INT64_MAX or low < INT64_MIN:
        worst = high if high > INT64_MAX else low
        raise OverflowError(
            f"{what}: the exact result holds {worst}, outside int64's range "
            f"[{INT64_MIN}, {INT64_MAX}]; integer results are int64, so cast the "
            "input to float64 (rounded) or use smaller values"
        )
    return a.astype(np.int64)


def _taps(spec: ConvSpec) -> list[tuple[int, int, slice, slice, slice, slice]]:
    """Per tap that reads real input: ``(i, j, out rows, out cols, in rows, in cols)``."""
    (h, wd), (kh, kw) = spec.in_hw, spec.kernel_hw
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    (top, _), (left, _) = spec.pad
    ho, wo = spec.out_hw
    taps = []
    for i in range(kh):
        r0, r1 = _shapes.tap_output_range(h, i, sh, dh, top, ho)
        for j in range(kw):
            c0, c1 = _shapes.tap_output_range(wd, j, sw, dw, left, wo)
            if r0 >= r1 or c0 >= c1:
                continue
            first_r, first_c = r0 * sh - top + i * dh, c0 * sw - left + j * dw
            rows = slice(first_r, first_r + (r1 - r0 - 1) * sh + 1, sh)
            cols = slice(first_c, first_c + (c1 - c0 - 1) * sw + 1, sw)
            taps.append((i, j, slice(r0, r1), slice(c0, c1), rows, cols))
    return taps


def conv(x: np.ndarray, w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Zero-padded cross-correlation of NHWC ``x`` with HWIO ``w`` in Python integers."""
    cg, og = spec.in_per_group, spec.out_per_group
    y = np.zeros((spec.batch, *spec.out_hw, spec.out_channels), dtype=OBJECT)
    for i, j, out_r, out_c, in_r, in_c in _taps(spec):
        for g in range(spec.groups):
            xs = x[:, in_r, in_c, g * cg : (g + 1) * cg]
            y[:, out_r, out_c, g * og : (g + 1) * og] += xs @ w[i, j, :, g * og : (g + 1) * og]
    return y


def conv_transpose(g: np.ndarray, w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The adjoint of :func:`conv` (``g`` has the forward output's shape), in Python integers."""
    cg, og = spec.in_per_group, spec.out_per_group
    x = np.zeros((spec.batch, *spec.in_hw, spec.in_channels), dtype=OBJECT)
    for i, j, out_r, out_c, in_r, in_c in _taps(spec):
        for k in range(spec.groups):
            gs = g[:, out_r, out_c, k * og : (k + 1) * og]
            x[:, in_r, in_c, k * cg : (k + 1) * cg] += gs @ w[i, j, :, k * og : (k + 1) * og].T
    return x

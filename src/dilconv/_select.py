"""Choosing an algorithm: validity guards first, then a cost model, optionally a stopwatch.

The model estimates seconds for each algorithm from the spec alone, in the manner of
:func:`scipy.signal.choose_conv_method`. Its constants are the rates of this
kind of machine (2 cores, OpenBLAS) and live in :data:`COST`; the benchmark that
fits them is ``benchmarks/fit_cost_model.py`` (see ``benchmarks/RESULTS.md``).

Guards: an algorithm is a candidate for ``"auto"`` when it accepts the spec
(``refusal`` is None) and its workspace fits :func:`dilconv.get_workspace_limit`.
The loop oracle ``"direct"`` is never chosen automatically.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from dilconv._config import get_workspace_limit
from dilconv._methods import METHODS, shift_add
from dilconv._spec import ConvSpec

#: Rates and fixed costs of the model (seconds, bytes, operations per second).
COST: dict[str, float] = {
    "call": 2e-5,  # fixed cost of one algorithm call (layout, allocation)
    "tap": 4e-6,  # Python and NumPy overhead per tap, strip or chunk step
    "elementwise": 1.2e9,  # fused multiply-adds per second, in-cache elementwise
    "copy": 2.0e9,  # bytes per second, strided gather into a contiguous buffer
    "gemm": 6.0e10,  # flop/s of a large float32 matrix product (float64: half)
    "small_gemm": 1.0e10,  # flop/s of a matrix product with an inner size below 16
    "fft": 1.5e9,  # flop/s of a real 2-D FFT (5 n log2 n flop)
    "einsum": 2.0e9,  # complex multiply-adds per second in the spectral contraction
    "scipy_direct": 6.0e8,  # multiply-adds per second of scipy.signal.correlate2d
}


def _gemm_rate(spec: ConvSpec, inner: int) -> float:
    rate = COST["gemm"] if inner >= 16 else COST["small_gemm"]
    return rate / 2 if spec.dtype.itemsize >= 8 else rate


def estimate_seconds(name: str, spec: ConvSpec) -> float:
    """The cost model's estimate for one algorithm on a lowered spec."""
    n, item = spec.batch, spec.dtype.itemsize
    (ho, wo), (kh, kw) = spec.out_hw, spec.kernel_hw
    cg, og, groups = spec.in_per_group, spec.out_per_group, spec.groups
    pixels = n * ho * wo
    if name == "direct":
        return COST["call"] + ho * wo * kh * kw * groups * COST["tap"]
    if name == "dilated_kernel":
        (ph, pw), (eh, ew) = spec.padded_hw, spec.effective_kernel_hw
        plane = (ph - eh + 1) * (pw - ew + 1) * eh * ew
        return COST["call"] + n * spec.out_channels * cg * plane / COST["scipy_direct"]
    if name in ("shift_add", "space_to_batch"):
        taps = len(shift_add.tap_ranges(spec)) if name == "shift_add" else kh * kw
        strips = math.ceil(ho / shift_add.strip_rows(spec))
        if cg == 1 and og == 1:
            work = pixels * spec.out_channels / COST["elementwise"]
        else:
            work = pixels * cg * groups * item / COST["copy"]
            work += 2 * pixels * cg * og * groups / _gemm_rate(spec, cg)
        extra = 0.0
        if name == "space_to_batch":  # pad, stack the phases, interleave back
            extra = 2 * n * spec.in_channels * spec.padded_hw[0] * spec.padded_hw[1] * item
            extra = extra / COST["copy"] + pixels * spec.out_channels * item / COST["copy"]
        return COST["call"] + taps * strips * groups * COST["tap"] + kh * kw * work + extra
    if name == "im2col":
        gathered = pixels * kh * kw * spec.in_channels * item
        flops = 2 * pixels * kh * kw * cg * og * groups
        chunks = math.ceil(gathered / max(get_workspace_limit(), 1)) + groups
        return (
            COST["call"]
            + chunks * COST["tap"]
            + gathered / COST["copy"]
            + flops / _gemm_rate(spec, kh * kw * cg)
        )
    if name == "fft":
        fh, fw = spec.padded_hw
        size = fh * fw
        transforms = n * (spec.in_channels + spec.out_channels) + cg * spec.out_channels
        flops = 5 * transforms * size * math.log2(max(size, 2)) / 2
        contraction = n * size / 2 * cg * og * groups
        return COST["call"] + flops / COST["fft"] + contraction / COST["einsum"]
    raise ValueError(f"no cost model for method {name!r}")


def candidates(spec: ConvSpec) -> list[str]:
    """Algorithms ``"auto"`` may pick for a lowered spec: accepted and within workspace."""
    limit = get_workspace_limit()
    return [
        name
        for name, m in METHODS.items()
        if name != "direct" and m.refusal(spec) is None and m.workspace_bytes(spec) <= limit
    ]


def cheapest(spec: ConvSpec) -> str:
    """The candidate with the lowest estimated time."""
    names = candidates(spec)
    if not names:  # im2col and shift_add always fit; kept as a clear error all the same
        raise ValueError(f"no algorithm fits the workspace limit {get_workspace_limit()} bytes")
    return min(names, key=lambda name: estimate_seconds(name, spec))


def resolve_method(method: Any, spec: ConvSpec) -> str:
    """Check ``method`` against the registry and the spec; ``"auto"`` asks the model."""
    if not isinstance(method, str):
        raise TypeError(f"method must be a str, got {method!r}")
    if method == "auto":
        return cheapest(spec.lowered())
    if method not in METHODS:
        raise ValueError(f"method must be 'auto' or one of {sorted(METHODS)}, got {method!r}")
    lowered = spec.lowered()
    reason = METHODS[method].refusal(lowered)
    if reason is not None:
        raise ValueError(f"method={method!r} cannot compute this call: {reason}")
    need, limit = METHODS[method].workspace_bytes(lowered), get_workspace_limit()
    if need > limit:
        raise ValueError(
            f"method={method!r} needs {need / 2**20:.1f} MiB of workspace, more than the "
            f"limit of {limit / 2**20:.1f} MiB (dilconv.set_workspace_limit); use "
            f"method='auto' or one of {candidates(lowered)}"
        )
    return method


def measure(run: Any, names: list[str], repeats: int = 3) -> dict[str, float]:
    """Best-of-``repeats`` wall time of ``run(name)`` for each name."""
    times = {}
    for name in names:
        best = np.inf
        for _ in range(repeats):
            start = time.perf_counter()
            run(name)
            best = min(best, time.perf_counter() - start)
        times[name] = float(best)
    return times

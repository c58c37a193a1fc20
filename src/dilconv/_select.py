"""Choosing an algorithm: validity guards first, then a cost model, optionally a stopwatch.

The model estimates seconds for each algorithm from the spec alone, in the manner of
:func:`scipy.signal.choose_conv_method`. Its constants are the rates of this
kind of machine (2 cores, OpenBLAS) and live in :data:`COST`; the benchmark that
fits them is ``benchmarks/fit_cost_model.py`` (see ``benchmarks/RESULTS.md``).

Guards: an algorithm is a candidate for ``"auto"`` when it accepts the spec
(``refusal`` is None) and its workspace fits :func:`dilconv.get_workspace_limit`.
The loop oracle ``"direct"`` is never chosen automatically, nor is a method whose
error at one output depends on input values that output does not read
(:data:`NONLOCAL`: the FFT) unless :func:`allow_fft` says so. Where the arrays hold
NaN or Inf, the methods of :data:`FINITE_ONLY` are left out too.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any

import numpy as np

from dilconv import _config
from dilconv._config import get_workspace_limit
from dilconv._methods import (
    METHODS,
    _single,
    _winograd_products,
    blocked,
    compiled,
    im2col,
    shift_add,
    space_to_batch,
    tap_gemm,
    winograd,
)
from dilconv._native import pool
from dilconv._spec import ConvSpec

#: Rates and fixed costs of the model (seconds, bytes, operations per second) on this
#: 2-core machine. ``benchmarks/fit_cost_model.py`` measures each one with its own
#: micro-benchmark, prints a fresh table and checks the model's choices against a
#: stopwatch on the benchmark shapes. These values: "gemm", "elementwise" and "tap"
#: from its measurements on a quiet machine; "small_penalty", "run" and the "gemm_*"
#: half-rate sizes set so the model ranks the algorithms as measured on the
#: ``context``, ``wave`` and ``aspp`` cases (benchmarks/RESULTS.md: on its quieter run
#: ``im2col`` beat ``tap_gemm`` on 64 channels, so "auto" is up to 1.3x there).
COST: dict[str, float] = {
    "call": 5e-5,  # fixed cost of one algorithm call (spec, layout, allocation)
    "tap": 2e-6,  # Python and NumPy overhead per tap, strip, band or chunk step
    "elementwise": 4.5e9,  # in-cache multiply or add, elements per second per thread
    "threads": 1.8,  # speed-up of the elementwise strips on all (2) threads
    "copy": 8e9,  # bytes per second, strided gather into a contiguous buffer
    "gemm": 1.88e11,  # flop/s of a large float32 matrix product (float64: half)
    "gemm_k": 64.0,  # inner size at which a product runs at half its large-size rate
    "gemm_n": 16.0,  # output width at which a product runs at half rate
    "gemm_m": 256.0,  # rows at which a product runs at half rate
    "small_kn": 8192.0,  # inner size x output width below which BLAS's own threads...
    "small_penalty": 4.0,  # ...run a product this many times slower than threads over bands
    "run": 1024.0,  # bytes of contiguous run at which a gather reaches half its copy rate
    "fft": 3e9,  # flop/s of a real 2-D FFT (5 n log2 n flop)
    "einsum": 3e8,  # complex multiply-adds per second in the spectral contraction
    "scipy_direct": 5e8,  # multiply-adds per second of scipy.signal.correlate2d
    # Fixed costs of the many-call paths, from choose_method(measure=True) on a
    # 1x3x8x8 input with a 4x3x3x3 kernel (fft 157 us, im2col 42 us): without them
    # "auto" sent tiny calls to the FFT, which also rounds exact zeros to 1e-16.
    "fft_call": 1.2e-4,  # padding, the dilated kernel and three transforms
    "scipy_call": 4e-6,  # one correlate2d call per (image, output, input channel)
    # The compiled loops (method "compiled"), per thread, from fit_cost_model.py's
    # fit_compiled on a quiet machine: multiply-adds per second with one channel
    # (three taps fused per pass), per channel element when depthwise (16 channels),
    # and the cost of one output row's pass over one kernel row.
    "compiled": 1.1e10,
    "compiled_depthwise": 2.5e9,
    "compiled_row": 6e-8,
    # The register-blocked tiles (method "blocked"), per thread: multiply-adds per
    # second counted over whole SIMD vectors (padded output channels), and the cost
    # of one tile's pass over one tap (loop overhead, loads and stores of the sums).
    "blocked": 5.5e10,
    "blocked_tap": 2.5e-9,
    "blocked_call": 3e-5,  # layout lookup, weight packing, the calls' arguments
    # Winograd F(2x2, 3x3) (method "winograd"), per thread: its 16 products run on
    # the blocked tile loop at the "blocked" rate; the transforms write or read 16
    # values per tile and channel, at this rate (fit_cost_model.py's fit_winograd:
    # 2.2-2.5e9 on a 64-channel 128x128 layer). The weights' transform, in values
    # of U per second on the call's threads (fit_winograd: aspp's 8.4 million in
    # 7 ms, 3 of them the page faults of a fresh 33 MiB packing). Bands hold at
    # least winograd.MIN_BAND_TILES tiles, so streaming a U larger than the caches
    # once per band hides behind the products.
    "winograd_transform": 2.4e9,
    "winograd_weights": 1.2e9,
}


def _gemm_seconds(spec: ConvSpec, m: float, k: float, n: float, shared: bool = False) -> float:
    """Modelled time of an ``(m, k) @ (k, n)`` product.

    ``shared``: one of many small products spread over our own threads (BLAS on one
    thread each); otherwise BLAS threads the product itself, which is slow for a
    small ``k * n`` (measured on the ``context`` case).
    """
    if min(m, k, n) <= 0:
        return COST["tap"]
    rate = COST["gemm"] / (1 + COST["gemm_k"] / k + COST["gemm_n"] / n + COST["gemm_m"] / m)
    rate = rate / 2 if spec.dtype.itemsize >= 8 else rate
    if not shared and k * n < COST["small_kn"]:
        rate /= COST["small_penalty"]
    return 2 * m * k * n / rate + COST["tap"]


def _gather_rate(run_bytes: float) -> float:
    """Bytes per second of a gather whose contiguous runs are ``run_bytes`` long."""
    return COST["copy"] * run_bytes / (run_bytes + COST["run"])


def _tap_area(spec: ConvSpec) -> tuple[int, int]:
    """Output pixels summed over the taps that read real input, and the count of such taps."""
    area = 0
    taps = shift_add.tap_ranges(spec)
    for _, _, _, _, (r0, r1), (c0, c1) in taps:
        area += (r1 - r0) * (c1 - c0)
    return spec.batch * area, len(taps)


def _shift_add(spec: ConvSpec) -> float:
    item = spec.dtype.itemsize
    cg, og, groups = spec.in_per_group, spec.out_per_group, spec.groups
    area, taps = _tap_area(spec)
    if shift_add.elementwise(spec):
        strips = spec.batch * math.ceil(spec.out_hw[0] / shift_add.strip_rows(spec))
        rate = COST["elementwise"] * (COST["threads"] if area > shift_add.PARALLEL_MIN else 1)
        # a multiply and an add per tap over strided slices; effective passes timed
        # against the compiled loops on depthwise 16-64 channels, 64-256 pixels
        passes, calls = 5.0, strips * taps * 2
        if _single.applies(spec):  # one einsum pass per strip (per kernel column when tied)
            # effective passes, timed against the compiled loops on 128-2048 pixel
            # squares: einsum's strided loop runs at about half the in-cache rate
            tied = spec.dilation[1] == spec.stride[1]
            passes = 5.0 if tied else 2.0
            calls = strips * (2 * spec.kernel_hw[1] if tied else 1)
        return COST["call"] + calls * COST["tap"] + passes * area * spec.out_channels / rate
    windows = shift_add.column_window_bytes(spec)
    if spec.stride == (1, 1) and groups == 1 and windows <= get_workspace_limit():
        gemm = sum(
            _gemm_seconds(spec, (r1 - r0) * (c1 - c0), cg, og) * spec.batch
            for _, _, _, _, (r0, r1), (c0, c1) in shift_add.tap_ranges(spec)
        )
        copied = sum(
            spec.batch * (c1 - c0) * (spec.in_hw[0] * cg + 3 * spec.out_hw[0] * og)
            for c0, c1 in {t[5] for t in shift_add.tap_ranges(spec)}
            if (c0, c1) != (0, spec.in_hw[1]) or spec.out_hw[1] != spec.in_hw[1]
        )
        return COST["call"] + gemm + copied * item / COST["copy"]
    bands = math.ceil(spec.out_hw[0] / shift_add.strip_rows(spec))
    per_tap = area / max(taps, 1)
    gemm = taps * bands * groups * _gemm_seconds(spec, per_tap / bands, cg, og)
    moved = area * groups * (cg + 2 * og) * item / COST["copy"]
    return COST["call"] + gemm + moved


def _tap_gemm(spec: ConvSpec) -> float:
    if not tap_gemm.applies(spec):
        return _shift_add(spec)
    item, c, o = spec.dtype.itemsize, spec.in_channels, spec.out_channels
    ho, wd = spec.out_hw[0], spec.in_hw[1]
    band, p = tap_gemm.band_rows(spec), tap_gemm.pitch(spec)
    halo = spec.effective_kernel_hw[0] - 1
    bands = spec.batch * math.ceil(ho / band)
    taps = tap_gemm.live_taps(spec)
    rows = spec.batch * sum(r1 - r0 for _, _, r0, r1 in taps)
    m = min(band, ho) * p
    per_block = _gemm_seconds(spec, m, c, o, shared=tap_gemm.threaded(spec)) - COST["tap"]
    seconds = rows * p / m * per_block + bands * len(taps) * COST["tap"]
    moved = bands * (band + halo) * wd * c + 2 * spec.batch * ho * p * o
    return COST["call"] + seconds + moved * item / COST["copy"]


def blocked_work(spec: ConvSpec) -> tuple[int, int, int, int]:
    """``(multiply-adds, tap passes, calls, threads)`` of method "blocked" on ``spec``.

    Multiply-adds are counted over whole SIMD vectors of output channels and only
    for taps that read real input; a tap pass is one tile's pass over one tap (per
    group, output block and input block); a call is one compiled-function call.
    """
    lay = blocked.layout(spec)
    p = lay.plan
    row_taps = int((lay.rows[:, 3] - lay.rows[:, 2]).sum())
    column_taps = sum(int((t[:, 3] - t[:, 2]).sum()) for _, t in lay.columns)
    tap_pixels = sum(int((t[:, 3] - t[:, 2]).sum()) * pixels for pixels, t in lay.columns)
    width = sum(math.ceil((o1 - o0) / p.lanes) * p.lanes for o0, o1 in p.out_blocks)
    blocks = spec.groups * len(p.out_blocks) * len(p.in_blocks)
    macs = row_taps * tap_pixels * spec.groups * width * spec.in_per_group
    threads = blocked.thread_count(spec)
    return macs, row_taps * column_taps * blocks, threads * len(lay.columns) * blocks, threads


def _blocked(spec: ConvSpec) -> float:
    macs, passes, calls, threads = blocked_work(spec)
    rate = COST["blocked"] * (1 if spec.dtype.itemsize < 8 else 0.5) * threads
    seconds = macs / rate + passes * COST["blocked_tap"] / threads + calls * COST["tap"]
    return COST["call"] + COST["blocked_call"] + seconds


def winograd_work(spec: ConvSpec) -> tuple[int, int, int, int]:
    """``(multiply-adds, transformed values, calls, threads)`` of method "winograd".

    Multiply-adds of the 16 products over whole SIMD vectors of output channels and
    whole runs of tiles (a band's last, shorter run costs about a full one: the
    weights are loaded for it all the same); transformed values are the 16 per tile
    and channel, input and output; calls are compiled-function calls (per band and
    block of input channels, an input transform and the products' calls).
    """
    lay = winograd.layout(spec)
    p = _winograd_products.product_plan(spec)
    width = sum(math.ceil((o1 - o0) / p.lanes) * p.lanes for o0, o1 in p.out_blocks)
    runs = sum(math.ceil((r1 - r0) * (s1 - s0) / p.pixels) for r0, r1, s0, s1 in lay.bands)
    macs = spec.batch * runs * p.pixels * 16 * spec.in_channels * width
    values = spec.batch * lay.tiles * 16 * (spec.in_channels + spec.out_channels)
    per_band = 2 + len(p.in_blocks) * (1 + 2 * len(p.out_blocks))
    return macs, values, spec.batch * len(lay.bands) * per_band, winograd.thread_count(spec)


def winograd_direct_share(spec: ConvSpec) -> float:
    """The share of the outputs that method "winograd" computes directly (no whole pair)."""
    lay = winograd.layout(spec)
    (ho, wo), rows, cols = spec.out_hw, len(lay.single_rows), len(lay.single_cols)
    return (rows * wo + (ho - rows) * cols) / max(ho * wo, 1)


def _winograd(spec: ConvSpec) -> float:
    macs, values, calls, threads = winograd_work(spec)
    half = 1 if spec.dtype.itemsize < 8 else 0.5
    rate = COST["blocked"] * half * threads
    seconds = macs / rate + values / (COST["winograd_transform"] * half * threads)
    seconds += 16 * spec.in_channels * spec.out_channels / COST["winograd_weights"]
    direct = winograd_direct_share(spec)
    if direct:  # blocked's tiles on those outputs (their share of its whole time)
        seconds += COST["blocked_call"] + direct * (_blocked(spec) - COST["call"])
    return COST["call"] + COST["blocked_call"] + seconds + calls * COST["tap"] / threads


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
        calls = n * spec.out_channels * cg
        return COST["call"] + calls * (COST["scipy_call"] + plane / COST["scipy_direct"])
    if name == "shift_add":
        return _shift_add(spec)
    if name == "tap_gemm":
        return _tap_gemm(spec)
    if name == "blocked":
        return _blocked(spec)
    if name == "winograd":
        return _winograd(spec)
    if name == "compiled":
        area, _ = _tap_area(spec)
        single = spec.out_channels == 1
        rate = COST["compiled"] if single else COST["compiled_depthwise"]
        rate *= COST["threads"] if compiled.threaded(spec) and pool.num_threads() > 1 else 1
        rows = n * ho * kh * COST["compiled_row"]
        return COST["call"] + rows + area * spec.out_channels / rate
    if name == "space_to_batch":
        inner = space_to_batch.inner_spec(spec)
        moved = 2 * n * spec.in_channels * spec.padded_hw[0] * spec.padded_hw[1] * item
        moved += pixels * spec.out_channels * item
        return _shift_add(inner) + moved / COST["copy"]
    if name == "im2col":
        gathered = pixels * kh * kw * spec.in_channels * item
        run = spec.in_channels * item * (kw if spec.dilation[1] == 1 else 1)
        images, rows = im2col.chunking(spec)
        chunks = math.ceil(n / images) * math.ceil(ho / rows)
        m = pixels / chunks
        gemm = chunks * groups * _gemm_seconds(spec, m, kh * kw * cg, og)
        return COST["call"] + chunks * COST["tap"] + gathered / _gather_rate(run) + gemm
    if name == "fft":
        fh, fw = spec.padded_hw
        size = fh * fw
        transforms = n * (spec.in_channels + spec.out_channels) + cg * spec.out_channels
        flops = 5 * transforms * size * math.log2(max(size, 2)) / 2
        contraction = n * size / 2 * cg * og * groups
        return COST["call"] + COST["fft_call"] + flops / COST["fft"] + contraction / COST["einsum"]
    raise ValueError(f"no cost model for method {name!r}")


#: Methods whose error at an output depends on input values that output does not
#: read: the FFT spreads every input's rounding error, and any NaN or Inf, over the
#: whole output (see :mod:`dilconv._methods.fft`). ``"auto"`` picks them only when
#: :func:`allow_fft` is true; ``method="fft"`` always runs the FFT.
NONLOCAL = frozenset({"fft"})

#: Methods equal to ``"direct"`` on finite input whose answer differs where the input
#: holds NaN or Inf: ``dilated_kernel`` multiplies the zeros between the dilated taps
#: (``0 * inf`` is NaN at outputs that never read that pixel), ``winograd``'s
#: transforms add and subtract an Inf (NaN where ``direct`` gives Inf). ``"auto"``
#: leaves them out when :func:`all_finite` is false for the call's arrays.
FINITE_ONLY = frozenset({"dilated_kernel", "winograd"})

#: Whether ``"auto"`` may choose a method of :data:`NONLOCAL` whatever the settings
#: say; off by default (the setting is ``dilconv.set_config(allow_fft=True)``).
ALLOW_FFT = False


def allow_fft() -> bool:
    """Whether ``method="auto"`` may choose the FFT: ``get_config()["allow_fft"]`` (False).

    Examples
    --------
    >>> allow_fft()
    False
    """
    return ALLOW_FFT or bool(_config.get("allow_fft"))


def all_finite(arrays: tuple[np.ndarray, ...]) -> bool:
    """Whether the floating-point arrays hold no NaN or Inf: one sum each, no copy.

    A sum that overflows to Inf counts as non-finite, which only makes ``"auto"``
    more careful.
    """
    with np.errstate(all="ignore"):
        return all(
            a.dtype.kind != "f" or bool(np.isfinite(np.add.reduce(a, axis=None))) for a in arrays
        )


def candidates(spec: ConvSpec, *, finite: bool = True) -> list[str]:
    """Algorithms ``"auto"`` may pick for a lowered spec: accepted and within workspace.

    Leaves out ``"direct"``, :data:`NONLOCAL` unless :func:`allow_fft`, and
    :data:`FINITE_ONLY` unless ``finite`` (the arrays hold no NaN or Inf).
    """
    limit = get_workspace_limit()
    left_out = {"direct"} | (set() if allow_fft() else NONLOCAL)
    if not finite:
        left_out |= FINITE_ONLY
    return [
        name
        for name, m in METHODS.items()
        if name not in left_out and m.refusal(spec) is None and m.workspace_bytes(spec) <= limit
    ]


def cheapest(spec: ConvSpec, *, finite: bool = True) -> str:
    """The candidate with the lowest estimated time (remembered per spec and setting)."""
    return _cheapest(spec, get_workspace_limit(), pool.num_threads(), allow_fft(), finite)


@functools.lru_cache(maxsize=512)
def _cheapest(spec: ConvSpec, limit: int, threads: int, fft: bool, finite: bool) -> str:
    names = candidates(spec, finite=finite)
    if not names:  # im2col and shift_add always fit; kept as a clear error all the same
        raise ValueError(f"no algorithm fits the workspace limit {get_workspace_limit()} bytes")
    return min(names, key=lambda name: estimate_seconds(name, spec))


def explain(spec: ConvSpec) -> dict[str, str]:
    """Each algorithm's standing for a lowered spec: its estimate, or why it is left out.

    A remark on how an algorithm runs here (``compiled`` compiled in memory where
    Numba cannot cache) follows its entry.
    """
    limit = get_workspace_limit()
    notes = {}
    for name, m in METHODS.items():
        if name == "direct":
            text = "the loop oracle, never chosen"
        elif (reason := m.refusal(spec)) is not None:
            text = f"refused: {reason}"
        elif name == "fft" and not allow_fft():
            text = "never chosen by auto unless allowed (its error depends on far values)"
        elif (need := m.workspace_bytes(spec)) > limit:
            text = (
                f"needs {need / 2**20:.1f} MiB of workspace, over the limit of "
                f"{limit / 2**20:.1f} MiB"
            )
        else:
            text = f"estimated {estimate_seconds(name, spec) * 1e3:.3g} ms"
        remark = compiled.note() if name == "compiled" else None
        notes[name] = text if remark is None else f"{text}; {remark}"
    return notes


def resolve_method(method: Any, spec: ConvSpec, arrays: tuple[np.ndarray, ...] = ()) -> str:
    """Check ``method`` against the registry and the spec; ``"auto"`` asks the model.

    ``arrays``: the call's input arrays; where ``"auto"``'s choice is one of
    :data:`FINITE_ONLY`, they are checked for NaN and Inf (one sum each).
    """
    if not isinstance(method, str):
        raise TypeError(f"method must be a str, got {method!r}")
    if method == "auto":
        name = cheapest(spec.lowered())
        if name in FINITE_ONLY and not all_finite(arrays):
            name = cheapest(spec.lowered(), finite=False)
        return name
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
    """Best-of-``repeats`` wall time of ``run(name)`` for each name.

    The names take turns, one call each per round, so whatever one call leaves
    behind (idle BLAS threads still spinning, caches) falls on every name alike;
    nothing pauses or spins between them. Benchmarks that need a settled machine
    before every timed call pause in ``dilconv.bench`` (``--settle``).
    """
    best = dict.fromkeys(names, np.inf)
    for _ in range(repeats):
        for name in names:
            start = time.perf_counter()
            run(name)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: float(seconds) for name, seconds in best.items()}

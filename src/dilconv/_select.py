"""Choosing an algorithm: validity guards first, then a cost model, optionally a stopwatch.

One mechanism for every registry: the forward algorithms
(:data:`dilconv._methods.METHODS`), the transposed ones
(:data:`dilconv._transpose.TRANSPOSE_METHODS`) and the weight gradient's routes
(:data:`dilconv._grad_weight.ROUTES`). Each entry declares beside its own code
when it refuses a call (``refusal``), the scratch memory it needs
(``workspace_bytes``) and the seconds it expects to take
(``estimate_seconds(spec, costs)``), in the manner of
:func:`scipy.signal.choose_conv_method`. :func:`best` asks each candidate and
takes the cheapest: an entry is a candidate when ``"auto"`` may choose it (the
loop oracles never), it accepts the spec (``refusal`` is None) and its workspace
fits :func:`dilconv.get_workspace_limit`.

Beyond these guards, ``"auto"`` never picks a method whose error at one output
depends on input values that output does not read (:data:`NONLOCAL`: the FFT)
unless :func:`allow_fft` says so, and where the arrays hold NaN or Inf the methods
of :data:`FINITE_ONLY` are left out too. Winograd finds a NaN or Inf in its input
itself as it transforms it, so :func:`run_resolved` runs it without scanning the
input first and computes again with another method in the rare call that has one.

The model's constants are the rates of this kind of machine (2 cores, OpenBLAS);
they live in ``cost_model.json`` (:data:`dilconv._cost.COST`), which
``benchmarks/fit_cost_model.py --write`` fits and writes (see
``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

import numpy as np

from dilconv import _config, _first_calls
from dilconv._config import get_workspace_limit
from dilconv._cost import COST
from dilconv._methods import METHODS, _winograd_planar, compiled, winograd
from dilconv._native import pool
from dilconv._spec import ConvSpec

__all__ = ["COST", "Candidate", "best", "candidates", "cheapest", "eligible", "estimate_seconds"]


class Candidate(Protocol):
    """What the selector asks of a registered algorithm (forward, transposed or route)."""

    @property
    def name(self) -> str: ...
    @property
    def auto(self) -> bool: ...
    @property
    def refusal(self) -> Any: ...  # (spec) -> str | None
    @property
    def workspace_bytes(self) -> Any: ...  # (spec) -> int
    @property
    def estimate_seconds(self) -> Any: ...  # (spec, costs) -> float


def eligible(
    registry: Mapping[str, Candidate], spec: ConvSpec, left_out: frozenset[str] = frozenset()
) -> list[str]:
    """The entries of ``registry`` that ``"auto"`` may pick for ``spec``: guards only
    (and none of ``left_out``)."""
    limit = get_workspace_limit()
    return [
        name
        for name, m in registry.items()
        if m.auto
        and name not in left_out
        and m.refusal(spec) is None
        and m.workspace_bytes(spec) <= limit
    ]


def best(
    registry: Mapping[str, Candidate],
    spec: ConvSpec,
    what: str = "algorithm",
    left_out: frozenset[str] = frozenset(),
) -> str:
    """The eligible entry of ``registry`` with the lowest estimated time on ``spec``."""
    names = eligible(registry, spec, left_out)
    if not names:
        raise ValueError(f"no {what} fits the workspace limit {get_workspace_limit()} bytes")
    return min(names, key=lambda name: registry[name].estimate_seconds(spec, COST))


def estimate_seconds(name: str, spec: ConvSpec) -> float:
    """The cost model's estimate for one forward algorithm on a lowered spec."""
    if name not in METHODS:
        raise ValueError(f"no cost model for method {name!r}")
    return float(METHODS[name].estimate_seconds(spec, COST))


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

#: Methods of :data:`FINITE_ONLY` that notice a NaN or Inf in their input as they
#: read it: under :func:`dilconv._methods.winograd.finite_guard` they raise
#: :class:`~dilconv._methods.winograd.NonFiniteInput` instead of returning, so
#: :func:`run_resolved` need not scan the input (one pass over it, 1.4 ms of a
#: 25 ms layer on 8 x 128 x 128 x 64) before choosing them.
SELF_CHECKING = frozenset({"winograd"})

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
    return eligible(METHODS, spec, left_out(finite))


def left_out(finite: bool = True) -> frozenset[str]:
    """The forward methods ``"auto"`` leaves out beyond the guards (see :func:`candidates`)."""
    out = frozenset() if allow_fft() else NONLOCAL
    return out if finite else out | FINITE_ONLY


def cheapest(spec: ConvSpec, *, finite: bool = True) -> str:
    """The candidate with the lowest estimated time (remembered per spec and setting)."""
    return _cheapest(spec, get_workspace_limit(), pool.num_threads(), allow_fft(), finite)


@functools.lru_cache(maxsize=512)
def _cheapest(spec: ConvSpec, limit: int, threads: int, fft: bool, finite: bool) -> str:
    return best(METHODS, spec, left_out=left_out(finite))  # im2col and shift_add always fit


def moves_layout(spec: ConvSpec) -> bool:
    """Whether a call of ``spec`` (the caller's, not lowered) moves its arrays between
    the caller's NCHW and the algorithms' NHWC, unless ``blocked`` reads them in place
    (:mod:`~dilconv._methods._blocked_planar`)."""
    return spec.data_format == "NCHW" and spec.x_ndim != 2 and spec.padding_mode == "zeros"


def layout_seconds(spec: ConvSpec, costs: Mapping[str, float] = COST) -> float:
    """Modelled time of an NCHW call's two layout moves: its input to NHWC and the
    result back, at the ``layout`` rate (fresh pages included); an array of one
    channel moves for free."""
    (h, w), (ho, wo) = spec.in_hw, spec.out_hw
    c, o = spec.in_channels, spec.out_channels
    # one channel is the same array in either layout: nothing moves
    elements = spec.batch * (h * w * c * (c > 1) + ho * wo * o * (o > 1))
    return elements * spec.dtype.itemsize / costs["layout"]


#: Input channels per group from which ``blocked`` and ``winograd`` no longer read an
#: NCHW call's arrays in place but move them, as every other method does. In place,
#: each tile reads a run of a row from each channel's plane; with many channels
#: those reads cost more than the moves. In-place time over moved time, ``blocked`` /
#: ``winograd``, 3x3 layers (2026-12-05, AMD EPYC, alternating in one process): 21
#: channels at 256^2 0.82 / 0.99, 64 at 256^2 1.01 / 0.79, 256 at 96^2 1.03 / 0.97;
#: to 256 channels at 65^2, d = 12: 512 1.06 / 0.98, 1024 1.13 / 1.08, 1536 1.38 /
#: 1.07, 2048 (``aspp``) 1.43 / 1.08.
IN_PLACE_CHANNELS = 512


def reads_in_place(spec: ConvSpec) -> bool:
    """Whether ``blocked`` and ``winograd`` run on a call's NCHW arrays in place
    (:mod:`~dilconv._methods._blocked_planar`, :mod:`~dilconv._methods._winograd_nchw`):
    an NCHW call (:func:`moves_layout`) of fewer than :data:`IN_PLACE_CHANNELS` input
    channels per group."""
    return moves_layout(spec) and spec.in_per_group < IN_PLACE_CHANNELS


#: The share of :func:`layout_seconds` that ``winograd`` pays on NCHW arrays, staging
#: each band's input rows and output rows in cache instead of moving the arrays
#: (2026-12-04, AMD EPYC, in one process: the 64-channel ``context`` layers took
#: 1.11-1.24x the NHWC call, where the two moves made them 1.29-1.46x; ``aspp`` at
#: d = 12 1.42x against 1.52x).
STAGED_SHARE = 0.5


def cheapest_for_caller(spec: ConvSpec, *, finite: bool = True) -> str:
    """:func:`cheapest` for the call as the caller made it: in NCHW every algorithm
    pays :func:`layout_seconds` on top of its estimate but, where they read the
    arrays in place (:func:`reads_in_place`), ``blocked``
    (:mod:`~dilconv._methods._blocked_planar`) and ``winograd`` with vectors of
    tiles (:func:`~dilconv._methods._winograd_planar.pays`) pay none of it, and
    ``winograd`` staging rows pays :data:`STAGED_SHARE` of it."""
    if not moves_layout(spec):
        return cheapest(spec.lowered(), finite=finite)
    return _cheapest_nchw(spec, get_workspace_limit(), pool.num_threads(), allow_fft(), finite)


@functools.lru_cache(maxsize=512)
def _cheapest_nchw(spec: ConvSpec, limit: int, threads: int, fft: bool, finite: bool) -> str:
    lowered = spec.lowered()
    moves = layout_seconds(spec)
    # blocked's NHWC estimate holds for both of its in-place routes: the planar
    # loop (one pass of output channels) and its own tile loop storing NCHW;
    # winograd's holds where it runs vectors of tiles
    # (:mod:`~dilconv._methods._winograd_planar`), else it stages each band's rows
    # in cache (:mod:`~dilconv._methods._winograd_nchw`)
    in_place = reads_in_place(spec)

    def seconds(name: str) -> float:
        extra = moves
        if in_place and name == "blocked":
            extra = 0.0
        elif in_place and name == "winograd":
            extra = 0.0 if _winograd_planar.pays(lowered) else STAGED_SHARE * moves
        return estimate_seconds(name, lowered) + extra

    return min(eligible(METHODS, lowered, left_out(finite)), key=seconds)


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


def resolve_method(
    method: Any,
    spec: ConvSpec,
    arrays: tuple[np.ndarray, ...] = (),
    *,
    first_call: bool = True,
    guarded: bool = False,
    nonfinite: bool = False,
) -> str:
    """Check ``method`` against the registry and the spec; ``"auto"`` asks the model.

    ``arrays``: the call's input arrays, the input first; where ``"auto"``'s choice
    is one of :data:`FINITE_ONLY`, they are checked for NaN and Inf (one sum each).
    ``first_call``: the name is for a call about to run, so where the model's choice
    still has machine code to load, :mod:`dilconv._first_calls` may serve the call
    with a loaded route instead; False gives the model's choice (as
    :func:`dilconv.choose_method` reports it) and records nothing.
    ``guarded``: the caller runs a choice of :data:`SELF_CHECKING` under
    :func:`~dilconv._methods.winograd.finite_guard` (as :func:`run_resolved`
    does), so the input, ``arrays[0]``, is not scanned for it.
    ``nonfinite``: leave :data:`FINITE_ONLY` out without scanning (the call already
    met a NaN, an Inf or an overflow).
    """
    if not isinstance(method, str):
        raise TypeError(f"method must be a str, got {method!r}")
    if method == "auto":
        lowered = spec.lowered()
        finite = True
        name = cheapest_for_caller(spec)
        unscanned = guarded and name in SELF_CHECKING
        if nonfinite or (
            name in FINITE_ONLY and not all_finite(arrays[1:] if unscanned else arrays)
        ):
            finite, unscanned = False, False
            name = cheapest_for_caller(spec, finite=False)
        if not first_call or _first_calls.is_ready(name, lowered):
            return name
        loaded = [
            n
            for n in candidates(lowered, finite=finite)
            if n != name
            and _first_calls.is_ready(n, lowered)
            and not (unscanned and n in FINITE_ONLY - SELF_CHECKING)
        ]
        chosen = _first_calls.serve(
            name, lowered, loaded, lambda n: estimate_seconds(n, lowered), COST
        )
        if chosen != name:
            return chosen
        try:
            failed = _first_calls.load(name, lowered)
        except MemoryError:  # no room to load it now (headroom): a loaded route serves
            _first_calls.forget_ready(name, lowered)
            if not loaded:
                raise
            return min(loaded, key=lambda n: estimate_seconds(n, lowered))
        if failed is not None:
            # loading failed (Numba installed but broken): it declines from now on
            _first_calls.forget_ready(name, lowered)
            _cheapest.cache_clear()
            _cheapest_nchw.cache_clear()
            return resolve_method(method, spec, arrays)
        return chosen
    if method not in METHODS:
        raise ValueError(f"method must be 'auto' or one of {sorted(METHODS)}, got {method!r}")
    lowered = spec.lowered()
    reason = METHODS[method].refusal(lowered)
    if reason is None and first_call and not _first_calls.is_ready(method, lowered):
        reason = _first_calls.load(method, lowered)  # about to run: load its runtime now
        # (refusals load nothing, so they may not know yet that it cannot be loaded)
    if reason is not None:
        raise ValueError(f"method={method!r} cannot compute this call: {reason}")
    need, limit = METHODS[method].workspace_bytes(lowered), get_workspace_limit()
    if need > limit:
        raise ValueError(
            f"method={method!r} needs {need / 2**20:.1f} MiB of workspace, more than the "
            f"limit of {limit / 2**20:.1f} MiB (dilconv.set_workspace_limit); use "
            f"method='auto' or one of {candidates(lowered)}"
        )
    if first_call:
        _first_calls.mark_ready(method, lowered)
    return method


Result = TypeVar("Result")


def run_resolved(
    method: Any,
    spec: ConvSpec,
    arrays: tuple[np.ndarray, ...],
    compute: Callable[[str], Result],
) -> Result:
    """``compute(name)`` for the method :func:`resolve_method` resolves, where a choice
    of :data:`SELF_CHECKING` by ``"auto"`` reads its input (``arrays[0]``) unscanned.

    Such a choice runs under :func:`~dilconv._methods.winograd.finite_guard`; if any
    result of its tiles is NaN or Inf (a NaN or Inf read, or a sum that overflowed in
    its transforms where the direct sum may not) it raises, and the call is computed
    anew by the cheapest method outside :data:`FINITE_ONLY`. A method given by name
    runs as given.
    """
    name = resolve_method(method, spec, arrays, guarded=True)
    if method != "auto" or name not in SELF_CHECKING:
        return compute(name)
    try:
        with winograd.finite_guard():
            return compute(name)
    except winograd.NonFiniteInput:
        return compute(resolve_method(method, spec, arrays, nonfinite=True))


def measure(run: Any, names: list[str], repeats: int = 3) -> dict[str, float]:
    """Best-of-``repeats`` wall time of ``run(name)`` for each name.

    The names take turns, one call each per round, so whatever one call leaves
    behind (idle BLAS threads still spinning, caches) falls on every name alike;
    nothing pauses or spins between them. Benchmarks that need a settled machine
    before every timed call pause in ``dilconv.bench`` (``--settle``).
    """
    fastest = dict.fromkeys(names, np.inf)
    for _ in range(repeats):
        for name in names:
            start = time.perf_counter()
            run(name)
            fastest[name] = min(fastest[name], time.perf_counter() - start)
    return {name: float(seconds) for name, seconds in fastest.items()}

"""Timing: every contender of a row side by side, alternating, warm-up first, medians.

Each row's contenders run once to warm up (and to check they agree with dilconv),
then ``repeats`` rounds in which every contender runs once, in a fresh (seeded)
random order each round, so no contender always follows the same one, each timed
call after a pause (``settle`` seconds, :data:`SETTLE_SECONDS` by default) so that
none starts while another library's idle worker threads still spin (PyTorch's
OpenMP threads keep both cores busy for some milliseconds after its call returns,
OpenBLAS's for 60-100 ms: any contender that calls NumPy's matrix product wakes
them). The pause is spent spinning on every core rather than sleeping: on a
virtual machine a core left idle for 30 ms halts, and waking it costs
milliseconds, which would be charged to whichever contender's threads happen to
sleep rather than spin between calls. A contender whose first
:data:`SLOW_REPEATS` timed calls take longer than :data:`SLOW_SECONDS` (median) is
timed no more, and one whose
median is under :data:`FAST_SECONDS` is timed :data:`FAST_FACTOR` times as often,
in further rounds with every contender within :data:`CLOSE_FACTOR` of its median
(:func:`fast_contenders`; the table shows how many). dilconv's
contenders are then run once more under ``tracemalloc`` for the peak memory they
allocate beyond their result. Every row times the steady state: ``method="auto"``
runs the model's choice from its first call (``first_calls="wait"``); the
``cold`` case times first calls, in fresh processes with the default setting.
"""

from __future__ import annotations

import time
import tracemalloc
from typing import Any

import numpy as np

from dilconv import config_context, get_workspace_limit
from dilconv._native import pool, spin
from dilconv.bench import cases as C
from dilconv.bench import machine
from dilconv.bench import peers as P

#: Median seconds of its first SLOW_REPEATS timed calls above which a contender is
#: timed no more (its warm-up may include compiling, so it does not decide).
SLOW_SECONDS = 1.5
SLOW_REPEATS = 3

#: Median seconds of dilconv auto (after the first ``repeats`` rounds) below which
#: it is timed FAST_FACTOR times as often, in further rounds with the contenders
#: close to it (:func:`fast_contenders`). A
#: call of a few milliseconds moves by 20% with the state the previous contender
#: left (pages freed or kept by the allocator): ``seed``'s ``auto`` and
#: ``compiled`` rows, the same code, had medians of 15 calls 1.18-1.23x apart in
#: three runs, and of 45 calls still 0.91-1.12x apart (run of 15:04 UTC).
FAST_SECONDS = 0.02
FAST_FACTOR = 5
#: The further rounds take the contenders within this factor of dilconv auto's median.
CLOSE_FACTOR = 2.0

#: Pause before each timed call: longer than any idle thread's spin (see
#: ``spin.SETTLE_SECONDS``). Also measured here on the ``context`` C=64 layer:
#: ``blocked`` took 32 ms right after a PyTorch call and 24 ms after a 20 ms pause.
#: Spent spinning: after a 30 ms sleep the 21-channel layer took 6.5-8 ms, not 3.5.
SETTLE_SECONDS = spin.SETTLE_SECONDS

#: Agreement check: largest difference over the largest magnitude of the reference.
AGREE_RTOL = 1e-3

DEFAULT_PEERS = ("torch", "tensorflow", "scipy")


def _nbytes(result: Any) -> int:
    if isinstance(result, (list, tuple)):
        return sum(_nbytes(r) for r in result)
    return int(getattr(result, "nbytes", 0))


def _agreement(reference: Any, other: Any, label: str) -> float | None:
    ref, got = P.to_nhwc(reference, "dilconv"), P.to_nhwc(other, label)
    if ref is None or got is None or ref.shape != got.shape:
        return None
    scale = float(np.max(np.abs(ref))) or 1.0
    return float(np.max(np.abs(ref.astype(np.float64) - got))) / scale


def extra_memory(fn: Any) -> int:
    """Peak bytes ``fn()`` allocates (traced by tracemalloc) beyond the result it returns."""
    tracemalloc.start()
    try:
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return max(0, peak - _nbytes(result))


def fast_contenders(medians: dict[str, float], reference: str) -> list[str]:
    """The contenders timed in the further rounds: none unless the reference (dilconv
    auto) is under :data:`FAST_SECONDS`; then it and every contender within
    :data:`CLOSE_FACTOR` of it, so that every ratio near 1 is still of calls timed
    side by side (a method left to run alone in the further rounds had its median
    drop from over 20 ms to 18, and "auto/best" read 1.32 for the same code)."""
    auto = medians.get(reference)
    if auto is None or auto >= FAST_SECONDS:
        return []
    return [n for n, m in medians.items() if m <= CLOSE_FACTOR * auto]


def time_row(
    built: C.Built, repeats: int, bar: Any, settle: float = SETTLE_SECONDS
) -> dict[str, Any]:
    """Warm up, check agreement, then alternate the contenders ``repeats`` rounds."""
    names = list(built.contenders)
    agree: dict[str, float | None] = {}
    reference = None
    for name in list(names):
        try:
            out = built.contenders[name]()
        except Exception as err:  # a peer's refusal (TensorFlow's CPU kernels refuse some
            if name.startswith("dilconv"):  # dilations) is recorded; dilconv's never is
                raise
            built.skipped[name] = f"refused: {type(err).__name__}: {str(err).splitlines()[0]}"
            names.remove(name)
            bar.update(1)
            continue
        if name == built.reference:
            reference = out
        elif reference is not None and name not in built.no_check:
            agree[name] = _agreement(reference, out, name)
        del out
        bar.update(1)
    times: dict[str, list[float]] = {name: [] for name in names}
    order = np.random.default_rng(0)

    def rounds(count: int, members: list[str]) -> None:
        for _ in range(count):
            # a fresh order each round: no contender always follows the same one
            # (what the previous call freed or left in cache would otherwise favour
            # some contenders)
            for name in [members[k] for k in order.permutation(len(members))]:
                done = times[name]
                # slow by its timed calls, not its warm-up (which may compile)
                if len(done) >= SLOW_REPEATS and np.median(done) > SLOW_SECONDS:
                    bar.update(1)
                    continue
                fn = built.contenders[name]
                spin.busy_pause(settle, pool.num_threads())
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
                bar.update(1)

    rounds(repeats, names)
    fast = fast_contenders({n: float(np.median(t)) for n, t in times.items() if t}, "dilconv auto")
    if fast and FAST_FACTOR > 1:
        bar.total += len(fast) * repeats * (FAST_FACTOR - 1)
        rounds(repeats * (FAST_FACTOR - 1), fast)
    memory = {n: extra_memory(built.contenders[n]) for n in names if n.startswith("dilconv")}
    return {"times": times, "agree": agree, "memory": memory}


def summarise(row: C.Row, built: C.Built, timed: dict[str, Any], peak: float) -> dict[str, Any]:
    """Medians, GFLOP/s, share of the matmul peak, and dilconv's ratios to every peer."""
    med = {n: float(np.median(t)) for n, t in timed["times"].items() if t}
    contenders = {
        n: {
            "median_s": med[n],
            "repeats": len(timed["times"][n]),
            "gflops": built.flops / med[n] / 1e9,
            "peak_share": built.flops / med[n] / 1e9 / peak,
            "extra_mib": timed["memory"].get(n, 0) / 2**20 if n in timed["memory"] else None,
            "agree_rel_diff": timed["agree"].get(n),
        }
        for n in med
    }
    auto = med.get("dilconv auto")
    methods = {  # the algorithms forced by name (not auto, in either layout)
        n: t
        for n, t in med.items()
        if n.startswith("dilconv ") and not n.startswith("dilconv auto")
    }
    best = min(methods, key=methods.__getitem__) if methods else None
    peers = {n: t for n, t in med.items() if not n.startswith("dilconv")}
    groups = {
        "torch": [t for n, t in peers.items() if n.startswith("torch")],
        "tensorflow": [t for n, t in peers.items() if n.startswith("tf")],
        "ndimage": [t for n, t in peers.items() if n == "ndimage correlate"],
        "convolve2d": [t for n, t in peers.items() if n == "scipy convolve2d"],
    }
    return {
        "case": row.case,
        "row": row.label,
        "gflop": built.flops / 1e9,
        "contenders": contenders,
        "skipped": built.skipped,
        "best_method": best,
        "auto_over_best_method": auto / methods[best] if auto and best else None,
        "ratios": {n: auto / t for n, t in peers.items()} if auto else {},
        "ratio_best": {g: auto / min(ts) for g, ts in groups.items() if ts and auto},
        "derived": built.derived(med) if built.derived is not None else {},
    }


def run(
    case_names: list[str] | None = None,
    *,
    methods: tuple[str, ...] | None = None,
    peers: tuple[str, ...] = DEFAULT_PEERS,
    quick: bool = False,
    repeats: int = 7,
    progress: bool = True,
    settle: float = SETTLE_SECONDS,
) -> dict[str, Any]:
    """Run the named cases (all when None) and return the full result record."""
    from tqdm import tqdm

    from dilconv._methods import METHODS

    catalogue = C.all_cases(quick)
    names = list(catalogue) if case_names is None else case_names
    unknown = [n for n in names if n not in catalogue]
    if unknown:
        raise ValueError(f"cases must be among {sorted(catalogue)}, got {unknown}")
    if methods is None:
        methods = tuple(m for m in METHODS if m != "direct")
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"methods must be among {sorted(METHODS)}, got {bad}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if not settle >= 0:
        raise ValueError(f"settle must be >= 0 seconds, got {settle}")
    info = machine.describe(512 if quick else 2048)
    rows = [row for name in names for row in catalogue[name]]
    results = []
    # The rows time the steady state: "auto" runs the model's choice from its first
    # call ("wait"); the cold case's fresh processes time the first calls themselves.
    with (
        config_context(first_calls="wait"),
        tqdm(total=0, desc="dilconv bench", unit="run", disable=not progress) as bar,
    ):
        for row in rows:
            bar.set_postfix_str(f"{row.case} {row.label}")
            built = row.build(methods, peers, C.QUICK_SKIP_SECONDS if quick else C.SKIP_SECONDS)
            bar.total += len(built.contenders) * (repeats + 1)
            bar.refresh()
            timed = time_row(built, repeats, bar, settle)
            results.append(summarise(row, built, timed, info["matmul_peak_gflops"]))
            del built
    info["matmul_peak_gflops_after"] = machine.matmul_peak(512 if quick else 2048)
    try:
        import os

        info["load_average_after"] = list(os.getloadavg())
    except OSError:  # pragma: no cover
        pass
    return {
        "machine": info,
        "settings": {
            "cases": names,
            "methods": list(methods),
            "peers": list(peers),
            "quick": quick,
            "repeats": repeats,
            "settle_seconds": settle,
            "slow_seconds": SLOW_SECONDS,
            "slow_repeats": SLOW_REPEATS,
            "fast_seconds": FAST_SECONDS,
            "fast_factor": FAST_FACTOR,
            "close_factor": CLOSE_FACTOR,
            "workspace_limit_mib": get_workspace_limit() / 2**20,
        },
        "missing_peers": dict(P.MISSING),
        "rows": results,
    }

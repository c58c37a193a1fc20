"""First calls: ``method="auto"`` never waits for machine code a loaded route would beat.

Three algorithms run machine code that a process must load before their first call:
``compiled`` (Numba's loops for depthwise channels: importing Numba and loading them
from its cache takes about 0.5 s here, compiling them a second or more; one float
channel runs LLVM's row loop instead, the ``"stencil"`` route of :func:`route`, which
loads like the next two) and ``blocked`` and ``winograd`` (LLVM IR through llvmlite:
about 0.05 s to load from dilconv's disk cache, 0.1-0.3 s to compile). The model of
:mod:`dilconv._select` ranks the algorithms as they run once loaded; this module
decides when loading is worth it, as a ski rental:

- While the model's choice is not loaded, ``"auto"`` serves the call with the
  best route that is (NumPy routes always are) and adds what that cost over the
  model's choice (the *rent*: the stand-in's measured time less the choice's
  modelled one) to the choice's account.
- As soon as the choice's first-call cost (:func:`warmup_seconds`, from the
  ``*_first_cached`` and ``*_first_empty`` constants of ``cost_model.json``) is at
  most this call's rented route plus the rent already paid, ``"auto"`` loads it.

So a short script's single call runs at NumPy-route speed, a call that is long
anyway pays the load at once (it waits at most as long again as the rented route
would take), and a long-running program reaches full speed after at most the
load's cost in extra time: never more than twice what it would have spent
knowing its future calls. Loading is per algorithm and dtype, and happens on the
caller's thread, inside the call: no thread is left compiling when the program
exits or forks. ``set_config(first_calls="wait")`` turns this off (``"auto"``
always runs the model's choice, loading it first); an explicit ``method=`` always
loads and waits.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from dilconv import _config
from dilconv._spec import ConvSpec

#: The algorithms that run machine code loaded on first use, and what runs it.
FAMILY = {"compiled": "numba", "blocked": "llvm", "winograd": "llvm"}
#: The same for each route of that code: the algorithms, and ``"stencil"``, the row
#: loop that ``compiled`` runs one channel on (LLVM's, through llvmlite: no Numba).
RUNTIME = {**FAMILY, "stencil": "llvm"}

_lock = threading.Lock()
#: Per thread: the call served by a stand-in that is still running (see :func:`settle`).
_local = threading.local()
#: (algorithm, dtype) whose machine code this process has loaded (or is loading).
_ready: set[tuple[str, str]] = set()
#: (algorithm, dtype) -> modelled seconds paid so far for not loading it.
_rent: dict[tuple[str, str], float] = {}


def route(name: str, spec: ConvSpec) -> str:
    """The route whose machine code algorithm ``name`` runs ``spec`` with: ``name``,
    or ``"stencil"`` where ``compiled`` runs one channel on LLVM's row loop.

    Examples
    --------
    >>> from dilconv._spec import make_spec
    >>> one = make_spec((1, 1, 64, 64), (1, 1, 3, 3), padding="same").lowered()
    >>> route("compiled", one), route("blocked", one)
    ('stencil', 'blocked')
    """
    if name == "compiled":
        import dilconv._methods.compiled as compiled  # (no fromlist: no Python-level import step)

        if compiled.stencil_route(spec):  # remembered per spec
            return "stencil"
    return name


def _key(name: str, spec: ConvSpec) -> tuple[str, str]:
    return route(name, spec), spec.dtype.str


def is_ready(name: str, spec: ConvSpec) -> bool:
    """Whether ``name`` runs ``spec`` without loading anything first (NumPy routes:
    always)."""
    return name not in FAMILY or _key(name, spec) in _ready


def mark_ready(name: str, spec: ConvSpec) -> None:
    """Record that ``name`` is about to run ``spec``'s dtype (so it is loaded from now on)."""
    if name in FAMILY:
        with _lock:
            _ready.add(_key(name, spec))


def load(name: str, spec: ConvSpec) -> str | None:
    """Load the runtime ``name`` runs ``spec`` on (Numba, llvmlite); why it cannot be,
    or None."""
    from dilconv._methods import blocked, compiled, winograd
    from dilconv._native import stencil_rows

    loaders: dict[str, Callable[[], str | None]] = {
        "compiled": compiled._unavailable,
        "stencil": stencil_rows.load,
        "blocked": blocked._unavailable,
        "winograd": winograd._unavailable,
    }
    found = route(name, spec)
    return loaders[found]() if found in loaders else None


def forget_ready(name: str, spec: ConvSpec) -> None:
    """Undo :func:`mark_ready` (the code could not be loaded after all)."""
    with _lock:
        _ready.discard(_key(name, spec))


def _numba_cache_files() -> bool:
    """Whether Numba's on-disk cache holds dilconv's loops (index files, where Numba
    keeps them: beside the source, or under ``NUMBA_CACHE_DIR``)."""
    source = Path(__file__).with_name("_native")
    places = [source / "__pycache__"]
    if os.environ.get("NUMBA_CACHE_DIR"):
        places = [Path(os.environ["NUMBA_CACHE_DIR"])]
    for place in places:
        try:
            if any(place.rglob("jit_kernels.*.nbi")):
                return True
        except OSError:
            continue
    return False


def _llvm_cache_files() -> bool:
    """Whether dilconv's disk cache of object code holds any entry."""
    try:
        with os.scandir(_config.get("cache_dir")) as entries:
            return any(entry.is_file() for entry in entries)
    except OSError:
        return False


_ON_DISK: dict[str, Callable[[], bool]] = {"numba": _numba_cache_files, "llvm": _llvm_cache_files}
#: (family, cache directories) found to hold code: not looked for again (a directory
#: scan on every call served by a stand-in cost 0.17 ms here).
_seen_on_disk: set[tuple[str, str, str]] = set()


def warmup_seconds(name: str, spec: ConvSpec, costs: Mapping[str, float]) -> float:
    """Modelled seconds ``name``'s first call on ``spec`` adds to its run: 0 once loaded,
    or once another route on the same runtime is loaded for the dtype (``blocked``,
    ``winograd`` and ``compiled``'s one-channel row loop share llvmlite and the disk
    cache: what is left is a few functions of their own); else
    ``costs[route + "_first_cached"]`` where the disk cache holds code of its kind,
    ``costs[route + "_first_empty"]`` where it does not (the route: see :func:`route`;
    ``compiled`` on one channel loads llvmlite, 0.07 s here, not Numba, 0.65 s).

    Before siblings counted, a program that had run ``winograd`` by name saw
    ``"auto"`` choose ``blocked`` for small 21-channel calls and serve them by
    ``winograd`` call after call, the two modelled within microseconds of each
    other so that the rent never reached the load's cost.
    """
    found = route(name, spec)
    family = RUNTIME[found]
    if any((n, spec.dtype.str) in _ready for n, f in RUNTIME.items() if f == family):
        return 0.0  # (read without the lock: serve() holds it while it asks)
    place = (family, str(_config.get("cache_dir")), os.environ.get("NUMBA_CACHE_DIR", ""))
    cached = place in _seen_on_disk or _ON_DISK[family]()
    if cached:  # entries are added, never taken away while a program runs
        _seen_on_disk.add(place)
    return costs[f"{found}_first_{'cached' if cached else 'empty'}"]


def serve(
    choice: str,
    spec: ConvSpec,
    loaded: list[str],
    estimate: Callable[[str], float],
    costs: Mapping[str, float],
) -> str:
    """The algorithm to run now when the model's ``choice`` may not be loaded yet.

    ``loaded``: the other candidates, every one runnable at once; ``estimate``: the
    model's seconds of each. Returns ``choice`` (recorded as loaded) when it is
    loaded or worth loading now, else the cheapest of ``loaded`` (its extra cost
    over ``choice`` added to ``choice``'s rent).
    """
    if is_ready(choice, spec) or not loaded or _config.get("first_calls") == "wait":
        mark_ready(choice, spec)
        return choice
    settle()
    stand_in = min(loaded, key=estimate)
    rented = estimate(stand_in)
    key = _key(choice, spec)
    with _lock:
        paid = _rent.get(key, 0.0)
        if warmup_seconds(choice, spec, costs) <= rented + paid:
            _ready.add(key)
            _rent.pop(key, None)
            return choice
        _rent[key] = paid + max(rented - estimate(choice), 0.0)
    _local.ticket = (key, time.perf_counter(), rented)
    return stand_in


def settle() -> None:
    """Charge the call this thread just served with a stand-in at its measured time.

    :func:`serve` charges the model's estimate at once; where the stand-in took longer
    than modelled, the difference is added here (called when the call ends, else on
    this thread's next :func:`serve`), so a model that flatters the stand-in cannot
    keep a program renting.
    """
    ticket = getattr(_local, "ticket", None)
    if ticket is None:
        return
    _local.ticket = None
    key, start, modelled = ticket
    extra = time.perf_counter() - start - modelled
    if extra > 0:
        with _lock:
            if key in _rent:
                _rent[key] += extra


def state() -> dict[str, object]:
    """What this process has loaded and the rent paid towards what it has not (for
    ``choose_method(explain=True)`` and tests)."""
    with _lock:
        return {
            "loaded": sorted(f"{n} {d}" for n, d in _ready),
            "rent_s": {f"{n} {d}": round(s, 6) for (n, d), s in _rent.items()},
            "numba_imported": "numba" in sys.modules,
        }


def forget() -> None:
    """Forget what was loaded and rented (tests; machine code stays loaded)."""
    with _lock:
        _ready.clear()
        _rent.clear()
        _seen_on_disk.clear()

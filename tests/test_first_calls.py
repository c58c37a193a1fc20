"""First calls: ``method="auto"`` rents a loaded route until loading its choice pays off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import dilconv
from dilconv import _first_calls, _select
from dilconv._cost import COST
from dilconv._spec import make_spec
from tests.tolerance import assert_close

SRC = str(Path(dilconv.__file__).resolve().parents[1])

#: The issue's script: one 512x512 image, a 3x3 kernel at dilation 4.
SCRIPT = """
import json, sys
import numpy as np
import dilconv
x = np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32)
w = np.random.default_rng(1).standard_normal((3, 3)).astype(np.float32)
y = dilconv.conv2d(x, w, dilation=4, padding="same")
z = dilconv.conv2d(x, w, dilation=4, padding="same", method="direct")
print(json.dumps({
    "numba": "numba" in sys.modules,
    "row_loop": bool(sys.modules["dilconv._native.stencil_kernel"]._FUNCTIONS),
    "diff": float(np.max(np.abs(y - z))),
    "model": dilconv.choose_method(x, w, dilation=4, padding="same"),
}))
"""


def run_script(script: str = SCRIPT, **env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DILCONV_")}
    clean["PYTHONPATH"] = SRC + os.pathsep + clean.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def test_a_fresh_process_first_call_does_not_load_numba() -> None:
    """The model's choice is the compiled loops, but one small call never pays Numba's
    import; the stand-in's answer is right."""
    got = run_script()
    assert got["model"] == "compiled"
    assert got["numba"] is False
    assert got["row_loop"] is False
    assert got["diff"] < 1e-4


def test_wait_loads_the_choice_at_once() -> None:
    """The choice, ``compiled`` on one channel, is LLVM's row loop: it is loaded,
    and Numba is not."""
    got = run_script(DILCONV_FIRST_CALLS="wait")
    assert got["row_loop"] is True
    assert got["numba"] is False
    assert got["diff"] < 1e-4


def test_wait_loads_numba_for_what_the_row_loop_declines() -> None:
    """Depthwise channels run Numba's loops: ``wait`` loads Numba at once for them
    (NHWC, which they read in place: in NCHW the model may prefer ``blocked``'s
    in-place route to moving the arrays)."""
    script = SCRIPT.replace(
        'y = dilconv.conv2d(x, w, dilation=4, padding="same")',
        "y = dilconv.conv2d(np.stack([x, x], -1)[None], np.stack([w, w], -1)[:, :, None],\n"
        '                   groups=2, data_format="NHWC", dilation=4,\n'
        '                   padding="same")[0, :, :, 0]',
    )
    assert script != SCRIPT
    got = run_script(script, DILCONV_FIRST_CALLS="wait")
    assert got["numba"] is True
    assert got["diff"] < 1e-4


@pytest.fixture
def fresh() -> Iterator[None]:
    """This process as if nothing were loaded yet (the machine code stays loaded)."""
    saved = dict(COST)
    _first_calls.forget()
    yield
    COST.clear()
    COST.update(saved)
    _first_calls.forget()


def served(spec: object, calls: int) -> list[str]:
    """What ``auto`` serves ``calls`` calls with, each stand-in taking its modelled time
    (no measured time is charged: the calls are not made)."""
    names = []
    for _ in range(calls):
        names.append(_select.resolve_method("auto", spec))  # type: ignore[arg-type]
        _first_calls._local.ticket = None
    return names


def test_rent_then_buy(fresh: None) -> None:
    """The choice is loaded on the first call whose stand-in time plus the rent paid
    reaches its first-call cost, and from then on every call runs it."""
    spec = make_spec((256, 256), (3, 3), padding="same", dilation=4)
    lowered = spec.lowered()
    choice = _select.cheapest(lowered)
    assert choice == "compiled"
    stand_in = min(
        (n for n in _select.candidates(lowered) if _first_calls.is_ready(n, lowered)),
        key=lambda n: _select.estimate_seconds(n, lowered),
    )
    rented = _select.estimate_seconds(stand_in, lowered)
    rent = rented - _select.estimate_seconds(choice, lowered)
    assert rent > 0
    for key in ("stencil_first_cached", "stencil_first_empty"):
        COST[key] = rented + 4.5 * rent  # paid in full after the fifth call
    assert served(spec, 8) == [stand_in] * 5 + [choice] * 3
    assert _first_calls.is_ready(choice, lowered)
    assert _first_calls.state()["rent_s"] == {}


def test_a_stand_in_slower_than_modelled_is_charged_its_measured_time(fresh: None) -> None:
    spec = make_spec((256, 256), (3, 3), padding="same", dilation=4)
    for key in ("stencil_first_cached", "stencil_first_empty"):
        COST[key] = 1e6
    served(spec, 1)
    (modelled,) = _first_calls.state()["rent_s"].values()  # type: ignore[attr-defined]
    _select.resolve_method("auto", spec)
    time.sleep(0.05)  # the stand-in "runs" 50 ms
    _first_calls.settle()
    (charged,) = _first_calls.state()["rent_s"].values()  # type: ignore[attr-defined]
    choice = _select.estimate_seconds(_select.cheapest(spec.lowered()), spec.lowered())
    assert charged >= modelled + 0.05 - choice - 1e-6  # the stand-in's 50 ms, less the choice's
    _first_calls.settle()  # once only
    assert _first_calls.state()["rent_s"] == {"stencil <f8": charged}


def test_a_long_call_loads_at_once(fresh: None) -> None:
    spec = make_spec((256, 256), (3, 3), padding="same", dilation=4)
    for key in ("stencil_first_cached", "stencil_first_empty"):
        COST[key] = 1e-9
    assert served(spec, 2) == ["compiled", "compiled"]


def test_wait_and_explicit_methods_load(fresh: None) -> None:
    spec = make_spec((256, 256), (3, 3), padding="same", dilation=4)
    for key in ("stencil_first_cached", "stencil_first_empty"):
        COST[key] = 1e6  # never worth it by rent
    assert served(spec, 3)[-1] != "compiled"
    with dilconv.config_context(first_calls="wait"):
        assert served(spec, 1) == ["compiled"]
    _first_calls.forget()
    assert _select.resolve_method("compiled", spec) == "compiled"
    assert served(spec, 1) == ["compiled"]  # the explicit call loaded it


def test_a_sibling_on_the_same_runtime_makes_the_choice_ready(fresh: None) -> None:
    """Once ``winograd`` runs by name, ``"auto"``'s choice of ``blocked`` (the same
    llvmlite runtime and tile loop) is loaded at its first call, however close the
    two are modelled: no call after call served by the sibling, each paying the
    stand-in's bookkeeping."""
    spec = make_spec(
        (1, 32, 32, 21), (3, 3, 21, 21), padding="same", data_format="NHWC",
        dtypes=[np.dtype("f4")],
    )  # fmt: skip
    lowered = spec.lowered()
    if _select.cheapest(lowered) != "blocked" or "winograd" not in _select.candidates(lowered):
        pytest.skip("the model does not choose blocked over an eligible winograd here")
    for key in ("blocked_first_cached", "blocked_first_empty"):
        COST[key] = 1e6  # never worth it by rent
    assert served(spec, 1) != ["blocked"]
    _first_calls.forget()
    for key in ("blocked_first_cached", "blocked_first_empty"):
        COST[key] = 1e6
    _select.resolve_method("winograd", spec)  # run by name: loaded
    assert _first_calls.warmup_seconds("blocked", lowered, COST) == 0.0
    assert served(spec, 2) == ["blocked", "blocked"]
    assert _first_calls.warmup_seconds("compiled", lowered, COST) > 0  # another runtime


def test_dtypes_are_loaded_separately(fresh: None) -> None:
    for key in ("stencil_first_cached", "stencil_first_empty"):
        COST[key] = 1e6
    f32 = make_spec((256, 256), (3, 3), padding="same", dilation=4, dtypes=[np.dtype("f4")])
    f64 = make_spec((256, 256), (3, 3), padding="same", dilation=4, dtypes=[np.dtype("f8")])
    _select.resolve_method("compiled", f32)
    assert served(f32, 1) == ["compiled"]
    assert served(f64, 1) != ["compiled"]


def test_threads_calling_auto_at_once_get_right_answers(fresh: None) -> None:
    """Eight threads on a fresh process state, some renting and some buying, all agree
    with the oracle."""
    for key in ("stencil_first_cached", "stencil_first_empty"):
        COST[key] = 2e-3
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 1, 200, 200)).astype(np.float32)
    w = rng.standard_normal((1, 1, 3, 3)).astype(np.float32)
    expected = dilconv.conv2d(x, w, padding="same", dilation=4, method="direct")
    results: list[np.ndarray] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                results.append(dilconv.conv2d(x, w, padding="same", dilation=4))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 80
    for y in results:
        assert_close(y, expected)
    spec = make_spec(x.shape, w.shape, padding="same", dilation=4, dtypes=[x.dtype]).lowered()
    assert _first_calls.is_ready("compiled", spec)


def test_bad_setting() -> None:
    with pytest.raises(ValueError, match="first_calls must be one of"):
        dilconv.set_config(first_calls="eager")
    with pytest.raises(TypeError, match="first_calls must be a str"):
        dilconv.set_config(first_calls=True)  # type: ignore[arg-type]


def test_one_channel_loads_llvm_and_depthwise_numba(fresh: None) -> None:
    """``compiled`` runs one channel on LLVM's row loop (the ``stencil`` route, priced
    by its own first-call constants and ready once another LLVM route is) and
    depthwise channels on Numba's loops (the ``compiled`` route)."""
    one = make_spec((256, 256), (3, 3), padding="same", dilation=4, dtypes=[np.dtype("f4")])
    depthwise = make_spec((1, 4, 64, 64), (4, 1, 3, 3), padding="same", groups=4,
                          dtypes=[np.dtype("f4")])  # fmt: skip
    assert _first_calls.route("compiled", one.lowered()) == "stencil"
    assert _first_calls.route("compiled", depthwise.lowered()) == "compiled"
    COST.update(stencil_first_cached=0.5, stencil_first_empty=0.5)
    COST.update(compiled_first_cached=7.0, compiled_first_empty=7.0)
    assert _first_calls.warmup_seconds("compiled", one.lowered(), COST) == 0.5
    assert _first_calls.warmup_seconds("compiled", depthwise.lowered(), COST) == 7.0
    many = make_spec((1, 8, 32, 32), (8, 8, 3, 3), padding="same", dtypes=[np.dtype("f4")])
    _select.resolve_method("blocked", many)  # an LLVM route, run by name
    assert _first_calls.warmup_seconds("compiled", one.lowered(), COST) == 0.0
    assert _first_calls.warmup_seconds("compiled", depthwise.lowered(), COST) == 7.0


def test_a_load_without_room_is_served_by_a_loaded_route(
    fresh: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where loading the choice raises MemoryError (too little address space left for
    LLVM), ``"auto"`` serves the call with a loaded route and tries again later."""
    spec = make_spec((256, 256), (3, 3), padding="same", dilation=4)
    COST.update(stencil_first_cached=1e-9, stencil_first_empty=1e-9)  # worth loading
    real_load = _first_calls.load

    def no_room(name: str, spec: object) -> str | None:
        raise MemoryError("no room")

    monkeypatch.setattr(_first_calls, "load", no_room)
    (first,) = served(spec, 1)
    assert first != "compiled"
    assert not _first_calls.is_ready("compiled", spec.lowered())
    monkeypatch.setattr(_first_calls, "load", real_load)
    assert served(spec, 1) == ["compiled"]

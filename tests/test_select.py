"""The cost model and ``method="auto"``: guards, the registry, the model, the stopwatch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

import dilconv
from dilconv import _first_calls, _select
from dilconv._methods import METHODS
from dilconv._spec import make_spec
from tests.strategies import Case, conv_cases


def lowered(x_shape: tuple[int, ...], w_shape: tuple[int, ...], **options: object) -> object:
    return make_spec(x_shape, w_shape, dtypes=[np.dtype(np.float32)], **options).lowered()


def test_every_method_has_a_model_and_a_positive_estimate() -> None:
    spec = lowered((1, 8, 20, 20), (8, 8, 3, 3), padding="same", dilation=2)
    for name in METHODS:
        assert _select.estimate_seconds(name, spec) > 0, name
    with pytest.raises(ValueError, match="no cost model"):
        _select.estimate_seconds("nonexistent", spec)


def test_cost_table_holds_positive_rates() -> None:
    assert all(v > 0 for v in _select.COST.values())


@given(case=conv_cases(dtypes=(np.float32, np.float64, np.int64), max_hw=9))
def test_auto_picks_an_accepted_candidate_within_the_workspace(case: Case) -> None:
    dtypes = [case.x.dtype, case.w.dtype]
    spec = make_spec(case.x.shape, case.w.shape, dtypes=dtypes, **case.options)
    name = _select.resolve_method("auto", spec)
    low = spec.lowered()
    assert name in _select.candidates(low)
    assert name != "direct"
    assert METHODS[name].refusal(low) is None
    assert METHODS[name].workspace_bytes(low) <= dilconv.get_workspace_limit()


def test_integers_never_get_fft() -> None:
    spec = lowered((1, 1, 64, 64), (1, 1, 3, 3), dilation=8)
    int_spec = make_spec((1, 1, 64, 64), (1, 1, 3, 3), dtypes=[np.dtype(np.int64)]).lowered()
    assert "fft" not in _select.candidates(spec)  # never without allow_fft()
    assert "fft" not in _select.candidates(int_spec)


def test_unknown_method_lists_the_registry() -> None:
    spec = make_spec((1, 1, 8, 8), (1, 1, 3, 3))
    with pytest.raises(ValueError, match="tap_gemm") as err:
        _select.resolve_method("fastest", spec)
    assert "'fastest'" in str(err.value)
    with pytest.raises(TypeError, match="method must be a str"):
        _select.resolve_method(3, spec)


def test_a_method_over_the_workspace_is_refused_by_name_and_skipped_by_auto() -> None:
    x_shape, w_shape = (1, 64, 256, 256), (64, 64, 3, 3)
    spec = make_spec(x_shape, w_shape, padding="same", dilation=4, dtypes=[np.dtype(np.float32)])
    with dilconv.workspace_limit(2**20):
        assert METHODS["fft"].workspace_bytes(spec.lowered()) > 2**20
        with pytest.raises(ValueError, match="set_workspace_limit"):
            _select.resolve_method("fft", spec)
        assert "fft" not in _select.candidates(spec.lowered())
        assert _select.resolve_method("auto", spec) in _select.candidates(spec.lowered())


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "dilation", "expected"),
    [
        # one channel, or depthwise: the compiled multiply-adds, whatever the dilation
        ((512, 512), (3, 3), 1, {"compiled"}),
        ((512, 512), (3, 3), 16, {"compiled"}),
        # 64 channels, 3x3: Winograd's 16 products per tile; 21: the register-blocked
        # tiles (too few channels for the transforms to pay), at every dilation
        ((1, 64, 256, 256), (64, 64, 3, 3), 1, {"winograd"}),
        ((1, 64, 256, 256), (64, 64, 5, 5), 1, {"blocked"}),
        ((1, 21, 256, 256), (21, 21, 3, 3), 16, {"blocked"}),
        # thousands of channels, 3x3: Winograd (2.25x fewer products) while the taps
        # that read only padding are few; at d = 18 they are a third, and the
        # register-blocked tiles, which skip them, tie with it
        ((1, 2048, 65, 65), (256, 2048, 3, 3), 6, {"winograd"}),
        ((1, 2048, 65, 65), (256, 2048, 3, 3), 12, {"winograd"}),
        ((1, 2048, 65, 65), (256, 2048, 3, 3), 18, {"winograd", "blocked"}),
        ((1, 2048, 65, 65), (256, 2048, 5, 5), 12, {"blocked", "shift_add", "tap_gemm"}),
    ],
)
def test_model_choices_on_the_benchmark_shapes(
    x_shape: tuple[int, ...], w_shape: tuple[int, ...], dilation: int, expected: set[str]
) -> None:
    spec = make_spec(
        x_shape, w_shape, padding="same", dilation=dilation, dtypes=[np.dtype(np.float32)]
    )
    assert _select.cheapest(spec.lowered()) in expected


def test_model_sends_depthwise_to_the_compiled_loops() -> None:
    spec = lowered((1, 16, 128, 128), (16, 1, 3, 3), padding="same", dilation=4, groups=16)
    assert _select.cheapest(spec) == "compiled"


def test_tutorial_method_cost_grows_with_dilation_and_shift_add_does_not() -> None:
    small = lowered((1, 1, 256, 256), (1, 1, 3, 3), padding="same", dilation=1)
    wide = lowered((1, 1, 256, 256), (1, 1, 3, 3), padding="same", dilation=16)
    grow = _select.estimate_seconds("dilated_kernel", wide) / _select.estimate_seconds(
        "dilated_kernel", small
    )
    flat = _select.estimate_seconds("shift_add", wide) / _select.estimate_seconds(
        "shift_add", small
    )
    assert grow > 50
    assert flat < 1.3
    compiled = _select.estimate_seconds("compiled", wide) / _select.estimate_seconds(
        "compiled", small
    )
    assert compiled < 1.3


@pytest.mark.parametrize("failure", ["missing", "unloadable"])
def test_without_numba_compiled_declines_and_auto_falls_back(
    failure: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dilconv._methods import compiled
    from dilconv._native import compiler, stencil_rows

    # depthwise: Numba's loops (one channel runs LLVM's row loop, which needs no Numba);
    # NHWC, as in NCHW the model may prefer blocked's in-place route to moving the arrays
    spec = make_spec((1, 64, 64, 4), (3, 3, 1, 4), padding="same", dilation=4, groups=4,
                     data_format="NHWC", dtypes=[np.dtype("float32")])  # fmt: skip
    one = make_spec((256, 256), (3, 3), padding="same", dilation=4, dtypes=[np.dtype("float32")])
    assert _select.resolve_method("auto", spec, first_call=False) == "compiled"
    if failure == "missing":
        monkeypatch.setattr(compiled.importlib.util, "find_spec", lambda name: None)
        reason = "Numba is not installed"
    else:

        def broken() -> None:
            raise RuntimeError("cannot cache function: no locator available")

        monkeypatch.setattr(compiled, "_loops", broken)
        reason = "Numba could not be loaded: cannot cache"
    compiled._unavailable.cache_clear()
    compiled._installed.cache_clear()
    compiler.installed.cache_clear()
    stencil_rows.forget()
    _select._cheapest.cache_clear()
    _select._cheapest_nchw.cache_clear()
    _first_calls.forget()
    try:
        with dilconv.config_context(first_calls="wait"):  # tries to load it
            assert _select.resolve_method("auto", spec) != "compiled"
        assert "compiled" not in _select.candidates(spec.lowered())
        with pytest.raises(ValueError, match=reason):
            _select.resolve_method("compiled", spec)
        if failure == "unloadable":  # one channel: the row loop, without Numba
            x = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
            k = np.ones((3, 3), np.float32)
            got = dilconv.conv2d(x, k, padding="same", dilation=4, method="compiled")
            want = dilconv.conv2d(x, k, padding="same", dilation=4, method="direct")
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
            assert _select.resolve_method("auto", one, first_call=False) == "compiled"
    finally:
        monkeypatch.undo()
        compiled._unavailable.cache_clear()
        compiled._installed.cache_clear()
        compiler.installed.cache_clear()
        stencil_rows.forget()
        _select._cheapest.cache_clear()
        _select._cheapest_nchw.cache_clear()
        _first_calls.forget()
    assert compiled.numba_available()


@pytest.mark.parametrize("failure", ["missing", "no target"])
def test_without_llvmlite_blocked_declines_and_auto_falls_back(
    failure: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dilconv._methods import blocked, winograd
    from dilconv._native import compiler, tile_kernel

    # NHWC: in NCHW auto takes blocked's in-place route, which reads no moved copy
    spec = make_spec((1, 64, 64, 64), (3, 3, 64, 64), padding="same", data_format="NHWC",
                     dtypes=[np.dtype("float32")])  # fmt: skip
    assert _select.resolve_method("auto", spec, first_call=False) == "winograd"
    if failure == "missing":
        monkeypatch.setattr(blocked.importlib.util, "find_spec", lambda name: None)
        reason = "llvmlite is not installed"
    else:

        def broken(*args: object) -> None:
            raise RuntimeError("No available targets are compatible with triple")

        monkeypatch.setattr(tile_kernel, "tile_function", broken)
        reason = "llvmlite could not compile for this CPU: No available targets"

    def clear() -> None:
        blocked._unavailable.cache_clear()
        compiler.installed.cache_clear()
        winograd._unavailable.cache_clear()
        _select._cheapest.cache_clear()
        _select._cheapest_nchw.cache_clear()

    clear()
    try:
        for name in ("blocked", "winograd"):  # Winograd's products run on the tile loop
            # the refusal is known once loading was tried (refusals compile nothing)
            with pytest.raises(ValueError, match=reason):
                _select.resolve_method(name, spec)
            assert name not in _select.candidates(spec.lowered())
        assert _select.resolve_method("auto", spec) in _select.candidates(spec.lowered())
    finally:
        monkeypatch.undo()
        clear()
    assert _select.resolve_method("auto", spec, first_call=False) == "winograd"


@pytest.mark.parametrize(
    ("dtype", "reason"), [("int64", "float32 and float64, not int64"), ("float16", None)]
)
def test_blocked_refusals_name_the_reason(dtype: str, reason: str | None) -> None:
    spec = make_spec((1, 4, 9, 9), (4, 4, 3, 3), dtypes=[np.dtype(dtype)])
    got = METHODS["blocked"].refusal(spec.lowered())
    if reason is None:
        assert got is None  # float16 is summed in float32
    else:
        assert got is not None
        assert reason in got
        with pytest.raises(ValueError, match=reason):
            _select.resolve_method("blocked", spec)


@pytest.mark.parametrize(
    ("w_shape", "groups", "dtype", "reason"),
    [
        ((4, 2, 3, 3), 1, "float32", "one input channel per output channel"),
        ((4, 1, 3, 3), 2, "float32", "one input channel per output channel"),
        ((2, 1, 3, 3), 2, "float16", None),  # float16 is summed in float32
    ],
)
def test_compiled_refusals_name_the_reason(
    w_shape: tuple[int, ...], groups: int, dtype: str, reason: str | None
) -> None:
    spec = make_spec((1, 2, 9, 9), w_shape, groups=groups, dtypes=[np.dtype(dtype)])
    got = METHODS["compiled"].refusal(spec.lowered())
    if reason is None:
        assert got is None
    else:
        assert got is not None
        assert reason in got
        with pytest.raises(ValueError, match=reason):
            _select.resolve_method("compiled", spec)


def test_measure_returns_the_fastest_name_and_every_candidate_time() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 24, 24)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    best, times = dilconv.choose_method(x, w, padding="same", dilation=3, measure=True)
    spec = make_spec(x.shape, w.shape, padding="same", dilation=3, dtypes=[x.dtype])
    assert set(times) == set(_select.candidates(spec.lowered()))
    assert best == min(times, key=times.__getitem__)
    assert all(t > 0 for t in times.values())
    plain = dilconv.choose_method(x, w, padding="same", dilation=3)
    assert plain in times
    with pytest.raises(TypeError, match="measure must be a bool"):
        dilconv.choose_method(x, w, measure="yes")


def test_concurrent_threaded_calls_agree_and_restore_blas_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_info

    def blas_threads() -> list[int]:
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = blas_threads()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 96, 96, 8)).astype(np.float32)
    w = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
    opts = {"padding": "same", "dilation": 2, "data_format": "NHWC"}
    expected = dilconv.conv2d(x, w, method="im2col", **opts)
    with ThreadPoolExecutor(4) as pool:
        results = list(
            pool.map(lambda _: dilconv.conv2d(x, w, method="tap_gemm", **opts), range(6))
        )
    for y in results:
        np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    assert blas_threads() == before

"""``winograd`` over volumes: the depth taps' planes side by side
(dilconv._methods._winograd_volume)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import dilconv
from dilconv import _engine_nd
from dilconv._methods import _winograd_volume, winograd
from dilconv._spec import make_spec
from dilconv._spec_nd import make_spec_nd
from tests import oracle_nd
from tests.harness import count_calls
from tests.strategies_nd import CaseN, nd_cases
from tests.tolerance import assert_close

pytestmark = pytest.mark.skipif(
    winograd.refusal(
        make_spec((1, 4, 4, 1), (3, 3, 1, 1), dtypes=[np.float32], data_format="NHWC").lowered()
    )
    is not None,
    reason="llvmlite cannot compile here",
)


@pytest.fixture
def volume_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the calls that took the whole-volume route."""
    return count_calls(monkeypatch, _winograd_volume, "conv")


def _check(case: CaseN, method: str = "winograd") -> np.ndarray:
    """``conv3d`` by ``method`` within the tolerance of the loop oracle (scaled by the
    oracle on magnitudes); the result."""
    got = dilconv.conv3d(case.x, case.w, case.bias, method=method, **case.options)
    want = oracle_nd.conv(case.x, case.w, case.bias, case.spec)
    bias = None if case.bias is None else np.abs(case.bias)
    scale = oracle_nd.conv(np.abs(case.x), np.abs(case.w), bias, case.spec)
    assert_close(got, want.astype(case.spec.out_dtype), magnitude=scale, context=repr(case))
    return got


@settings(max_examples=40)
@given(
    nd_cases(3, modes=("zeros",), hw_kernel=(3, 3), dtypes=(np.float32, np.float64))
)  # fmt: skip
def test_every_volume_equals_the_oracle(case: CaseN) -> None:
    """Any depth, depth stride, dilation and padding, batched or not, either layout:
    the oracle's values, through the whole-volume route wherever it takes the call
    (two or more depth taps read real planes, every output a whole tile's)."""
    assume(case.spec.groups == 1)
    runs: list[int] = []
    real = _winograd_volume.conv
    _winograd_volume.conv = lambda *a: (runs.append(1), real(*a))[1]  # type: ignore[assignment]
    try:
        _check(case)
    finally:
        _winograd_volume.conv = real  # type: ignore[assignment]
    vol = _engine_nd.volume(case.spec)
    batch = case.x.shape[0] if case.x.ndim == 5 else 1
    assert len(runs) == (1 if _engine_nd.fuses_depth(vol, batch) else 0)


@st.composite
def whole_tile_volumes(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """3x3 planes at stride 1 whose every output is a whole tile's (rows and columns
    ``2 d k``, padded by ``d``: even phases), any depth, depth kernel (2-3 taps), depth
    stride, dilation and padding, 1-20 channels each side, either layout and dtype."""
    n, c, o = draw(st.integers(1, 2)), draw(st.integers(1, 20)), draw(st.integers(1, 20))
    taps, sd, dd = draw(st.integers(2, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, wd = 2 * dh * draw(st.integers(1, 3)), 2 * dw * draw(st.integers(1, 3))
    depth = draw(st.integers(1, 7))
    front, back = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    assume(depth + front + back >= dd * (taps - 1) + 1)
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((n, c, depth, h, wd)).astype(dtype)
    w = rng.standard_normal((o, c, taps, 3, 3)).astype(dtype)
    options: dict[str, Any] = {
        "padding": ((front, back), (dh, dh), (dw, dw)),
        "stride": (sd, 1, 1),
        "dilation": (dd, dh, dw),
    }
    if draw(st.booleans()):
        x, w = np.moveaxis(x, 1, -1).copy(), np.moveaxis(w, (0, 1), (-1, -2)).copy()
        options["data_format"] = "NDHWC"
    return x, w, options


@settings(max_examples=40)
@given(whole_tile_volumes())
def test_whole_tile_volumes_take_the_route_and_equal_the_oracle(
    drawn: tuple[np.ndarray, np.ndarray, dict[str, Any]],
) -> None:
    x, w, options = drawn
    runs: list[int] = []
    real = _winograd_volume.conv
    _winograd_volume.conv = lambda *a: (runs.append(1), real(*a))[1]  # type: ignore[assignment]
    try:
        got = dilconv.conv3d(x, w, method="winograd", **options)
    finally:
        _winograd_volume.conv = real  # type: ignore[assignment]
    want = dilconv.conv3d(x, w, method="direct", **options)
    scale = dilconv.conv3d(np.abs(x), np.abs(w), method="direct", **options)
    assert_close(got, want, magnitude=scale, context=f"{x.shape} {w.shape} {options}")
    spec = make_spec_nd(3, x.shape, w.shape, dtypes=[x.dtype], **options)
    taps = len(_engine_nd.volume(spec).depth_taps())
    assert len(runs) == (1 if taps > 1 else 0)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize(
    ("shape", "options"),
    [
        # depth padding: the first and last planes read two taps of three
        ((2, 5, 7, 12, 10), {"padding": "same", "dilation": (1, 2, 1)}),
        # a depth stride and dilation: every output plane reads planes 2 apart
        ((1, 6, 9, 8, 8), {"padding": (2, 1, 1), "stride": (2, 1, 1), "dilation": (2, 1, 1)}),
        # more input channels than one block of the stacked spec (3 x 40)
        ((1, 40, 4, 6, 6), {"padding": 1}),
    ],
)
def test_in_threads_with_edges_and_blocks(
    threads: int, shape: tuple[int, ...], options: dict[str, Any], volume_runs: list[int]
) -> None:
    rng = np.random.default_rng(sum(shape) + threads)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((11, shape[1], 3, 3, 3)).astype(np.float32)
    with dilconv.config_context(threads=threads):
        got = dilconv.conv3d(x, w, method="winograd", **options)
    want = dilconv.conv3d(x, w, method="direct", **options)
    scale = dilconv.conv3d(np.abs(x), np.abs(w), method="direct", **options)
    assert_close(got, want, magnitude=scale)
    assert volume_runs == [1]


def test_outputs_no_whole_tile_covers_go_tap_by_tap(volume_runs: list[int]) -> None:
    """An odd count of outputs in a phase leaves outputs no whole tile covers: the
    volume route declines, and each depth tap is one 2-D call as before."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 4, 5, 7, 9)).astype(np.float64)
    w = rng.standard_normal((3, 4, 3, 3, 3)).astype(np.float64)
    spec = make_spec_nd(3, x.shape, w.shape, padding="same", dtypes=[x.dtype])
    vol = _engine_nd.volume(spec)
    assert not _engine_nd.fuses_depth(vol, 1)
    got = dilconv.conv3d(x, w, padding="same", method="winograd")
    np.testing.assert_allclose(got, dilconv.conv3d(x, w, padding="same", method="direct"),
                               rtol=1e-12, atol=1e-12)  # fmt: skip
    assert volume_runs == []


def test_auto_ranks_a_volume_by_its_stacked_planes() -> None:
    """Where both ``blocked`` and ``winograd`` run every depth tap in one pass, the
    model ranks them on the stack of output planes with every tap's channels."""
    vol = _engine_nd.Volume((64, 64, 64), (3, 3, 3), (1, 1, 1), (2, 2, 2), ((2, 2),) * 3,
                            1, 32, 32, np.dtype(np.float32))  # fmt: skip
    assert _engine_nd.fuses_depth(vol, 1)
    ranked = _engine_nd.ranking_spec(vol, 1)
    assert (ranked.batch, ranked.in_channels, ranked.out_channels) == (64, 96, 32)
    one_tap = _engine_nd.Volume(
        (1, 64, 64),
        (1, 3, 3),
        (1, 1, 1),
        (1, 2, 2),
        ((0, 0), (2, 2), (2, 2)),
        1,
        32,
        32,
        np.dtype(np.float32),
    )
    assert _engine_nd.ranking_spec(one_tap, 1).in_channels == 32


@given(st.sampled_from(["nan", "inf", "huge"]))
def test_auto_with_nan_or_inf_gives_what_direct_gives(kind: str) -> None:
    """Under ``"auto"`` the route is guarded as 2-D Winograd is: a NaN or Inf read (or a
    sum that overflows in the transforms) makes the call run again by a method that
    sums as ``direct`` does."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 16, 6, 12, 12)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3, 3)).astype(np.float32)
    x[0, 3, 2, 5, 5] = {"nan": np.nan, "inf": np.inf, "huge": 3e38}[kind]
    with dilconv.config_context(first_calls="wait"), np.errstate(all="ignore"):
        got = dilconv.conv3d(x, w, padding="same")
        want = dilconv.conv3d(x, w, padding="same", method="direct")
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))


def test_arrays_that_disagree_with_the_plan_never_reach_the_transforms() -> None:
    plane = make_spec((5, 8, 8, 4), (3, 3, 4, 8), padding="same", data_format="NHWC",
                      dtypes=[np.dtype(np.float32)] * 2).lowered()  # fmt: skip
    x, w = np.ones((1, 5, 8, 8, 4), np.float32), np.ones((3, 3, 3, 4, 8), np.float32)
    taps = ((0, 1, 5, 0), (1, 0, 5, 0), (2, 0, 4, 1))
    assert _winograd_volume.conv(x, w, plane, (5, 1), taps, 1).shape == (1, 5, 8, 8, 8)
    with pytest.raises(ValueError, match=r"x: shape \(1, 8, 6, 4\), expected the spec's"):
        _winograd_volume.conv(x[:, :, :, :6], w, plane, (5, 1), taps, 1)
    with pytest.raises(ValueError, match=r"a stack of 5 planes expected, got 4"):
        _winograd_volume.conv(x, w, make_spec((4, 8, 8, 4), (3, 3, 4, 8), padding="same",
                              data_format="NHWC").lowered(), (5, 1), taps, 1)  # fmt: skip

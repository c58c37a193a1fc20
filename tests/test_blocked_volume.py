"""``blocked`` over volumes: every depth tap in one tile loop (dilconv._methods._blocked_volume)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import dilconv
from dilconv import _engine_nd
from dilconv._methods import _blocked_volume, blocked
from dilconv._spec import make_spec
from tests import oracle_nd
from tests.harness import count_calls
from tests.strategies_nd import CaseN, nd_cases

pytestmark = pytest.mark.skipif(
    blocked.refusal(make_spec((1, 1, 4, 4), (1, 1, 1, 1), dtypes=[np.float32]).lowered())
    is not None,
    reason="llvmlite cannot compile here",
)


@pytest.fixture
def volume_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the calls that took the whole-volume route."""
    return count_calls(monkeypatch, _blocked_volume, "conv")


def _integer_case(case: CaseN) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The case's arrays as small integers in float64: every sum exact."""
    rng = np.random.default_rng(abs(hash(case.x.shape)) % 2**32)
    x = rng.integers(-3, 4, case.x.shape).astype(np.float64)
    w = rng.integers(-3, 4, case.w.shape).astype(np.float64)
    b = None if case.bias is None else rng.integers(-3, 4, case.bias.shape).astype(np.float64)
    return x, w, b


@given(nd_cases(3, modes=("zeros",)))
def test_every_depth_tap_in_one_loop_equals_the_oracle(case: CaseN) -> None:
    """Any 3-D shape, stride, dilation, padding, group count and layout, batched or
    not: bit for bit the loop oracle (integers), through the whole-volume route
    wherever two or more depth taps read real planes."""
    x, w, b = _integer_case(case)
    runs: list[int] = []
    real = _blocked_volume.conv
    _blocked_volume.conv = lambda *a: (runs.append(1), real(*a))[1]  # type: ignore[assignment]
    try:
        got = dilconv.conv3d(x, w, b, method="blocked", **case.options)
    finally:
        _blocked_volume.conv = real  # type: ignore[assignment]
    want = oracle_nd.conv(x, w, b, case.spec)
    np.testing.assert_array_equal(got, want.astype(got.dtype))
    vol = _engine_nd.volume(case.spec)
    assert len(runs) == (1 if len(vol.depth_taps()) > 1 else 0)


def test_threads_never_share_an_output_row() -> None:
    """The shares cut the row table where an output row starts, so two threads never
    add into the same row; together they list every (output row, depth tap) once."""
    plane = make_spec((1, 9, 10, 4), (3, 3, 4, 5), padding=1, dtypes=[np.float32],
                      data_format="NHWC").lowered()  # fmt: skip
    taps = ((0, 1, 6, 0), (1, 0, 6, 0), (2, 0, 5, 1))  # depth 6, padding 1 each side
    for threads in (1, 2, 3, 7):
        shares = _blocked_volume.volume_calls(plane, 2, (6, 6, 1), taps, threads).shares
        seen: list[tuple[int, int]] = []
        owners: dict[int, int] = {}
        for k, share in enumerate(shares):
            table = share[0].arguments[share[0].kernel.signature.names.index("rows")].array
            for out_row, weights in zip(table[:, 1], table[:, 4], strict=True):
                assert owners.setdefault(int(out_row), k) == k
                seen.append((int(out_row), int(weights)))
        assert len(seen) == len(set(seen)) == 2 * (5 + 6 + 5) * plane.out_hw[0]


def test_auto_takes_it_once_blocked_is_loaded(volume_runs: list[int]) -> None:
    """``"auto"`` runs the whole volume in one loop where the model picks ``blocked``
    for the stack of output planes and its code is loaded; the result is the oracle's."""
    rng = np.random.default_rng(7)
    x = rng.integers(-3, 4, (1, 24, 6, 20, 20)).astype(np.float32)
    w = rng.integers(-3, 4, (24, 24, 3, 3, 3)).astype(np.float32)
    with dilconv.config_context(first_calls="wait"):
        chosen = dilconv.choose_method(x[:, :, 0], w[:, :, 0], padding="same", dilation=2)
        got = dilconv.conv3d(x, w, padding="same", dilation=2)
    want = dilconv.conv3d(x, w, padding="same", dilation=2, method="direct")
    np.testing.assert_array_equal(got, want)
    if chosen == "blocked":
        assert volume_runs == [1]


def test_one_depth_tap_stays_a_plane_call(volume_runs: list[int]) -> None:
    """A kernel one plane deep (and every 1-D or 2-D call) is one 2-D call as before."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 3, 4, 9, 9)).astype(np.float32)
    w = rng.standard_normal((5, 3, 1, 3, 3)).astype(np.float32)
    dilconv.conv3d(x, w, padding="same", method="blocked")
    assert volume_runs == []


@given(st.integers(1, 3), st.integers(1, 3))
def test_depth_planes_in_padding_stay_zero(stride: int, dilation: int) -> None:
    """Output planes whose every depth tap reads padding are zeros, the rest exact."""
    rng = np.random.default_rng(stride * 10 + dilation)
    x = rng.integers(-3, 4, (1, 2, 2, 5, 5)).astype(np.float64)
    w = rng.integers(-3, 4, (3, 2, 3, 2, 2)).astype(np.float64)
    options = {"padding": ((5, 6), (0, 1), (1, 0)), "stride": (stride, 1, 1),
               "dilation": (dilation, 1, 1)}  # fmt: skip
    got = dilconv.conv3d(x, w, method="blocked", **options)
    np.testing.assert_array_equal(got, dilconv.conv3d(x, w, method="direct", **options))


def test_every_output_is_written_on_memory_that_held_nan() -> None:
    """The result is not zeroed first: each row's first depth tap starts from zero,
    and planes whose every depth tap reads padding are zeroed. On a kept block that
    last held NaN (the result is 4.3 MiB), with depth padding 3 on each side of 4
    planes (the first and last output planes read padding only) and rows and columns
    padded past the kernel's reach: the oracle's values."""
    from dilconv._native import results

    rng = np.random.default_rng(11)
    x = rng.integers(-3, 4, (1, 8, 4, 40, 70)).astype(np.float32)
    w = rng.integers(-3, 4, (40, 8, 3, 3, 3)).astype(np.float32)
    options: dict[str, Any] = {"padding": ((3, 3), (5, 5), (4, 4))}
    shape = (1, 8, 48, 76, 40)  # NDHWC, as the volume loop writes it
    assert np.prod(shape) * 4 >= results.MIN_BYTES
    results.new_result(shape, np.float32).fill(np.nan)  # dropped at once: kept, NaN
    got = dilconv.conv3d(x, w, method="blocked", **options)
    want = dilconv.conv3d(x, w, method="direct", **options)
    assert got.shape == (1, 40, 8, 48, 76)
    np.testing.assert_array_equal(got, want)
    assert not got[:, :, [0, 7]].any()
    assert not got[:, :, :, :3].any()
    assert got[:, :, 1:7].any()


def test_arrays_that_disagree_with_the_plan_never_reach_the_loop() -> None:
    """The volume loop reads planes and weights by address: planes of the wrong size,
    or depth taps past the volume or the weights, are refused before it runs."""
    plane = make_spec((1, 9, 9, 4), (3, 3, 4, 8), padding="same", data_format="NHWC",
                      dtypes=[np.dtype(np.float32)] * 2)  # fmt: skip
    x, w = np.ones((1, 5, 9, 9, 4), np.float32), np.ones((3, 3, 3, 4, 8), np.float32)
    taps = ((0, 1, 5, 0), (1, 0, 5, 0), (2, 0, 4, 1))
    assert _blocked_volume.conv(x, w, plane, (5, 1), taps, 1).shape == (1, 5, 9, 9, 8)
    with pytest.raises(ValueError, match=r"x: shape \(1, 9, 8, 4\), expected the spec's"):
        _blocked_volume.conv(x[:, :, :, :8], w, plane, (5, 1), taps, 1)
    with pytest.raises(ValueError, match=r"reads planes 1\.\.5, x has 5 planes"):
        _blocked_volume.conv(x, w, plane, (5, 1), ((2, 0, 5, 1),), 1)
    with pytest.raises(ValueError, match=r"depth tap 3 for outputs \[0, 4\)"):
        _blocked_volume.conv(x, w, plane, (5, 1), ((3, 0, 4, 1),), 1)

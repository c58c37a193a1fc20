"""Every algorithm equals the loop oracle over the whole argument space.

Winograd's own property tests, over the 3x3 stride-1 calls it takes, are in
``test_winograd.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

import dilconv
from dilconv._methods import METHODS
from tests.strategies import Case, conv_cases
from tests.tolerance import assert_close

FAST_METHODS = [name for name in METHODS if name != "direct"]
#: Algorithms that take every spec; the others are tested on the specs they take.
GENERAL_METHODS = [name for name in FAST_METHODS if name not in ("compiled", "blocked", "winograd")]
#: Algorithms that take every spec with floating-point values.
FLOAT_METHODS = [*GENERAL_METHODS, "blocked"]


def magnitude(case: Case) -> np.ndarray:
    """The same call on absolute values: the scale that rounding errors are measured at."""
    bias = None if case.bias is None else np.abs(case.bias)
    return dilconv.conv2d(
        np.abs(case.x).astype(np.float64),
        np.abs(case.w).astype(np.float64),
        bias,
        method="direct",
        **case.options,
    )


def check_against_oracle(case: Case, method: str) -> None:
    expected = dilconv.conv2d(case.x, case.w, case.bias, method="direct", **case.options)
    actual = dilconv.conv2d(case.x, case.w, case.bias, method=method, **case.options)
    dtype = (
        np.result_type(case.x, case.w)
        if case.bias is None
        else np.result_type(case.x, case.w, case.bias)
    )
    scale = magnitude(case)
    if method == "fft":  # its error follows the call's largest values (dilconv._methods.fft)
        scale = np.full_like(scale, scale.max(initial=0.0))
    assert_close(
        actual,
        expected,
        dtype=np.int64 if dtype.kind in "iu" else dtype,
        magnitude=scale,
        context=f"method={method} {case!r}",
    )


@pytest.mark.parametrize("method", FLOAT_METHODS)
@settings(max_examples=200)
@given(case=conv_cases(dtypes=(np.float64,)))
def test_method_equals_oracle_float64(method: str, case: Case) -> None:
    check_against_oracle(case, method)


@pytest.mark.parametrize("method", FLOAT_METHODS)
@given(case=conv_cases(dtypes=(np.float32, np.float16), max_hw=9))
def test_method_equals_oracle_low_precision(method: str, case: Case) -> None:
    check_against_oracle(case, method)


@pytest.mark.parametrize("method", [m for m in GENERAL_METHODS if m != "fft"])
@given(case=conv_cases(dtypes=(np.int64, np.int32, np.int8), max_hw=9))
def test_integer_methods_are_exact(method: str, case: Case) -> None:
    check_against_oracle(case, method)


@settings(max_examples=200)
@given(case=conv_cases(dtypes=(np.float64,), one_per_group=True))
def test_compiled_equals_oracle_float64(case: Case) -> None:
    check_against_oracle(case, "compiled")


@given(case=conv_cases(dtypes=(np.float32, np.float16), max_hw=9, one_per_group=True))
def test_compiled_equals_oracle_low_precision(case: Case) -> None:
    check_against_oracle(case, "compiled")


@given(case=conv_cases(dtypes=(np.int64, np.int32, np.int8), max_hw=9, one_per_group=True))
def test_compiled_is_exact_on_integers(case: Case) -> None:
    check_against_oracle(case, "compiled")


@pytest.mark.parametrize("dilation", [1, 2, 5, 40])
@pytest.mark.parametrize("stride", [1, 3])
def test_compiled_on_wide_rows(dilation: int, stride: int) -> None:
    """Rows long enough for the vector loops and their remainders, taps past both edges."""
    rng = np.random.default_rng(dilation * stride)
    x = rng.standard_normal((2, 1, 19, 131))
    w = rng.standard_normal((1, 1, 3, 5))
    for padding in ("same", "full", 0, ((7, 0), (0, 60))):
        if padding == "same" and stride > 1:
            continue
        options = {"stride": stride, "dilation": dilation, "padding": padding}
        try:
            expected = dilconv.conv2d(x, w, method="direct", **options)
        except ValueError:  # the dilated kernel is wider than the padded input
            continue
        actual = dilconv.conv2d(x, w, method="compiled", **options)
        assert_close(actual, expected, dtype=np.float64, context=f"{options}")


@pytest.mark.parametrize("dilation", [(1, 1), (2, 3), (4, 40), (3, 70)])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64, np.int8])
def test_compiled_3x3_in_one_pass(dilation: tuple[int, int], stride: int, dtype: type) -> None:
    """The one-pass 3x3 rows: columns where every tap reads input, the edge columns
    where some read padding, rows near the border (not one pass) and rows of a
    dilation as wide as the image (no column with all nine taps)."""
    rng = np.random.default_rng(sum(dilation) * stride)
    x = rng.integers(-9, 10, (2, 1, 23, 141)).astype(dtype)
    w = rng.integers(-3, 4, (1, 1, 3, 3)).astype(dtype)
    for padding in ("same", "full", 0, ((5, 0), (0, 80)), ((0, 2), (70, 1))):
        if padding == "same" and stride > 1:
            continue
        options = {"stride": (stride, 1), "dilation": dilation, "padding": padding}
        try:
            expected = dilconv.conv2d(x, w, method="direct", **options)
        except ValueError:  # the dilated kernel is wider than the padded input
            continue
        actual = dilconv.conv2d(x, w, method="compiled", **options)
        # small integers: every method is exact in every dtype here
        np.testing.assert_array_equal(actual, expected, err_msg=f"{options}")


@given(case=conv_cases(dtypes=(np.float32, np.float64)))
def test_auto_equals_oracle(case: Case) -> None:
    check_against_oracle(case, "auto")


def test_oracle_by_hand() -> None:
    """The oracle itself, on a case small enough to check on paper."""
    x = np.arange(16).reshape(4, 4)
    w = np.array([[1, 0], [0, -1]])
    # dilation 2: output (i, j) = x[i, j] - x[i + 2, j + 2]
    y = dilconv.conv2d(x, w, dilation=2, method="direct")
    np.testing.assert_array_equal(y, [[-10, -10], [-10, -10]])
    # stride 2, padding 1: output (i, j) = xp[2i, 2j] - xp[2i + 1, 2j + 1]
    y = dilconv.conv2d(x, w, stride=2, padding=1, method="direct")
    np.testing.assert_array_equal(y, [[0, -2, 0], [-8, -5, 7], [0, 13, 15]])


@pytest.mark.parametrize("name", list(METHODS))
def test_arrays_smaller_than_their_spec_never_reach_an_algorithm(name: str) -> None:
    """Internal callers hand the registry arrays and a spec; where the two disagree
    (an 8x8 image under a 64x64 spec) the machine code would read past the array."""
    from dilconv._spec import make_spec

    channels = 1 if name == "compiled" else 16
    spec = make_spec((1, 64, 64, channels), (3, 3, channels, channels), padding="same",
                     data_format="NHWC", dtypes=[np.dtype(np.float32)] * 2)  # fmt: skip
    x = np.ones((1, 64, 64, channels), np.float32)
    w = np.ones((3, 3, channels, channels), np.float32)
    with pytest.raises(ValueError, match=r"x: shape \(1, 8, 8, \d+\), expected the spec's"):
        METHODS[name].conv(x[:, :8, :8], w, spec)
    with pytest.raises(ValueError, match=r"w: shape \(1, 1, \d+, \d+\), expected the spec's"):
        METHODS[name].conv(x, w[:1, :1], spec)


def test_the_channels_first_routes_check_their_arrays_too() -> None:
    from dilconv._methods import agree
    from dilconv._spec import make_spec

    spec = make_spec((2, 8, 20, 20), (16, 8, 3, 3), padding="same").lowered()
    agree(np.ones((2, 8, 20, 20)), np.ones((3, 3, 8, 16)), spec, channels_first=True)
    with pytest.raises(
        ValueError, match=r"x: shape \(2, 20, 20, 8\), expected the spec's \(2, 8, 20, 20\)"
    ):
        agree(np.ones((2, 20, 20, 8)), np.ones((3, 3, 8, 16)), spec, channels_first=True)

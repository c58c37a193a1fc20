"""conv2d_transpose and atrous_conv2d_transpose: adjointness, the oracle, shapes, parity."""

from __future__ import annotations

import dataclasses
from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import assume, given

import dilconv
from dilconv._methods import METHODS
from dilconv._spec import make_spec
from dilconv._transpose import TRANSPOSE_METHODS, phase, scatter
from tests.extras import import_peer
from tests.strategies import Case, conv_cases
from tests.tolerance import assert_close


def transpose_options(case: Case) -> tuple[np.ndarray, dict[str, Any]]:
    """The conv2d_transpose call that is the adjoint of this conv2d call (zero padding)."""
    opts = case.options
    spec = make_spec(case.x.shape, case.w.shape, **opts)
    w = case.w
    if opts["flip"]:
        w = (
            w[::-1, ::-1]
            if w.ndim == 2
            else (w[:, :, ::-1, ::-1] if opts["data_format"] == "NCHW" else w[::-1, ::-1])
        )
    return w, {
        "stride": opts["stride"],
        "padding": spec.pad,
        "dilation": opts["dilation"],
        "groups": opts["groups"],
        "data_format": opts["data_format"],
        "output_size": spec.in_hw,
    }


@given(case=conv_cases(dtypes=(np.float64,), modes=("zeros",), bias=False))
def test_adjoint_identity(case: Case) -> None:
    """<conv2d(x, w), y> == <x, conv2d_transpose(y, w)> for the same options."""
    y = dilconv.conv2d(case.x, case.w, **case.options)
    r = np.random.default_rng(0).standard_normal(y.shape)
    w, topts = transpose_options(case)
    xt = dilconv.conv2d_transpose(r, w, **topts)
    assert xt.shape == case.x.shape, case
    lhs, rhs = np.sum(y * r), np.sum(case.x * xt)
    scale = np.sum(np.abs(case.x) * dilconv.conv2d_transpose(np.abs(r), np.abs(w), **topts))
    assert_close(np.array(rhs), np.array(lhs), magnitude=np.array(scale), context=repr(case))


FAST = [m for m in TRANSPOSE_METHODS if m != "direct"] + ["scatter/per-tap"]


@pytest.mark.parametrize("method", FAST)
@given(case=conv_cases(dtypes=(np.float64, np.float32, np.float16), modes=("zeros",), max_hw=8))
def test_methods_equal_oracle(method: str, case: Case) -> None:
    """Every method equals the loop oracle; "scatter/per-tap" is scatter with one product
    per tap (its path for many result channels) instead of one shared product."""
    if method == "scatter/per-tap":
        with mock.patch.object(scatter, "COMBINE_MAX_CHANNELS", 0):
            check_method(case, "scatter")
    else:
        check_method(case, method)


def check_method(case: Case, method: str) -> None:
    y = dilconv.conv2d(case.x.astype(np.float64), case.w.astype(np.float64), **case.options)
    r = np.random.default_rng(1).standard_normal(y.shape).astype(case.x.dtype)
    w, topts = transpose_options(case)
    if method == "correlate":  # stride 1 only: the adjoint of the same call at stride 1
        topts = {k: v for k, v in topts.items() if k != "output_size"}
        topts["stride"] = 1
    if method == "phase":  # only where the stride divides the dilation
        spec = make_spec(case.x.shape, case.w.shape, **case.options).lowered()
        assume(phase.refusal(spec) is None)
    b = case.bias
    try:
        slow = dilconv.conv2d_transpose(
            r.astype(np.float64), w.astype(np.float64), None, method="direct", **topts
        )
    except ValueError:
        if method != "correlate":
            raise
        assume(False)  # at stride 1 these pads crop the whole result away
        raise
    fast = dilconv.conv2d_transpose(r, w, None, method=method, **topts)
    mag = dilconv.conv2d_transpose(
        np.abs(r).astype(np.float64), np.abs(w).astype(np.float64), method="direct", **topts
    )
    assert_close(fast, slow.astype(case.x.dtype), magnitude=mag, context=repr(case))
    if b is not None and w.ndim == 4:  # a bias has one entry per output channel
        c_out = (
            case.x.shape[1 if topts["data_format"] == "NCHW" else -1]
            if case.x.ndim == 4
            else (case.x.shape[0 if topts["data_format"] == "NCHW" else -1])
        )
        bias = np.arange(c_out, dtype=case.x.dtype)
        with_bias = dilconv.conv2d_transpose(r, w, bias, method=method, **topts)
        axis = (1 if case.x.ndim == 4 else 0) if topts["data_format"] == "NCHW" else -1
        shape = [1] * fast.ndim
        shape[axis] = c_out
        assert_close(with_bias, fast + bias.reshape(shape), magnitude=mag + c_out)


@given(case=conv_cases(dtypes=(np.int64, np.int32, np.int8), modes=("zeros",), max_hw=8))
def test_integers_are_exact(case: Case) -> None:
    y = dilconv.conv2d(case.x, case.w, **case.options)
    r = np.random.default_rng(2).integers(-5, 6, y.shape)
    w, topts = transpose_options(case)
    fast = dilconv.conv2d_transpose(r, w, **topts)
    assert fast.dtype == np.int64
    np.testing.assert_array_equal(fast, dilconv.conv2d_transpose(r, w, method="direct", **topts))


def test_by_hand() -> None:
    """Stride 2 spreads the input out; dilation 2 spreads each tap's copy."""
    x = np.array([[1, 2], [3, 4]])
    np.testing.assert_array_equal(
        dilconv.conv2d_transpose(x, np.array([[1, 10]]), stride=2),
        [[1, 10, 2, 20], [0, 0, 0, 0], [3, 30, 4, 40]],
    )
    np.testing.assert_array_equal(
        dilconv.conv2d_transpose(x, np.array([[1, 10]]), dilation=2),
        [[1, 2, 10, 20], [3, 4, 30, 40]],
    )
    # padding crops the full result; output_padding adds a row and a column at the end
    np.testing.assert_array_equal(
        dilconv.conv2d_transpose(
            x, np.ones((1, 1), int), stride=2, padding=((0, 0), (1, 0)), output_padding=1
        ),
        [[0, 2, 0], [0, 0, 0], [0, 4, 0], [0, 0, 0]],
    )


# --- output sizes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, (7, 7)),  # (5 - 1) + 3
        ({"stride": 2}, (11, 11)),
        ({"stride": 2, "padding": 1, "output_padding": 1}, (10, 10)),
        ({"stride": 2, "dilation": 3, "padding": (1, 2)}, (13, 11)),
        ({"stride": 1, "dilation": 3, "output_padding": 2}, (13, 13)),  # op < max(s, d)
        ({"stride": 3, "padding": "same"}, (15, 15)),  # TensorFlow: i * s
        ({"stride": 3, "padding": "valid"}, (15, 15)),  # (i - 1) s + k + max(s - k, 0)
        ({"stride": 2, "padding": "valid", "dilation": 2}, (13, 13)),
        ({"stride": 2, "padding": "same", "output_size": (9, 10)}, (9, 10)),
        ({"stride": 2, "padding": 1, "output_size": (10, 9)}, (10, 9)),
        ({"stride": 2, "dilation": 4, "padding": 1, "output_size": (16, 18)}, (16, 18)),
    ],
)
def test_output_shape(kwargs: dict[str, Any], expected: tuple[int, int]) -> None:
    y = dilconv.conv2d_transpose(np.ones((1, 2, 5, 5)), np.ones((2, 3, 3, 3)), **kwargs)
    assert y.shape == (1, 3, *expected)
    # and the forward convolution of that shape gives back the input's shape (or more rows
    # when output_padding reaches past the stride)
    fwd = {k: v for k, v in kwargs.items() if k in ("stride", "padding", "dilation")}
    back = dilconv.output_shape(y.shape, (2, 3, 3, 3), **fwd)
    assert back[2] >= 5
    assert back[3] >= 5


@pytest.mark.parametrize("padding", [0, 1, 3, "same", "valid"])
@pytest.mark.parametrize(("stride", "dilation"), [(1, 1), (2, 1), (3, 2), (1, 3), (2, 4)])
def test_output_size_reaches_exactly_its_range(padding: Any, stride: int, dilation: int) -> None:
    """Every size in the reported range works, and the sizes just outside are refused."""
    x, w = np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3))
    opts = {"stride": stride, "dilation": dilation, "padding": padding}
    with pytest.raises(ValueError, match=r"output_size=\(1, 1\) cannot be reached") as info:
        dilconv.conv2d_transpose(x, w, output_size=(1, 1), **opts)
    lo, hi = (
        int(v) for v in info.value.args[0].split("height must be in [")[1].split("]")[0].split(", ")
    )
    for size in range(max(lo, 1), hi + 1):
        y = dilconv.conv2d_transpose(x, w, output_size=(size, size), **opts)
        assert y.shape[2:] == (size, size)
    for size in (lo - 1, hi + 1):
        if size >= 2:
            with pytest.raises(ValueError, match="cannot be reached"):
                dilconv.conv2d_transpose(x, w, output_size=(size, size), **opts)
    if isinstance(padding, int):
        assert hi - lo + 1 == max(stride, dilation)


def test_default_sizes_agree_with_torch_rule() -> None:
    """PyTorch's formula (i - 1) s - 2p + d (k - 1) + op + 1 over a grid."""
    for i, k, s, d, p in np.ndindex(4, 4, 3, 3, 3):
        i, k, s, d = i + 1, k + 1, s + 1, d + 1
        for op in range(max(s, d)):
            size = (i - 1) * s - 2 * p + d * (k - 1) + op + 1
            if size < 1:
                continue
            y = dilconv.conv2d_transpose(
                np.ones((i, i)), np.ones((k, k)), stride=s, dilation=d, padding=p, output_padding=op
            )
            assert y.shape == (size, size)


# --- parity with the frameworks ---------------------------------------------------------------


@pytest.mark.peers
@pytest.mark.parametrize(
    "kwargs",
    [
        {"stride": 2, "dilation": 2},
        {"stride": 2, "dilation": 3, "padding": 2, "output_padding": 2, "groups": 2},
        {"stride": (3, 1), "dilation": (1, 2), "padding": (1, 0), "output_padding": (2, 1)},
        {"stride": 1, "dilation": 4, "padding": 3, "output_padding": 3, "groups": 4},
    ],
)
def test_matches_torch(kwargs: dict[str, Any]) -> None:
    torch = import_peer("torch")
    rng = np.random.default_rng(3)
    groups = kwargs.get("groups", 1)
    x = rng.standard_normal((2, 4, 6, 7))
    w = rng.standard_normal((4, 6 // groups if groups != 4 else 2, 3, 2))
    b = rng.standard_normal(w.shape[1] * groups)
    expected = torch.nn.functional.conv_transpose2d(
        torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), **kwargs
    ).numpy()
    got = dilconv.conv2d_transpose(x, w, b, **kwargs)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-12)
    nhwc = dilconv.conv2d_transpose(
        x.transpose(0, 2, 3, 1), w.transpose(2, 3, 1, 0), b, data_format="NHWC", **kwargs
    )
    np.testing.assert_allclose(nhwc.transpose(0, 3, 1, 2), expected, atol=1e-12)


@pytest.mark.peers
def test_matches_tensorflow() -> None:
    tf = import_peer("tensorflow")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 5, 6, 3)).astype(np.float32)
    f = rng.standard_normal((3, 2, 4, 3)).astype(np.float32)
    for padding, size in (("SAME", (9, 12)), ("SAME", (10, 11)), ("VALID", (11, 12))):
        expected = tf.nn.conv2d_transpose(x, f, (2, *size, 4), strides=2, padding=padding).numpy()
        got = dilconv.conv2d_transpose(
            x, f, stride=2, padding=padding.lower(), data_format="NHWC", output_size=size
        )
        assert_close(got, expected, magnitude=np.full(expected.shape, 10.0), context=padding)
    # without output_size: Keras' default sizes
    assert dilconv.conv2d_transpose(x, f, stride=2, padding="same", data_format="NHWC").shape == (
        2,
        10,
        12,
        4,
    )
    for rate, padding in ((2, "SAME"), (3, "VALID"), (1, "SAME")):
        keff = (rate * 2 + 1, rate * 1 + 1)
        size = (5, 6) if padding == "SAME" else (5 + keff[0] - 1, 6 + keff[1] - 1)
        expected = tf.nn.atrous_conv2d_transpose(x, f, (2, *size, 4), rate, padding).numpy()
        got = dilconv.atrous_conv2d_transpose(x, f, (2, *size, 4), rate, padding)
        assert_close(got, expected, magnitude=np.full(expected.shape, 10.0), context=padding)


def test_atrous_transpose_is_adjoint_of_atrous_conv() -> None:
    rng = np.random.default_rng(5)
    z = rng.standard_normal((1, 9, 8, 2))
    f = rng.standard_normal((3, 3, 2, 4))  # forward HWIO: 2 -> 4
    for padding in ("SAME", "VALID"):
        y = dilconv.atrous_conv2d(z, f, 2, padding)
        r = rng.standard_normal(y.shape)
        back = dilconv.atrous_conv2d_transpose(r, f, z.shape, 2, padding)
        assert back.shape == z.shape
        np.testing.assert_allclose(np.sum(back * z), np.sum(y * r), rtol=1e-12)


# --- dtypes ----------------------------------------------------------------------------------


def test_dtypes() -> None:
    x16, w16 = np.ones((1, 2, 3, 3), np.float16), np.ones((2, 2, 3, 3), np.float16)
    assert dilconv.conv2d_transpose(x16, w16).dtype == np.float16
    assert dilconv.conv2d_transpose(x16, w16.astype(np.float32)).dtype == np.float32
    assert dilconv.conv2d_transpose(x16.astype(np.int8), w16.astype(np.int16)).dtype == np.int64
    # float16 accumulates in float32: 2048 * 1 + 1 terms would stall at 2048 in float16
    big = dilconv.conv2d_transpose(
        np.ones((1, 2049, 1, 1), np.float16), np.ones((2049, 1, 1, 1), np.float16) / 1024
    )
    assert float(big[0, 0, 0, 0]) == pytest.approx(2049 / 1024, rel=1e-3)


# --- bad input -------------------------------------------------------------------------------

X, W = np.ones((1, 4, 5, 5)), np.ones((4, 2, 3, 3))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"output_padding": 2, "stride": 2},
            ValueError,
            r"output_padding must be smaller than max\(stride, dilation\) = 2 along H, "
            r"got output_padding=2",
        ),
        (
            {"output_padding": (0, 1)},
            ValueError,
            r"smaller than max\(stride, dilation\) = 1 along W",
        ),
        ({"output_padding": -1}, ValueError, r"output_padding must be >= 0, got -1"),
        ({"output_padding": 1.5}, TypeError, r"output_padding must be an int, got 1.5"),
        (
            {"padding": "same", "stride": 2, "output_padding": 1},
            ValueError,
            r"output_padding applies to explicit padding; with padding='same' choose the size with "
            r"output_size",
        ),
        (
            {"padding": "full"},
            ValueError,
            r"'same' or 'valid' for a transposed convolution, got 'full'",
        ),
        ({"padding": "half"}, ValueError, r"padding must be .* got 'half'"),
        (
            {"output_size": (3, 3)},
            ValueError,
            r"output_size=\(3, 3\) cannot be reached: .* height must be in \[7, 7\] "
            r"and the width in \[7, 7\]",
        ),
        (
            {"output_size": (8, 7), "stride": 2, "padding": "same"},
            ValueError,
            r"height must be in \[9, 10\]",
        ),
        ({"output_size": 7.0}, TypeError, r"output_size must be an int, got 7.0"),
        (
            {"output_size": (11, 11), "stride": 2, "output_padding": 1},
            ValueError,
            r"give output_padding or output_size, not both",
        ),
        ({"padding": 5}, ValueError, r"the transposed output would be -3x-3: padding=5 crops more"),
        ({"groups": 3}, ValueError, r"groups=3 must divide the input channels, got 4 channels"),
        ({"stride": 0}, ValueError, r"stride must be >= 1, got 0"),
        ({"dilation": (1, 2, 3)}, ValueError, r"dilation must be an int or a pair"),
        ({"data_format": "CHWN"}, ValueError, r"data_format must be one of"),
        (
            {"method": "fft"},
            ValueError,
            r"method must be 'auto' or one of \['correlate', 'direct', 'phase', 'scatter'\]",
        ),
        ({"method": None}, TypeError, r"method must be a str, got None"),
        (
            {"method": "correlate", "stride": 2},
            ValueError,
            r"'correlate' cannot compute this call: needs stride 1",
        ),
        (
            {"method": "phase", "stride": 2, "dilation": 3},
            ValueError,
            r"method='phase' cannot compute this call: the dilation \(3, 3\) is not a multiple",
        ),
    ],
)
def test_bad_options(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        dilconv.conv2d_transpose(X, W, **kwargs)


@pytest.mark.parametrize(
    ("x", "w", "bias", "kwargs", "error", "match"),
    [
        (
            X,
            np.ones((3, 2, 3, 3)),
            None,
            {},
            ValueError,
            r"w shape \(3, 2, 3, 3\) has 3 input channels \(its first axis\); x has 4 channels",
        ),
        (
            X.transpose(0, 2, 3, 1),
            np.ones((3, 3, 2, 3)),
            None,
            {"data_format": "NHWC"},
            ValueError,
            r"has 3 input channels \(its last axis\); x has 4 channels",
        ),
        (
            X,
            np.ones((4, 2, 3)),
            None,
            {},
            ValueError,
            r"w must be 4-D \(C_in, C_out/groups, kh, kw\) for NCHW input, got shape \(4, 2, 3\)",
        ),
        (np.ones((5, 5)), W, None, {}, ValueError, r"w must be 2-D \(kh, kw\) when x is 2-D"),
        (
            np.ones((5, 5)),
            np.ones((3, 3)),
            None,
            {"groups": 2},
            ValueError,
            r"groups must be 1 for 2-D input, got 2",
        ),
        (np.ones((1, 1, 4, 5, 5)), W, None, {}, ValueError, r"x must be 2-D \(H, W\), 3-D or 4-D"),
        (X, W, np.ones(3), {}, ValueError, r"bias must have shape \(2,\), got \(3,\)"),
        (X, W, np.ones(2), {"groups": 2}, ValueError, r"bias must have shape \(4,\), got \(2,\)"),
        (X.astype(complex), W, None, {}, TypeError, r"x has complex dtype"),
        (X, W.astype(bool), None, {}, TypeError, r"w has dtype bool"),
        (np.ones((1, 4, 0, 5)), W, None, {}, ValueError, r"x must have no zero-size dimension"),
    ],
)
def test_bad_arrays(
    x: Any, w: Any, bias: Any, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        dilconv.conv2d_transpose(x, w, bias, **kwargs)


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (
            ((1, 9, 9, 2), 2, "SAME"),
            ValueError,
            r"output_shape channel count 2 must equal filters' output channel count 1",
        ),
        (((2, 9, 9, 1), 2, "SAME"), ValueError, r"output_shape batch 2 must equal value's batch 1"),
        (((1, 9, 9), 2, "SAME"), ValueError, r"output_shape must have 4 entries"),
        (((1, 10, 9, 1), 2, "SAME"), ValueError, r"output_size=\(10, 9\) cannot be reached"),
        (((1, 9, 9, 1), 0, "SAME"), ValueError, r"rate must be >= 1, got 0"),
        (((1, 9, 9, 1), 2, "HALF"), ValueError, r"padding must be 'SAME' or 'VALID', got 'HALF'"),
        (("1, 9, 9, 1", 2, "SAME"), TypeError, r"output_shape must be a tuple of ints"),
    ],
)
def test_atrous_transpose_bad_input(args: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        dilconv.atrous_conv2d_transpose(np.ones((1, 9, 9, 2)), np.ones((3, 3, 1, 2)), *args)


@pytest.mark.parametrize(
    ("stride", "dilation", "padding"),
    [(2, 2, "same"), (2, 4, 3), ((3, 2), (6, 4), ((4, 0), (1, 5))), (3, 3, "valid"), (2, 2, 0)],
)
def test_phase_on_strides_that_divide_the_dilation(
    stride: Any, dilation: Any, padding: Any
) -> None:
    """The single-phase method against the oracle, with groups and output padding,
    and "auto" choosing it."""
    rng = np.random.default_rng(7)
    g = rng.standard_normal((2, 9, 11, 6))
    opts = {"stride": stride, "dilation": dilation, "padding": padding, "data_format": "NHWC"}
    ran = 0
    for extra, w_shape in (({}, (3, 3, 4, 6)), ({"groups": 2, "output_padding": 1}, (3, 3, 2, 6))):
        call = {**opts, **extra}
        w = rng.standard_normal(w_shape)
        try:
            slow = dilconv.conv2d_transpose(g, w, method="direct", **call)
        except ValueError:  # an output_padding this call does not allow
            continue
        # "wait": every "auto", "phase"'s inner ones too, runs the model's choice,
        # not a stand-in that sums in another order while the choice loads
        with dilconv.config_context(first_calls="wait"):
            fast = dilconv.conv2d_transpose(g, w, method="phase", **call)
            chosen = dilconv.conv2d_transpose(g, w, **call)
        assert_close(fast, slow, context=f"{call}")
        np.testing.assert_array_equal(chosen, fast)
        ran += 1
    assert ran >= 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_phase_computes_whole_tiles_and_crops(dtype: Any) -> None:
    """Where Winograd runs the phase's correlation and the phase has an odd size, the
    correlation computes one more row and column (whole tiles, no direct outputs)
    and the phase keeps the others: the oracle's result, a strided write of the
    first 33x33 outputs."""
    from dilconv._methods import winograd
    from dilconv._transpose import correlate

    rng = np.random.default_rng(11)
    g = rng.standard_normal((2, 33, 33, 64)).astype(dtype)
    w = (rng.standard_normal((3, 3, 64, 64)) / 24).astype(dtype)
    call = {"stride": 2, "dilation": 2, "padding": "same", "data_format": "NHWC"}
    spec = _transposed_spec(g.shape, w.shape, dtype, stride=2, dilation=2, padding="same")
    inner, _ = phase.phase_spec(spec.lowered())
    correlation = correlate.adjoint_spec(inner)[0]
    assert winograd.layout(correlation).single_rows == (32,)
    extended = correlate.whole_tiles(correlation)
    assert extended.out_hw == (34, 34)
    assert extended.pad == ((1, 2), (1, 2))
    assert not winograd.layout(extended).single_rows
    assert not winograd.layout(extended).single_cols
    seen: list[Any] = []
    registered = METHODS["winograd"]

    def recording(x: np.ndarray, w: np.ndarray, s: Any) -> np.ndarray:
        seen.append(s)
        return registered.conv(x, w, s)

    with mock.patch.dict(METHODS, {"winograd": dataclasses.replace(registered, conv=recording)}):
        with dilconv.config_context(first_calls="wait"):
            fast = dilconv.conv2d_transpose(g, w, method="phase", **call)
    assert [s.out_hw for s in seen] == [(34, 34)]
    slow = dilconv.conv2d_transpose(g, w, method="direct", **call)
    # the scale of each output's sum: the sum of its terms' magnitudes
    magnitude = dilconv.conv2d_transpose(np.abs(g), np.abs(w), method="direct", **call)
    assert_close(fast, slow, magnitude=magnitude, context="phase on whole tiles")


def test_whole_tiles_only_where_they_are_fewer_products() -> None:
    """No extension at an even size, at the dilation where three more rows and columns
    would be needed, or where the correlation is not Winograd's (a 1x1 kernel)."""
    from dilconv._transpose import correlate

    def correlation(size: int, dilation: int, kernel: int = 3) -> Any:
        spec = _transposed_spec(
            (1, size, size, 64), (kernel, kernel, 64, 64), np.float32,
            stride=2, dilation=dilation, padding="same",
        )  # fmt: skip
        return correlate.adjoint_spec(phase.phase_spec(spec.lowered())[0])[0]

    for inner in (correlation(32, 2), correlation(33, 4), correlation(33, 2, kernel=1)):
        assert correlate.whole_tiles(inner) is inner
    assert correlate.whole_tiles(correlation(33, 2)).out_hw == (34, 34)


def _transposed_spec(
    g_shape: tuple, w_shape: tuple, dtype: Any = np.float64, **options: Any
) -> Any:
    from dilconv._transpose.spec import make_transpose_spec

    dtypes = [np.dtype(dtype)] * 2
    return make_transpose_spec(
        g_shape, w_shape, dtypes=dtypes, **{"data_format": "NHWC", **options}
    )


@pytest.mark.parametrize(
    ("g_shape", "w_shape", "options"),
    [
        ((1, 40, 50, 1), (3, 3, 1, 1), {"stride": 2, "dilation": 3}),  # elementwise
        ((1, 40, 50, 6), (3, 3, 1, 6), {"stride": 2, "dilation": 3, "groups": 6}),
        ((1, 40, 50, 8), (3, 3, 16, 8), {"stride": 2, "dilation": 3}),  # one shared product
        ((1, 20, 30, 8), (3, 3, 130, 8), {"stride": 3, "dilation": 2}),  # a product per tap
        ((2, 32, 32, 4), (3, 3, 4, 4), {"stride": 2, "dilation": 2}),  # phase too
    ],
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_transposed_workspace_bounds_what_is_allocated(
    g_shape: tuple, w_shape: tuple, options: dict[str, Any], dtype: type
) -> None:
    """scatter's and phase's workspace_bytes bound the memory they allocate beyond the
    result (traced; phase's forward correlation keeps its own under the limit)."""
    import tracemalloc

    spec = _transposed_spec(g_shape, w_shape, dtype, **options).lowered()
    rng = np.random.default_rng(3)
    g, w = rng.standard_normal(g_shape).astype(dtype), rng.standard_normal(w_shape).astype(dtype)
    modules = [scatter] + ([phase] if phase.refusal(spec) is None else [])
    with dilconv.workspace_limit(2**20):
        for module in modules:
            module.conv_transpose(g, w, spec)  # compiled and cached before tracing
            tracemalloc.start()
            try:
                x = module.conv_transpose(g, w, spec)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            extra = 2**20 if module is phase else 0  # the forward method's own limit
            need = module.workspace_bytes(spec)
            assert peak - x.nbytes <= need + extra, (module.__name__, peak - x.nbytes, need)


def test_transposed_methods_over_the_workspace_limit_are_refused_or_skipped() -> None:
    """By name, a method whose scratch exceeds the limit is refused, naming both sizes
    and the setting; "auto" skips phase for scatter; neither fitting is a ValueError."""
    rng = np.random.default_rng(5)
    # phase's copy of the sources and its phase result exceed 1 MiB; scatter's strips fit
    g, w = rng.standard_normal((1, 128, 128, 8)), rng.standard_normal((3, 3, 8, 8))
    opts: dict[str, Any] = {"stride": 2, "dilation": 2, "padding": "same", "data_format": "NHWC"}
    spec = _transposed_spec(g.shape, w.shape, **opts).lowered()
    with dilconv.workspace_limit(2**20):  # scatter's strips follow the limit
        assert phase.workspace_bytes(spec) > 2**20 >= scatter.workspace_bytes(spec)
    from dilconv._transpose import resolve_transpose_method

    full = _transposed_spec(g.shape, w.shape, **opts)
    assert resolve_transpose_method("auto", full) == "phase"
    with dilconv.workspace_limit(2**20):
        with pytest.raises(
            ValueError,
            match=r"'phase' needs 2\.\d MiB .* limit of 1\.0 MiB \(dilconv\.set_workspace_limit\)",
        ):
            dilconv.conv2d_transpose(g, w, method="phase", **opts)
        assert resolve_transpose_method("auto", full) == "scatter"
        skipped = dilconv.conv2d_transpose(g, w, **opts)
    assert_close(skipped, dilconv.conv2d_transpose(g, w, method="phase", **opts))
    # one row of scatter's shared product is wider than a quarter of 1 MiB
    g, w = rng.standard_normal((1, 4, 1024, 8)), rng.standard_normal((3, 3, 16, 8))
    opts = {"stride": 2, "dilation": 3, "data_format": "NHWC"}
    with dilconv.workspace_limit(2**20):
        assert scatter.workspace_bytes(_transposed_spec(g.shape, w.shape, **opts).lowered()) > 2**20
        with pytest.raises(ValueError, match=r"method='scatter' needs 1\.\d MiB of workspace"):
            dilconv.conv2d_transpose(g, w, method="scatter", **opts)
        with pytest.raises(
            ValueError, match=r"no transposed-convolution method fits .*'scatter' needs"
        ):
            dilconv.conv2d_transpose(g, w, **opts)
    assert dilconv.conv2d_transpose(g, w, method="scatter", **opts).shape == (1, 13, 2053, 16)


@pytest.mark.parametrize("method", list(TRANSPOSE_METHODS))
def test_arrays_that_disagree_with_their_spec_never_reach_an_algorithm(method: str) -> None:
    stride = 1 if method == "correlate" else 2  # the others take strides
    spec = make_spec((1, 16, 16, 4), (3, 3, 4, 8), stride=stride, dilation=2, padding=2,
                     data_format="NHWC", dtypes=[np.dtype(np.float32)] * 2)  # fmt: skip
    assert TRANSPOSE_METHODS[method].refusal(spec) is None
    g = np.ones((1, *spec.out_hw, 8), np.float32)
    w = np.ones((3, 3, 4, 8), np.float32)
    assert TRANSPOSE_METHODS[method].conv_transpose(g, w, spec).shape == (1, 16, 16, 4)
    with pytest.raises(ValueError, match=r"g: shape \(1, 2, 2, 8\), expected the spec's"):
        TRANSPOSE_METHODS[method].conv_transpose(g[:, :2, :2], w, spec)
    with pytest.raises(ValueError, match=r"w: shape \(3, 3, 4, 4\), expected the spec's"):
        TRANSPOSE_METHODS[method].conv_transpose(g, w[..., :4], spec)

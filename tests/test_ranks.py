"""conv1d and conv3d: every method against the loop oracle, the causal rule, the shape
helpers, the rank-generic spec against conv2d's, and the refusals."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import dilconv
import dilconv.nn
from dilconv._methods import METHODS
from dilconv._spec import make_spec
from dilconv._spec_nd import make_spec_nd
from tests import oracle_nd
from tests.strategies import Case, conv_cases
from tests.strategies_nd import CaseN, nd_cases
from tests.tolerance import assert_close

CONV = {1: dilconv.conv1d, 3: dilconv.conv3d}


def check_method(case: CaseN, method: str) -> None:
    """``method`` (on every 2-D call the rank makes) equals the loop oracle."""
    try:
        actual = CONV[case.rank](case.x, case.w, case.bias, method=method, **case.options)
    except ValueError as refused:  # a method that takes only some specs (fft: no integers)
        if "cannot compute this call" not in str(refused):
            raise
        assume(False)
        raise
    expected = oracle_nd.conv(case.x, case.w, case.bias, case.spec)
    bias = None if case.bias is None else np.abs(case.bias)
    magnitude = oracle_nd.conv(np.abs(case.x), np.abs(case.w), bias, case.spec)
    assert_close(
        actual,
        expected.astype(case.spec.out_dtype),
        magnitude=magnitude,
        context=f"method={method} {case!r}",
    )


#: Winograd F(2x2, 3x3) takes 3x3 planes at stride 1 only: never a 1-D call (one row),
#: and in 3-D only the cases of test_winograd_planes_equal_oracle.
GENERAL = ["auto", *(m for m in METHODS if m != "winograd")]


@pytest.mark.parametrize("method", GENERAL)
@pytest.mark.parametrize("rank", [1, 3])
@settings(max_examples=12)
@given(data=st.data())
def test_method_equals_oracle(rank: int, method: str, data: st.DataObject) -> None:
    check_method(data.draw(nd_cases(rank)), method)


@settings(max_examples=12)
@given(data=st.data())
def test_winograd_planes_equal_oracle(data: st.DataObject) -> None:
    case = data.draw(nd_cases(3, hw_kernel=(3, 3)))
    check_method(case, "winograd")


@pytest.mark.parametrize("rank", [1, 3])
@settings(max_examples=25)
@given(data=st.data())
def test_auto_equals_oracle_in_every_dtype(rank: int, data: st.DataObject) -> None:
    dtypes = (np.float16, np.float32, np.float64, np.int32, np.int64)
    check_method(data.draw(nd_cases(rank, dtypes=dtypes)), "auto")


@pytest.mark.parametrize("rank", [1, 3])
@settings(max_examples=25)
@given(data=st.data())
def test_output_shape_is_the_actual_shape(rank: int, data: st.DataObject) -> None:
    case = data.draw(nd_cases(rank, modes=("zeros",), flip=False))
    y = CONV[rank](case.x, case.w, **case.options)
    opts = {k: v for k, v in case.options.items() if k not in ("padding_mode", "flip")}
    assert dilconv.output_shape(case.x.shape, case.w.shape, **opts) == y.shape
    if case.spec.x_ndim == rank + 2:
        assert y.shape == case.spec.out_shape


@settings(max_examples=60)
@given(case=conv_cases())
def test_rank_generic_spec_is_conv2ds_spec(case: Case) -> None:
    """The one validation path gives, for rank 2, exactly conv2d's pads and shapes."""
    old = make_spec(case.x.shape, case.w.shape, **case.options)
    new = make_spec_nd(2, case.x.shape, case.w.shape, **case.options)
    assert new.pad == old.pad
    assert new.out_size == old.out_hw
    assert new.out_shape == old.out_shape
    assert (new.kernel, new.stride, new.dilation) == (old.kernel_hw, old.stride, old.dilation)


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "options"),
    [
        ((1, 3, 5, 5), (2, 3, 6, 1), {"groups": 1}),
        ((1, 3, 5, 5), (2, 2, 1, 1), {"groups": 2}),
        ((5, 5), (2, 2), {"stride": (1, 2, 3)}),
        ((5, 5), (2, 2), {"padding": "causal"}),
        ((5, 5), (2, 2), {"padding": (1, 2, 3)}),
        ((5, 5), (7, 2), {}),
        ((5, 5), (2, 2), {"padding": 9, "padding_mode": "reflect"}),
        ((1, 5, 5), (2, 2), {}),
    ],
)
def test_rank_generic_spec_refuses_as_conv2d(
    x_shape: tuple[int, ...], w_shape: tuple[int, ...], options: dict[str, Any]
) -> None:
    """For rank 2 the one validation path raises conv2d's errors, word for word."""
    with pytest.raises(ValueError, match=".") as old:
        make_spec(x_shape, w_shape, **options)
    with pytest.raises(ValueError, match=".") as new:
        make_spec_nd(2, x_shape, w_shape, **options)
    assert str(new.value) == str(old.value)


# --- causal --------------------------------------------------------------------------------


@settings(max_examples=40)
@given(
    length=st.integers(1, 40),
    k=st.integers(1, 4),
    stride=st.integers(1, 4),
    dilation=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_causal_output_t_never_reads_past_t_times_stride(
    length: int, k: int, stride: int, dilation: int, seed: int
) -> None:
    """``ceil(L / stride)`` outputs; changing any input after ``t * stride`` leaves output
    ``t`` as it was, and (with a non-zero last tap) input ``t * stride`` itself does
    change it."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-5, 6, size=(2, 3, length))
    w = rng.integers(1, 4, size=(4, 3, k))  # no zero taps
    opts = {"stride": stride, "dilation": dilation, "padding": "causal"}
    y = dilconv.conv1d(x, w, **opts)
    assert y.shape == (2, 4, -(-length // stride))
    for t in range(y.shape[-1]):
        later = x.copy()
        later[..., t * stride + 1 :] = rng.integers(-5, 6, size=later[..., t * stride + 1 :].shape)
        assert np.array_equal(dilconv.conv1d(later, w, **opts)[..., t], y[..., t])
        now = x.copy()
        now[..., t * stride] += 1
        assert not np.array_equal(dilconv.conv1d(now, w, **opts)[..., t], y[..., t])


def test_causal_is_left_padding_then_valid() -> None:
    """Keras's rule written out: d * (k - 1) zeros before, none after, then 'valid'."""
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 20, 2)), rng.standard_normal((3, 2, 5))
    for stride in (1, 2, 3):
        padded = np.pad(x, ((0, 0), (2 * 4, 0), (0, 0)))
        expected = dilconv.conv1d(padded, w, stride=stride, dilation=4, data_format="NWC")
        actual = dilconv.conv1d(
            x, w, stride=stride, dilation=4, padding="causal", data_format="NWC"
        )
        assert_close(actual, expected)


# --- shape helpers -------------------------------------------------------------------------


def test_same_padding_of_every_rank() -> None:
    assert dilconv.same_padding((100,), 2, dilation=5) == ((2, 3),)
    assert dilconv.same_padding((8, 16, 16), (3, 3, 3), stride=(1, 2, 2)) == (
        (1, 1),
        (0, 1),
        (0, 1),
    )
    assert dilconv.same_padding(10, 3, dilation=4) == ((4, 4), (4, 4))  # 2-D unchanged
    y = dilconv.conv3d(np.ones((7, 9, 5)), np.ones((3, 2, 3)), padding="same", stride=2)
    assert y.shape == (4, 5, 3)


def test_coverage_of_every_rank() -> None:
    layers = [(3, 1, 2), (3, 1, 2)]
    line = dilconv.coverage(layers, rank=1)
    assert line.tolist() == [1, 0, 2, 0, 3, 0, 2, 0, 1]
    volume = dilconv.coverage(layers, rank=3)
    assert volume.shape == (9, 9, 9)
    assert volume[4, 4, 4] == 27
    assert volume[1, 4, 4] == 0
    assert np.array_equal(dilconv.coverage(layers), dilconv.coverage(layers, rank=2))


def test_output_shape_of_every_rank() -> None:
    assert dilconv.output_shape((50, 2), (2, 2, 8), padding="causal", data_format="NWC") == (
        50,
        8,
    )
    assert dilconv.output_shape(
        (1, 32, 64, 64, 64), (32, 32, 3, 3, 3), dilation=(1, 2, 4), data_format="NCDHW"
    ) == (1, 32, 62, 60, 56)


# --- layouts, unbatched and plain input ------------------------------------------------------


@pytest.mark.parametrize("rank", [1, 3])
def test_layouts_and_ranks_of_input_agree(rank: int) -> None:
    rng = np.random.default_rng(rank)
    spatial, kernel = (11,) * rank, (2,) * rank
    x, w = rng.standard_normal((3, 4, *spatial)), rng.standard_normal((2, 4, *kernel))
    opts = {"dilation": 2, "stride": 2, "padding": 1}
    first = CONV[rank](x, w, **opts)
    last_fmt = "NWC" if rank == 1 else "NDHWC"
    last = CONV[rank](
        np.moveaxis(x, 1, -1), np.moveaxis(w, (0, 1), (-1, -2)), data_format=last_fmt, **opts
    )
    assert_close(np.moveaxis(last, -1, 1), first)
    assert_close(CONV[rank](x[1], w, **opts), first[1])
    assert_close(
        CONV[rank](x[1, 2], w[0, 2], **opts), CONV[rank](x[1:2, 2:3], w[:1, 2:3], **opts)[0, 0]
    )


# --- refusals --------------------------------------------------------------------------------

X1, W1 = np.ones((1, 2, 10)), np.ones((3, 2, 2))
X3, W3 = np.ones((1, 2, 5, 5, 5)), np.ones((3, 2, 2, 2, 2))
BAD: list[tuple[Any, type[Exception], str]] = [
    (
        lambda: dilconv.conv1d(np.ones((1, 2, 5, 5)), np.ones((3, 2, 2, 2))),
        ValueError,
        "x must be 1-D",
    ),
    (
        lambda: dilconv.conv1d(X1, np.ones((3, 2, 2, 2))),
        ValueError,
        r"w must be 3-D \(O, C/groups, kw\)",
    ),
    (lambda: dilconv.conv3d(np.ones((5, 5)), np.ones((2, 2))), ValueError, "x must be 3-D"),
    (
        lambda: dilconv.conv3d(np.ones((4, 4, 4)), W3),
        ValueError,
        r"w must be 3-D \(kd, kh, kw\) when x is 3-D",
    ),
    (lambda: dilconv.conv3d(X3, np.ones((3, 2, 2, 2))), ValueError, "w must be 5-D"),
    (
        lambda: dilconv.conv1d(X1, W1, data_format="NCHW"),
        ValueError,
        r"data_format must be one of \['NCW', 'NWC'\]",
    ),
    (lambda: dilconv.conv3d(X3, W3, data_format="NCW"), ValueError, "data_format must be one of"),
    (
        lambda: dilconv.conv1d(X1, W1, stride=(1, 2)),
        ValueError,
        r"stride must be an int or 1 int\(s\)",
    ),
    (
        lambda: dilconv.conv3d(X3, W3, dilation=(1, 2)),
        ValueError,
        r"dilation must be an int or 3 int\(s\)",
    ),
    (lambda: dilconv.conv3d(X3, W3, stride=(1, 0, 1)), ValueError, r"stride\[1\] must be >= 1"),
    (lambda: dilconv.conv1d(X1, W1, padding=(1, 6)), ValueError, r"for example \(\(1, 6\),\)"),
    (lambda: dilconv.conv3d(X3, W3, padding=((1, 2), 1)), ValueError, "3 entries, one per axis"),
    (
        lambda: dilconv.conv1d(X1, W1, padding=((1, -1),)),
        ValueError,
        r"padding\[0\]\[1\] must be >= 0",
    ),
    (lambda: dilconv.conv1d(X1, W1, padding=1.5), TypeError, "padding must be an int"),
    (lambda: dilconv.conv1d(X1, W1, padding="wrap"), ValueError, "'causal'"),
    (
        lambda: dilconv.conv3d(X3, W3, padding="causal"),
        ValueError,
        "causal' is for 1-D convolutions only",
    ),
    (
        lambda: dilconv.conv2d(np.ones((5, 5)), np.ones((2, 2)), padding="causal"),
        ValueError,
        "causal' is for 1-D convolutions only",
    ),
    (
        lambda: dilconv.conv1d_transpose(X1, np.ones((2, 3, 2)), padding="causal"),
        ValueError,
        "not for a transposed convolution",
    ),
    (
        lambda: dilconv.conv3d_grad_input(np.ones((1, 3, 4, 4, 4)), W3, X3.shape, padding="causal"),
        ValueError,
        "1-D convolutions only",
    ),
    (
        lambda: dilconv.conv1d(X1, np.ones((3, 1, 2)), groups=2),
        ValueError,
        "must divide the output channels",
    ),
    (
        lambda: dilconv.conv1d(X1, np.ones((3, 2, 12))),
        ValueError,
        r"dilated kernel \(12: kernel \(12,\)",
    ),
    (
        lambda: dilconv.conv3d(X3, W3, padding=6, padding_mode="reflect"),
        ValueError,
        "too wide for padding_mode='reflect' on an input of D=5",
    ),
    (
        lambda: dilconv.conv1d(X1, W1, method="fastest"),
        ValueError,
        "method must be 'auto' or one of",
    ),
    (lambda: dilconv.conv3d(X3, W3, method=3), TypeError, "method must be a str"),
    (lambda: dilconv.conv1d(X1, W1, np.ones(2)), ValueError, r"bias must have shape \(3,\)"),
    (
        lambda: dilconv.conv1d(np.ones(5), np.ones(2), groups=2),
        ValueError,
        "groups must be 1 for 1-D input",
    ),
    (
        lambda: dilconv.conv1d_grad_input(np.ones((1, 3, 8)), W1, X1.shape),
        ValueError,
        r"grad_out must have the shape conv1d returns .* \(1, 3, 9\)",
    ),
    (
        lambda: dilconv.conv3d_grad_weight(X3, np.ones((1, 3, 5, 5, 5)), W3.shape),
        ValueError,
        "grad_out must have the shape conv3d returns",
    ),
    (
        lambda: dilconv.conv1d_transpose(X1, np.ones((2, 3, 2)), stride=2, output_padding=2),
        ValueError,
        "output_padding must be smaller than max",
    ),
    (
        lambda: dilconv.conv3d_transpose(X3, np.ones((2, 3, 2, 2, 2)), output_size=(9, 6, 6)),
        ValueError,
        r"output_size=\(9, 6, 6\) cannot be reached: .* D in \[6, 6\]",
    ),
    (
        lambda: dilconv.conv1d_transpose(X1, np.ones((3, 3, 2))),
        ValueError,
        r"has 3 input channels \(its first axis\); x has 2",
    ),
    (
        lambda: dilconv.conv1d_transpose(X1, np.ones((2, 3, 2)), padding="full"),
        ValueError,
        "got 'full'",
    ),
    (
        lambda: dilconv.conv1d_transpose(X1, np.ones((2, 3, 2)), method="phasey"),
        ValueError,
        "method must be 'auto' or one of",
    ),
    (
        lambda: dilconv.conv1d_grad_bias(np.ones((1, 2, 3, 4))),
        ValueError,
        "grad_out must be 1-D, 2-D or 3-D",
    ),
    (
        lambda: dilconv.output_shape((10, 2), (3, 2, 2), data_format="NDHWC"),
        ValueError,
        "x must be 3-D",
    ),
    (
        lambda: dilconv.same_padding((10, 10, 10), (3, 3)),
        ValueError,
        r"kernel_hw must be an int or 3 int\(s\)",
    ),
    (lambda: dilconv.coverage([(3, 1, 1)], rank=4), ValueError, "rank must be 1, 2 or 3"),
]


@pytest.mark.parametrize(("call", "error", "match"), BAD)
def test_bad_input(call: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()


# --- nn ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layer", "x_shape"),
    [
        (
            lambda: dilconv.nn.Conv1d(4, 6, 3, dilation=4, padding="causal", groups=2, rng=0),
            (2, 4, 30),
        ),
        (
            lambda: dilconv.nn.Conv1d(2, 3, 2, stride=2, padding=1, padding_mode="circular", rng=1),
            (1, 2, 9),
        ),
        (
            lambda: dilconv.nn.Conv3d(2, 4, (2, 3, 1), dilation=(2, 1, 1), padding=1, rng=2),
            (1, 2, 5, 6, 4),
        ),
    ],
)
def test_nn_layers_backward_is_the_gradient(layer: Any, x_shape: tuple[int, ...]) -> None:
    """backward's input, weight and bias gradients equal float64 central differences of
    ``sum(forward(x) * r)``."""
    net = layer()
    net.weight = dilconv.nn.Parameter(np.asarray(net.weight, dtype=np.float64))
    net.bias = dilconv.nn.Parameter(np.asarray(net.bias, dtype=np.float64))
    rng = np.random.default_rng(5)
    x = rng.standard_normal(x_shape)
    r = rng.standard_normal(net(x).shape)
    grad_x = net.backward(r)

    def loss() -> float:
        return float(np.sum(net.forward(x) * r))

    for array, grad in ((x, grad_x), (net.weight, net.weight.grad), (net.bias, net.bias.grad)):
        numeric = np.empty(array.shape)
        for idx in np.ndindex(*array.shape):
            old = array[idx]
            array[idx] = old + 1e-6
            up = loss()
            array[idx] = old - 1e-6
            numeric[idx] = (up - loss()) / 2e-6
            array[idx] = old
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7)

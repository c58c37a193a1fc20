"""What conv2d computes: dilation, flip, layouts, ranks, dtypes, linearity, shapes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import signal

import dilconv
from tests.strategies import Case, conv_cases
from tests.tolerance import assert_close


def call(case: Case, **override: object) -> np.ndarray:
    return dilconv.conv2d(case.x, case.w, case.bias, **{**case.options, **override})


def spatial_axes(case: Case) -> tuple[int, int]:
    """Spatial axes of the weights in the case's layout."""
    if case.w.ndim == 2 or case.options["data_format"] == "NCHW":
        return (-2, -1)
    return (0, 1)


@given(case=conv_cases())
def test_output_shape_is_the_actual_shape(case: Case) -> None:
    keys = ("stride", "padding", "dilation", "groups", "data_format")
    expected = dilconv.output_shape(
        case.x.shape, case.w.shape, **{k: case.options[k] for k in keys}
    )
    assert call(case).shape == expected


@given(case=conv_cases())
def test_dilation_is_ordinary_convolution_with_the_dilated_kernel(case: Case) -> None:
    d = case.options["dilation"]
    wd = dilconv.dilate_kernel(case.w, d, axes=spatial_axes(case))
    pads = case.options["padding"]
    if isinstance(pads, str):  # resolve against the dilated kernel's own size
        pads = dilconv._spec.make_spec(
            case.x.shape, case.w.shape, **{k: v for k, v in case.options.items()}
        ).pad
    expected = dilconv.conv2d(
        case.x, wd, case.bias, **{**case.options, "dilation": 1, "padding": pads}
    )
    assert_close(call(case), expected)


@pytest.mark.parametrize("mode", ["valid", "same", "full"])
@given(
    data=st.data(),
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    k=st.sampled_from([1, 3, 5]),
    kw=st.sampled_from([1, 3]),
    d=st.integers(1, 4),
)
def test_flip_is_scipy_convolve2d_with_the_dilated_kernel(
    mode: str, data: st.DataObject, h: int, w: int, k: int, kw: int, d: int
) -> None:
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x, kernel = rng.standard_normal((h, w)), rng.standard_normal((k, kw))
    eff = dilconv.effective_kernel_size((k, kw), d)
    if mode == "valid" and (eff[0] > h or eff[1] > w):
        with pytest.raises(ValueError, match="larger than the padded input"):
            dilconv.conv2d(x, kernel, dilation=d, flip=True, padding=mode)
        return
    expected = signal.convolve2d(x, dilconv.dilate_kernel(kernel, d), mode=mode)
    assert_close(dilconv.conv2d(x, kernel, dilation=d, flip=True, padding=mode), expected)


@given(case=conv_cases(bias=False), scale=st.floats(-3, 3))
def test_linear_in_x_and_in_w(case: Case, scale: float) -> None:
    rng = np.random.default_rng(0)
    x2, w2 = rng.standard_normal(case.x.shape), rng.standard_normal(case.w.shape)
    opts = case.options
    lhs = dilconv.conv2d(scale * case.x + x2, case.w, **opts)
    rhs = scale * dilconv.conv2d(case.x, case.w, **opts) + dilconv.conv2d(x2, case.w, **opts)
    mag = dilconv.conv2d(abs(scale) * np.abs(case.x) + np.abs(x2), np.abs(case.w), **opts)
    assert_close(lhs, rhs, magnitude=mag)
    lhs = dilconv.conv2d(case.x, scale * case.w + w2, **opts)
    rhs = scale * dilconv.conv2d(case.x, case.w, **opts) + dilconv.conv2d(case.x, w2, **opts)
    mag = dilconv.conv2d(np.abs(case.x), abs(scale) * np.abs(case.w) + np.abs(w2), **opts)
    assert_close(lhs, rhs, magnitude=mag)


@given(case=conv_cases(modes=("zeros", "reflect")))
def test_layouts_agree(case: Case) -> None:
    """NHWC with HWIO weights is NCHW with OIHW weights, transposed."""
    if case.x.ndim == 2:
        return
    opts = dict(case.options)
    if opts.pop("data_format") == "NHWC":
        x_nchw = np.moveaxis(case.x, -1, -3)
        w_oihw = case.w.transpose(3, 2, 0, 1)
    else:
        x_nchw, w_oihw = case.x, case.w
    y_nchw = dilconv.conv2d(x_nchw, w_oihw, case.bias, data_format="NCHW", **opts)
    y_nhwc = dilconv.conv2d(
        np.moveaxis(x_nchw, -3, -1),
        w_oihw.transpose(2, 3, 1, 0),
        case.bias,
        data_format="NHWC",
        **opts,
    )
    assert_close(np.moveaxis(y_nhwc, -1, -3), y_nchw)


@given(case=conv_cases(modes=("zeros", "circular")))
def test_flip_is_correlation_with_the_reversed_kernel(case: Case) -> None:
    a, b = spatial_axes(case)
    reversed_w = np.flip(case.w, axis=(a, b))
    expected = dilconv.conv2d(case.x, reversed_w, case.bias, **{**case.options, "flip": False})
    assert_close(call(case, flip=True), expected)


def test_unbatched_and_plain_inputs() -> None:
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((3, 9, 8)), rng.standard_normal((2, 3, 3, 3))
    batched = dilconv.conv2d(x[None], w, dilation=2)
    assert_close(dilconv.conv2d(x, w, dilation=2), batched[0])
    image, kernel = rng.standard_normal((9, 8)), rng.standard_normal((3, 3))
    assert_close(
        dilconv.conv2d(image, kernel, dilation=2),
        dilconv.conv2d(image[None, None], kernel[None, None], dilation=2)[0, 0],
    )


def test_bias_is_added_per_output_channel() -> None:
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal((2, 4, 7, 7)), rng.standard_normal((6, 2, 3, 3)), np.arange(6.0)
    with_bias = dilconv.conv2d(x, w, b, groups=2, dilation=(1, 2), padding="same")
    without = dilconv.conv2d(x, w, groups=2, dilation=(1, 2), padding="same")
    assert_close(with_bias - without, np.broadcast_to(b[None, :, None, None], without.shape))


@pytest.mark.parametrize(
    ("x_dtype", "w_dtype", "expected"),
    [
        (np.float16, np.float16, np.float16),
        (np.float32, np.float32, np.float32),
        (np.float64, np.float64, np.float64),
        (np.float16, np.float32, np.float32),
        (np.float32, np.float64, np.float64),
        (np.int8, np.int16, np.int64),
        (np.int64, np.int64, np.int64),
        (np.uint8, np.int32, np.int64),
        (np.int32, np.float32, np.float64),
    ],
)
def test_result_dtype_follows_result_type(x_dtype: type, w_dtype: type, expected: type) -> None:
    x = np.ones((1, 2, 6, 6), dtype=x_dtype)
    w = np.ones((3, 2, 3, 3), dtype=w_dtype)
    assert dilconv.conv2d(x, w, dilation=2).dtype == np.dtype(expected)


def test_float16_accumulates_in_float32() -> None:
    # Summed in float16, 4097 ones stall at 2048 (2048 + 1 rounds back to 2048); summed in
    # float32 they reach 4097, which the float16 result rounds to 4096.
    x = np.ones((1, 4097), dtype=np.float16)
    w = np.ones((1, 4097), dtype=np.float16)
    y = dilconv.conv2d(x, w)
    assert y.dtype == np.float16
    assert float(y[0, 0]) == 4096.0  # the float16 nearest to 4097


def test_integers_are_exact_beyond_float_precision() -> None:
    big = 2**40 + 1
    x = np.full((1, 5), big, dtype=np.int64)
    w = np.array([[1, 0, 1]], dtype=np.int64)
    y = dilconv.conv2d(x, w, dilation=2)
    assert y.dtype == np.int64
    assert y.tolist() == [[2 * big]]
    with pytest.raises(ValueError, match="method='fft' cannot compute this call: integer"):
        dilconv.conv2d(x, w, method="fft")


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular", "symmetric"])
def test_padding_modes_match_numpy_pad(mode: str) -> None:
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((7, 6)), rng.standard_normal((3, 2))
    numpy_mode = {"replicate": "edge", "circular": "wrap"}.get(mode, mode)
    padded = np.pad(x, ((2, 1), (3, 2)), mode=numpy_mode)
    expected = dilconv.conv2d(padded, w, dilation=(2, 3))
    actual = dilconv.conv2d(x, w, dilation=(2, 3), padding=((2, 1), (3, 2)), padding_mode=mode)
    assert_close(actual, expected)


def test_same_padding_is_tensorflows() -> None:
    for size in range(1, 12):
        for stride in (1, 2, 3):
            for d in (1, 2, 5):
                out = dilconv.output_shape(
                    (size, size), (3, 3), stride=stride, dilation=d, padding="same"
                )
                assert out == (-(-size // stride),) * 2
                (top, bottom), _ = dilconv.same_padding(size, 3, stride=stride, dilation=d)
                assert bottom - top in (0, 1)

"""The public helpers: dilated kernels, sizes, padding, receptive fields, atrous_conv2d."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import dilconv


@given(k=st.integers(1, 6), kw=st.integers(1, 6), d=st.integers(1, 6), dw=st.integers(1, 6))
def test_dilate_kernel_places_taps_and_zeros(k: int, kw: int, d: int, dw: int) -> None:
    w = np.arange(1, k * kw + 1).reshape(k, kw)
    out = dilconv.dilate_kernel(w, (d, dw))
    assert out.shape == dilconv.effective_kernel_size((k, kw), (d, dw))
    np.testing.assert_array_equal(out[::d, ::dw], w)
    assert np.count_nonzero(out) == w.size  # every other entry is an inserted zero


def test_dilate_kernel_3x3_is_2d_plus_1() -> None:
    for d in range(1, 6):
        assert dilconv.dilate_kernel(np.ones((3, 3)), d).shape == (2 * d + 1, 2 * d + 1)


def test_dilate_kernel_axes_for_both_layouts() -> None:
    oihw = np.random.default_rng(0).standard_normal((4, 2, 3, 3))
    hwio = oihw.transpose(2, 3, 1, 0)
    a = dilconv.dilate_kernel(oihw, 2)
    b = dilconv.dilate_kernel(hwio, 2, axes=(0, 1))
    np.testing.assert_array_equal(a, b.transpose(3, 2, 0, 1))


def test_dilate_kernel_errors() -> None:
    with pytest.raises(ValueError, match="dilation must be >= 1, got 0"):
        dilconv.dilate_kernel(np.ones((3, 3)), 0)
    with pytest.raises(ValueError, match="axes must name two different axes"):
        dilconv.dilate_kernel(np.ones((3, 3)), 2, axes=(0, -2))
    with pytest.raises(ValueError, match=r"axes\[1\]=2 is out of range"):
        dilconv.dilate_kernel(np.ones((3, 3)), 2, axes=(0, 2))
    with pytest.raises(TypeError, match="axes must be a pair"):
        dilconv.dilate_kernel(np.ones((3, 3)), 2, axes=0)


def test_effective_kernel_size() -> None:
    assert dilconv.effective_kernel_size(3, 1) == 3
    assert dilconv.effective_kernel_size(3, 16) == 33
    assert dilconv.effective_kernel_size(3, (2, 3)) == (5, 7)
    with pytest.raises(ValueError, match="k must be >= 1"):
        dilconv.effective_kernel_size(0, 2)


def test_same_padding_examples() -> None:
    assert dilconv.same_padding(7, 3, dilation=2) == ((2, 2), (2, 2))
    assert dilconv.same_padding((8, 8), (2, 2)) == ((0, 1), (0, 1))  # odd pixel bottom/right
    assert dilconv.same_padding(5, 1, stride=2) == ((0, 0), (0, 0))
    with pytest.raises(ValueError, match="stride must be >= 1"):
        dilconv.same_padding(5, 3, stride=0)


@given(
    layers=st.lists(
        st.tuples(st.integers(1, 5), st.integers(1, 3), st.integers(1, 4)), min_size=1, max_size=4
    )
)
def test_receptive_field_matches_coverage_and_conv(layers: list[tuple[int, int, int]]) -> None:
    fields = dilconv.receptive_field(layers)
    cov = dilconv.coverage(layers)
    assert cov.shape == (fields[-1].size, fields[-1].size)
    # the corners are always reached; the total counts every path: prod(k^2)
    assert cov[0, 0] >= 1
    assert cov[-1, -1] >= 1
    assert cov.sum() == np.prod([k * k for k, _, _ in layers])
    # the coverage is the stack of all-ones convolutions run on a one-hot input gradient:
    # feeding the field through the stack gives one output pixel whose value is sum(cov * x)
    rng = np.random.default_rng(0)
    x = rng.integers(-3, 4, size=cov.shape)
    y = x
    for k, s, d in layers:
        y = dilconv.conv2d(y, np.ones((k, k), dtype=np.int64), stride=s, dilation=d)
    assert y.shape == (1, 1)
    assert int(y[0, 0]) == int((cov * x).sum())


def test_receptive_field_of_the_paper_stacks() -> None:
    sizes = [f.size for f in dilconv.receptive_field([(3, 1, 1), (3, 1, 2), (3, 1, 4), (3, 1, 8)])]
    assert sizes == [3, 7, 15, 31]
    assert dilconv.receptive_field([(3, 2, 1), (3, 1, 1)])[-1] == dilconv.ReceptiveField(7, 2)


def test_gridding_holes() -> None:
    holes = (dilconv.coverage([(3, 1, 2)] * 3) == 0).sum()
    assert holes > 0
    assert (dilconv.coverage([(3, 1, 1), (3, 1, 2), (3, 1, 5)]) == 0).sum() == 0


def test_receptive_field_errors() -> None:
    with pytest.raises(ValueError, match="at least one layer"):
        dilconv.receptive_field([])
    with pytest.raises(ValueError, match=r"layers\[0\] must be \(kernel, stride, dilation\)"):
        dilconv.receptive_field([(3, 1)])
    with pytest.raises(ValueError, match=r"layers\[1\]\[2\] must be >= 1"):
        dilconv.coverage([(3, 1, 1), (3, 1, 0)])
    with pytest.raises(TypeError, match="layers must be a list"):
        dilconv.coverage("3:1")


def test_atrous_conv2d_is_nhwc_conv2d() -> None:
    rng = np.random.default_rng(4)
    x, f = rng.standard_normal((2, 11, 9, 3)), rng.standard_normal((3, 3, 3, 5))
    for padding in ("SAME", "VALID", "same"):
        expected = dilconv.conv2d(x, f, dilation=3, padding=padding.lower(), data_format="NHWC")
        np.testing.assert_allclose(dilconv.atrous_conv2d(x, f, 3, padding), expected)
    with pytest.raises(ValueError, match="padding must be 'SAME' or 'VALID', got 'FULL'"):
        dilconv.atrous_conv2d(x, f, 2, "FULL")
    with pytest.raises(ValueError, match="rate must be >= 1, got 0"):
        dilconv.atrous_conv2d(x, f, 0, "SAME")
    with pytest.raises(ValueError, match=r"value must be 4-D \(N, H, W, C\)"):
        dilconv.atrous_conv2d(x[0], f, 2, "SAME")


def test_choose_method_returns_a_candidate_and_can_measure() -> None:
    x, w = np.ones((1, 4, 20, 20), np.float32), np.ones((4, 4, 3, 3), np.float32)
    name = dilconv.choose_method(x, w, dilation=2)
    assert name in dilconv.METHODS
    assert name != "direct"
    best, times = dilconv.choose_method(x, w, dilation=2, measure=True)
    assert best == min(times, key=times.__getitem__)
    assert "direct" not in times
    assert set(times) <= set(dilconv.METHODS)
    assert dilconv.choose_method(x.astype(int), w.astype(int)) != "fft"

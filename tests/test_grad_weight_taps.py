"""The weight gradient by one product per tap on pitched slabs (dilconv._grad_weight)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given

import dilconv
from dilconv import _grad_weight
from dilconv._layout import to_canonical, weight_from_canonical
from dilconv._padding import pad_spatial
from dilconv._spec import make_spec
from tests.strategies import Case, conv_cases
from tests.tolerance import assert_close


def pitched(case: Case, g: np.ndarray) -> np.ndarray:
    """The pitched algorithm on any stride-1, one-group call, whatever its padding share."""
    spec = make_spec(case.x.shape, case.w.shape, dtypes=[case.x.dtype], **case.options)
    x = to_canonical(case.x, spec)
    if spec.padding_mode != "zeros":
        x = pad_spatial(x, spec.pad, spec.padding_mode)
    dw = _grad_weight.grad_weight(x, to_canonical(g, spec), spec.lowered())
    return weight_from_canonical(dw, spec)


@given(case=conv_cases(dtypes=(np.float64, np.float32), bias=False))
def test_pitched_grad_weight_equals_the_oracle(case: Case) -> None:
    assume(case.options["stride"] in (1, (1, 1)) and case.options["groups"] == 1)
    y = dilconv.conv2d(case.x, case.w, **case.options)
    g = np.random.default_rng(0).standard_normal(y.shape).astype(case.x.dtype)
    expected = dilconv.conv2d_grad_weight(case.x, g, case.w.shape, method="direct", **case.options)
    magnitude = dilconv.conv2d_grad_weight(
        np.abs(case.x), np.abs(g), case.w.shape, method="direct", **case.options
    )
    assert_close(pitched(case, g), expected, magnitude=magnitude, context=repr(case))


@pytest.mark.parametrize("data_format", ["NCHW", "NHWC"])
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
def test_auto_takes_the_pitched_taps_in_bands(
    data_format: str, padding_mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 2-image call under a small workspace: several bands per image, same answer."""
    rng = np.random.default_rng(3)
    nchw = data_format == "NCHW"
    x = rng.standard_normal((2, 32, 200, 48) if nchw else (2, 200, 48, 32))
    w_shape = (32, 32, 3, 3) if nchw else (3, 3, 32, 32)
    opts = {"padding": "same", "dilation": 2, "data_format": data_format}
    opts["padding_mode"] = padding_mode
    g = rng.standard_normal(dilconv.conv2d(x, np.zeros(w_shape), **opts).shape)
    spec = make_spec(x.shape, w_shape, **opts).lowered()
    assert _grad_weight.applies(spec)
    calls = []
    original = _grad_weight.grad_weight
    monkeypatch.setattr(_grad_weight, "grad_weight", lambda *a: calls.append(1) or original(*a))
    with dilconv.workspace_limit(2**20):
        assert _grad_weight.band_rows(spec) < 50
        got = dilconv.conv2d_grad_weight(x, g, w_shape, **opts)
    assert calls == [1]
    expected = dilconv.conv2d_grad_weight(x, g, w_shape, method="im2col", **opts)
    assert_close(got, expected, kind="gradients")


def test_wide_padding_keeps_the_swapped_problem() -> None:
    """aspp-like: the padding is most of the pitch, so "auto" keeps im2col."""
    spec = make_spec((1, 8, 20, 20), (4, 8, 3, 3), padding="same", dilation=6).lowered()
    assert not _grad_weight.applies(spec)
    strided = make_spec((1, 8, 40, 40), (4, 8, 3, 3), padding=1, stride=2).lowered()
    assert not _grad_weight.applies(strided)

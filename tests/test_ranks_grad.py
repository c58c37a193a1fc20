"""Transposed convolutions and gradients in 1-D and 3-D: the loop oracle, the adjoint
identities, float64 central differences, and conv2d_transpose's size rules per axis."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dilconv
from dilconv._spec_nd import make_spec_nd
from dilconv._transpose import TRANSPOSE_METHODS
from tests import oracle_nd
from tests.strategies_nd import CaseN, nd_cases
from tests.tolerance import assert_close

CONV = {1: dilconv.conv1d, 3: dilconv.conv3d}
GRAD_INPUT = {1: dilconv.conv1d_grad_input, 3: dilconv.conv3d_grad_input}
GRAD_WEIGHT = {1: dilconv.conv1d_grad_weight, 3: dilconv.conv3d_grad_weight}
GRAD_BIAS = {1: dilconv.conv1d_grad_bias, 3: dilconv.conv3d_grad_bias}
TRANSPOSE = {1: dilconv.conv1d_transpose, 3: dilconv.conv3d_transpose}


def dot(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(a.astype(np.float64) * b.astype(np.float64)))


def close_sums(a: float, b: float, scale: float, context: str) -> None:
    assert abs(a - b) <= 1e-11 * (1 + scale), f"{a} != {b} {context}"


@pytest.mark.parametrize("rank", [1, 3])
@settings(max_examples=40)
@given(data=st.data())
def test_gradients_are_the_adjoints(rank: int, data: st.DataObject) -> None:
    """``<conv(x, w), g> == <x, grad_input(g, w)> == <w, grad_weight(x, g)>`` for every
    option: padding modes, flip, groups, layouts, causal."""
    case: CaseN = data.draw(nd_cases(rank, bias=False))
    y = CONV[rank](case.x, case.w, **case.options)
    g = np.random.default_rng(3).standard_normal(y.shape)
    gx = GRAD_INPUT[rank](g, case.w, case.x.shape, **case.options)
    gw = GRAD_WEIGHT[rank](case.x, g, case.w.shape, **case.options)
    assert gx.shape == case.x.shape
    assert gw.shape == case.w.shape
    scale = dot(np.abs(y), np.abs(g)) + dot(np.abs(case.x), np.abs(gx))
    close_sums(dot(y, g), dot(case.x, gx), scale, repr(case))
    close_sums(dot(y, g), dot(case.w, gw), scale + dot(np.abs(case.w), np.abs(gw)), repr(case))


@pytest.mark.parametrize("rank", [1, 3])
@settings(max_examples=30)
@given(data=st.data())
def test_grad_input_methods_equal_the_transposed_oracle(rank: int, data: st.DataObject) -> None:
    case: CaseN = data.draw(nd_cases(rank, modes=("zeros",), bias=False, flip=False))
    g = np.random.default_rng(4).standard_normal(case.spec.out_shape)
    expected = oracle_nd.conv_transpose(g, case.w, case.spec)
    magnitude = oracle_nd.conv_transpose(np.abs(g), np.abs(case.w), case.spec)
    for method in ["auto", *TRANSPOSE_METHODS]:
        plane_stride = case.spec.stride[-2:] if rank == 3 else (1, case.spec.stride[0])
        if method == "correlate" and plane_stride != (1, 1):
            continue  # stride 1 only; its refusal is checked in test_transpose.py
        if method == "phase":
            continue  # some strides only; "auto" takes it where it applies
        actual = GRAD_INPUT[rank](g, case.w, case.x.shape, method=method, **case.options)
        assert_close(actual, expected, magnitude=magnitude, context=f"{method} {case!r}")


@pytest.mark.parametrize("rank", [1, 3])
@settings(max_examples=30)
@given(data=st.data())
def test_transpose_is_the_adjoint_of_conv(rank: int, data: st.DataObject) -> None:
    """``<conv(z, w), x> == <z, conv_transpose(x, w)>`` with the transposed weight layout,
    and the result's size follows conv2d_transpose's rule for explicit pads."""
    case: CaseN = data.draw(nd_cases(rank, modes=("zeros",), bias=False, flip=False))
    spec = case.spec
    if isinstance(case.options["padding"], str):
        return  # the keyword rules are checked below against their size formulas
    x = np.random.default_rng(5).standard_normal(spec.out_shape)
    opts = {k: v for k, v in case.options.items() if k not in ("padding_mode", "flip")}
    w = case.w  # the forward (O, C/g, k...) is the transposed (C_in, C_out/g, k...)
    out_pad = tuple(
        n - ((o - 1) * s - lo - hi + d * (k - 1) + 1)
        for n, o, s, d, k, (lo, hi) in zip(
            spec.in_size,
            spec.out_size,
            spec.stride,
            spec.dilation,
            spec.kernel,
            spec.pad,
            strict=True,
        )
    )
    limit_ok = all(
        p < max(s, d) for p, s, d in zip(out_pad, spec.stride, spec.dilation, strict=True)
    )
    if not limit_ok:
        return
    z_t = TRANSPOSE[rank](x, w, output_padding=out_pad, **opts)
    assert z_t.shape == case.x.shape
    y = CONV[rank](case.x, case.w, **opts)
    close_sums(dot(y, x), dot(case.x, z_t), dot(np.abs(y), np.abs(x)) * 2, repr(case))


@pytest.mark.parametrize(
    ("rank", "padding", "size", "options"),
    [
        (1, "same", 10, {"stride": 3}),
        (1, "valid", 10, {"stride": 2, "dilation": 3}),
        (3, "same", 4, {"stride": (1, 2, 3), "dilation": 2}),
        (3, "valid", 4, {"stride": 2, "dilation": (1, 2, 3)}),
    ],
)
def test_transpose_keywords_and_output_size(
    rank: int, padding: str, size: int, options: dict[str, Any]
) -> None:
    """TensorFlow's rules per axis: "same" gives ``i * stride`` and "valid"
    ``(i - 1) * stride + k_eff + max(stride - k_eff, 0)``; every ``output_size`` whose
    forward convolution gives back ``x``'s size is reachable, and the result is then
    the adjoint of that forward convolution."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 2, *(size,) * rank))
    w = rng.standard_normal((2, 3, *(2,) * rank))
    y = TRANSPOSE[rank](x, w, padding=padding, **options)
    stride = np.broadcast_to(options.get("stride", 1), rank)
    dilation = np.broadcast_to(options.get("dilation", 1), rank)
    k_eff = dilation * (2 - 1) + 1
    if padding == "same":
        assert y.shape[2:] == tuple(size * stride)
    else:
        assert y.shape[2:] == tuple((size - 1) * stride + k_eff + np.maximum(stride - k_eff, 0))
    for extra in range(int(stride.max())):
        target = tuple(max(1, n - extra) for n in y.shape[2:])
        fwd = make_spec_nd(rank, (1, 3, *target), (2, 3, *(2,) * rank), padding=padding, **options)
        if fwd.out_size != (size,) * rank:
            continue
        z = TRANSPOSE[rank](x, w, padding=padding, output_size=target, **options)
        probe = rng.standard_normal(z.shape)
        forward = CONV[rank](probe, w, padding=padding, **options)
        close_sums(dot(forward, x), dot(probe, z), 1e3, f"{target}")


# --- float64 central differences -----------------------------------------------------------

FD_CASES: list[tuple[int, dict[str, Any]]] = [
    (1, {"padding": "causal", "dilation": 3, "stride": 2}),
    (1, {"padding": ((2, 1),), "padding_mode": "reflect", "groups": 2, "flip": True}),
    (1, {"padding": "same", "dilation": 2, "padding_mode": "circular", "data_format": "NWC"}),
    (3, {"padding": 1, "dilation": (1, 2, 1), "stride": (2, 1, 1)}),
    (3, {"padding": "same", "padding_mode": "replicate", "groups": 2, "data_format": "NDHWC"}),
    (3, {"padding": ((1, 0), 1, (0, 2)), "padding_mode": "symmetric", "flip": True}),
]


def central_difference(f: Any, a: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    grad = np.empty_like(a)
    for idx in np.ndindex(*a.shape):
        old = a[idx]
        a[idx] = old + eps
        up = f()
        a[idx] = old - eps
        down = f()
        a[idx] = old
        grad[idx] = (up - down) / (2 * eps)
    return grad


@pytest.mark.parametrize(("rank", "options"), FD_CASES)
def test_finite_differences(rank: int, options: dict[str, Any]) -> None:
    """Gradients of ``sum(conv(x, w, b) * r)`` equal float64 central differences."""
    rng = np.random.default_rng(7)
    groups = options.get("groups", 1)
    c, o = 2 * groups, 2 * groups
    spatial, kernel = ((9,), (3,)) if rank == 1 else ((4, 5, 3), (2, 2, 2))
    last = not options.get("data_format", "NC").startswith("NC")
    if last:
        x = rng.standard_normal((2, *spatial, c))
        w = rng.standard_normal((*kernel, c // groups, o))
    else:
        x = rng.standard_normal((2, c, *spatial))
        w = rng.standard_normal((o, c // groups, *kernel))
    b = rng.standard_normal(o)
    r = rng.standard_normal(CONV[rank](x, w, b, **options).shape)
    fmt = {"data_format": options["data_format"]} if "data_format" in options else {}

    def loss() -> float:
        return float(np.sum(CONV[rank](x, w, b, **options) * r))

    gx = GRAD_INPUT[rank](r, w, x.shape, **options)
    gw = GRAD_WEIGHT[rank](x, r, w.shape, **options)
    gb = GRAD_BIAS[rank](r, **fmt)
    np.testing.assert_allclose(gx, central_difference(loss, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gw, central_difference(loss, w), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gb, central_difference(loss, b), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("rank", [1, 3])
def test_integer_gradients_are_exact(rank: int) -> None:
    rng = np.random.default_rng(8)
    x = rng.integers(-9, 10, size=(2, 2, *(7,) * rank))
    w = rng.integers(-9, 10, size=(3, 2, *(2,) * rank))
    spec = make_spec_nd(rank, x.shape, w.shape, dilation=2, padding=1, dtypes=[x.dtype])
    g = rng.integers(-9, 10, size=spec.out_shape)
    gx = GRAD_INPUT[rank](g, w, x.shape, dilation=2, padding=1)
    assert gx.dtype == np.int64
    assert np.array_equal(gx, oracle_nd.conv_transpose(g, w, spec))
    gw = GRAD_WEIGHT[rank](x, g, w.shape, dilation=2, padding=1)
    assert gw.dtype == np.int64
    assert dot(gw, w) == dot(oracle_nd.conv(x, w, None, spec), g)


@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("padding", ["same", ((2, 0), (1, 1), (0, 2))])
def test_a_stride_one_3d_input_gradient_is_one_forward_correlation(
    monkeypatch: pytest.MonkeyPatch, dilation: int, padding: Any
) -> None:
    """With stride 1 and one group, ``"auto"`` computes the 3-D input gradient as the
    forward correlation of the turned volume (every depth tap in one pass): the
    loop oracle's result within rounding, as the per-tap route gives; a named
    transposed-convolution method keeps the per-tap route."""
    from dilconv import _engine_nd

    rng = np.random.default_rng(dilation)
    x = rng.standard_normal((2, 6, 8, 8, 5)).astype(np.float32)
    w = rng.standard_normal((3, 3, 3, 5, 4)).astype(np.float32)
    options = {"padding": padding, "dilation": dilation, "data_format": "NDHWC"}
    spec = make_spec_nd(3, x.shape, w.shape, dtypes=[x.dtype], **options)
    g = rng.standard_normal(spec.out_shape).astype(np.float32)
    back = _engine_nd.turned(_engine_nd.volume(spec))
    assert back is not None
    assert _engine_nd.fuses_depth(back, x.shape[0])
    forwards: list[_engine_nd.Volume] = []
    real_forward = _engine_nd.forward

    def spy(*args: Any) -> np.ndarray:
        forwards.append(args[2])
        return real_forward(*args)

    monkeypatch.setattr(_engine_nd, "forward", spy)
    turned = dilconv.conv3d_grad_input(g, w, x.shape, **options)
    assert forwards == [back]
    per_tap = dilconv.conv3d_grad_input(g, w, x.shape, method="correlate", **options)
    assert len(forwards) == 1
    expected = oracle_nd.conv_transpose(g, w, spec)
    magnitude = oracle_nd.conv_transpose(np.abs(g), np.abs(w), spec)
    for actual in (turned, per_tap):
        assert_close(actual, expected, dtype=x.dtype, magnitude=magnitude, context=repr(options))


def test_strides_groups_and_wide_pads_keep_the_per_tap_adjoint() -> None:
    """No turned volume where a stride is not 1, with groups, or where a pad exceeds
    the kernel's reach (the correlation would need negative padding)."""
    from dilconv import _engine_nd

    def turned(**options: Any) -> Any:
        spec = make_spec_nd(3, (1, 4, 6, 6, 6), (4, 4 // options.get("groups", 1), 3, 3, 3),
                            dtypes=[np.dtype(np.float32)], **options)  # fmt: skip
        return _engine_nd.turned(_engine_nd.volume(spec))

    assert turned(padding=1) is not None
    assert turned(padding=1, stride=(1, 2, 1)) is None
    assert turned(padding=1, groups=2) is None
    assert turned(padding=((3, 0), (1, 1), (1, 1))) is None

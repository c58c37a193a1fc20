"""Gradients of conv2d: adjoint identities, float64 finite differences, structure, parity."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given

import dilconv
from dilconv._spec import PADDING_MODES, make_spec
from tests.extras import import_peer
from tests.strategies import Case, conv_cases
from tests.tolerance import assert_close


def dot(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(a.astype(np.float64) * b.astype(np.float64)))


# --- the adjoint identities, over the whole argument space --------------------------------


@given(case=conv_cases(dtypes=(np.float64,), bias=False))
def test_grad_input_is_the_adjoint(case: Case) -> None:
    """<conv2d(x, w), r> == <x, grad_input(r)> for every option and padding mode."""
    y = dilconv.conv2d(case.x, case.w, **case.options)
    r = np.random.default_rng(0).standard_normal(y.shape)
    gx = dilconv.conv2d_grad_input(r, case.w, case.x.shape, **case.options)
    scale = dot(dilconv.conv2d(np.abs(case.x), np.abs(case.w), **case.options), np.abs(r))
    assert_close(
        np.array(dot(case.x, gx)),
        np.array(dot(y, r)),
        magnitude=np.array(scale),
        kind="gradients",
        context=repr(case),
    )


@given(case=conv_cases(dtypes=(np.float64,), bias=False))
def test_grad_weight_is_the_adjoint(case: Case) -> None:
    """<conv2d(x, w), r> == <w, grad_weight(x, r)>: conv2d is linear in w too."""
    y = dilconv.conv2d(case.x, case.w, **case.options)
    r = np.random.default_rng(1).standard_normal(y.shape)
    gw = dilconv.conv2d_grad_weight(case.x, r, case.w.shape, **case.options)
    scale = dot(dilconv.conv2d(np.abs(case.x), np.abs(case.w), **case.options), np.abs(r))
    assert_close(
        np.array(dot(case.w, gw)),
        np.array(dot(y, r)),
        magnitude=np.array(scale),
        kind="gradients",
        context=repr(case),
    )


@given(case=conv_cases(dtypes=(np.float64,), bias=False, max_hw=8))
def test_grad_input_methods_agree(case: Case) -> None:
    """The fast methods equal the loop oracle; correlate refuses strides above 1."""
    y = dilconv.conv2d(case.x, case.w, **case.options)
    r = np.random.default_rng(2).standard_normal(y.shape)
    slow = dilconv.conv2d_grad_input(r, case.w, case.x.shape, method="direct", **case.options)
    mag = dilconv.conv2d_grad_input(
        np.abs(r), np.abs(case.w), case.x.shape, method="direct", **case.options
    )
    for method in ("scatter", "correlate", "auto"):
        if method == "correlate" and case.options["stride"] not in (1, (1, 1)):
            with pytest.raises(
                ValueError, match="method='correlate' cannot compute this call: needs stride"
            ):
                dilconv.conv2d_grad_input(r, case.w, case.x.shape, method=method, **case.options)
            continue
        fast = dilconv.conv2d_grad_input(r, case.w, case.x.shape, method=method, **case.options)
        assert_close(fast, slow, magnitude=mag, context=f"method={method} {case!r}")


# --- float64 central finite differences, every option, mode and layout -----------------

OPTION_SETS: list[dict[str, Any]] = [
    {},
    {"stride": 2},
    {"stride": (2, 3), "dilation": (2, 1)},
    {"dilation": 2, "padding": 2},
    {"dilation": 3, "padding": "same"},
    {"stride": 2, "dilation": 2, "padding": "same"},
    {"padding": "valid", "stride": 3},
    {"padding": "full", "dilation": 2},
    {"padding": ((1, 0), (2, 1)), "stride": 2, "dilation": (1, 2)},
    {"groups": 2},
    {"groups": 2, "stride": 2, "dilation": 2, "padding": 1},
    {"flip": True, "dilation": 2, "padding": 1},
]


def fd_cases() -> list[tuple[str, str, dict[str, Any]]]:
    """Each option set in both layouts, the padding modes in rotation, so that every
    mode meets several option sets in each layout."""
    cases = []
    for k, opts in enumerate(OPTION_SETS):
        cases.append((PADDING_MODES[k % 5], "NCHW", opts))
        cases.append((PADDING_MODES[(k + 2) % 5], "NHWC", opts))
    return cases


def make_arrays(
    mode: str, fmt: str, opts: dict[str, Any], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    rng = np.random.default_rng(seed)
    groups = opts.get("groups", 1)
    c, o, h, w, k = 2 * groups, 2 * groups, 7, 6, 2 if opts.get("stride") == 3 else 3
    if fmt == "NCHW":
        x_shape, w_shape = (2, c, h, w), (o, c // groups, k, k)
    else:
        x_shape, w_shape = (2, h, w, c), (k, k, c // groups, o)
    options = {"padding_mode": mode, "data_format": fmt, **opts}
    if mode != "zeros" and "padding" not in opts:
        options["padding"] = 1  # so that the mode matters
    return (
        rng.standard_normal(x_shape),
        rng.standard_normal(w_shape),
        rng.standard_normal(o),
        options,
    )


def central_difference(f: Any, a: np.ndarray, eps: float) -> np.ndarray:
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


@pytest.mark.parametrize(("mode", "fmt", "opts"), fd_cases())
def test_finite_differences(mode: str, fmt: str, opts: dict[str, Any]) -> None:
    seed = 1234
    x, w, b, options = make_arrays(mode, fmt, opts, seed)
    make_spec(x.shape, w.shape, **options)  # a valid call
    r = np.random.default_rng(seed + 1).standard_normal(
        dilconv.output_shape(
            x.shape,
            w.shape,
            **{k: v for k, v in options.items() if k not in ("padding_mode", "flip")},
        )
    )

    def loss() -> float:
        return dot(dilconv.conv2d(x, w, b, **options), r)

    eps = 1e-3
    # The loss is linear in each argument, so the only error of a central difference is
    # rounding: about one ulp of the loss's magnitude, divided by eps.
    scale = dot(dilconv.conv2d(np.abs(x), np.abs(w), np.abs(b), **options), np.abs(r)) / eps
    context = f"spec={options} seed={seed}"
    fd_x = central_difference(loss, x, eps)
    fd_w = central_difference(loss, w, eps)
    fd_b = central_difference(loss, b, eps)
    gx = dilconv.conv2d_grad_input(r, w, x.shape, **options)
    gw = dilconv.conv2d_grad_weight(x, r, w.shape, **options)
    gb = dilconv.conv2d_grad_bias(r, data_format=fmt)
    for name, got, want in (("x", gx, fd_x), ("w", gw, fd_w), ("bias", gb, fd_b)):
        assert_close(
            got,
            want,
            magnitude=np.full(want.shape, scale),
            kind="gradients",
            context=f"grad_{name} {context}",
        )


@pytest.mark.parametrize("rank", [2, 3])
def test_finite_differences_lower_ranks(rank: int) -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, 7) if rank == 2 else (2, 6, 7))
    w = rng.standard_normal((3, 2) if rank == 2 else (3, 2, 3, 2))
    options = {"stride": 2, "dilation": 2, "padding": 2, "padding_mode": "reflect"}
    y = dilconv.conv2d(x, w, **options)
    r = rng.standard_normal(y.shape)

    def loss() -> float:
        return dot(dilconv.conv2d(x, w, **options), r)

    eps = 1e-3
    scale = dot(dilconv.conv2d(np.abs(x), np.abs(w), **options), np.abs(r)) / eps
    for got, a in (
        (dilconv.conv2d_grad_input(r, w, x.shape, **options), x),
        (dilconv.conv2d_grad_weight(x, r, w.shape, **options), w),
    ):
        want = central_difference(loss, a, eps)
        assert_close(got, want, magnitude=np.full(want.shape, scale), kind="gradients")


# --- how the gradients are computed -----------------------------------------------------


@pytest.mark.parametrize(
    "opts",
    [
        {"stride": 2, "dilation": 3, "padding": 2},
        {"stride": 3, "dilation": 1, "padding": ((0, 2), (1, 0)), "groups": 2},
        {"stride": 1, "dilation": 2, "padding": "same"},
    ],
)
def test_grad_input_is_conv2d_transpose(opts: dict[str, Any]) -> None:
    """grad_input runs conv2d_transpose's code: bit-for-bit the same result."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 11, 10))
    w = rng.standard_normal((6, 4 // opts.get("groups", 1), 3, 3))
    y = dilconv.conv2d(x, w, **opts)
    g = rng.standard_normal(y.shape)
    pads = make_spec(x.shape, w.shape, **opts).pad
    tr = {k: v for k, v in opts.items() if k != "padding"}
    # "wait": each "auto" runs the model's choice, never a stand-in while it loads
    with dilconv.config_context(first_calls="wait"):
        expected = dilconv.conv2d_transpose(g, w, padding=pads, output_size=x.shape[2:], **tr)
        got = dilconv.conv2d_grad_input(g, w, x.shape, **opts)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(("stride", "dilation", "groups"), [(1, 1, 1), (2, 3, 1), (3, 2, 2)])
def test_grad_weight_is_swapped_correlation(stride: int, dilation: int, groups: int) -> None:
    """grad_weight is conv2d of the input, batch and channels exchanged, with the output
    gradient as kernel, stride and dilation swapped (one call per group)."""
    rng = np.random.default_rng(4)
    n, c, o, k = 3, 4, 6, 3
    x = rng.standard_normal((n, c, 13, 12))
    w_shape = (o, c // groups, k, k)
    pad = 1
    y_shape = dilconv.output_shape(
        x.shape, w_shape, stride=stride, padding=pad, dilation=dilation, groups=groups
    )
    g = rng.standard_normal(y_shape)
    got = dilconv.conv2d_grad_weight(
        x, g, w_shape, stride=stride, padding=pad, dilation=dilation, groups=groups
    )
    cg, og = c // groups, o // groups
    parts = []
    for grp in range(groups):
        xs = x[:, grp * cg : (grp + 1) * cg].transpose(1, 0, 2, 3)  # (C/groups, N, H, W)
        ks = g[:, grp * og : (grp + 1) * og].transpose(1, 0, 2, 3)  # (O/groups, N, Ho, Wo)
        full = dilconv.conv2d(xs, ks, stride=dilation, dilation=stride, padding=pad)
        parts.append(full[:, :, :k, :k].transpose(1, 0, 2, 3))  # (O/groups, C/groups, k, k)
    assert_close(got, np.concatenate(parts), kind="gradients")


def test_grad_weight_lands_on_a_fast_method() -> None:
    """The swapped correlation (a tiny kh x kw output, a 40 x 40 kernel of one channel)
    goes to a method that sums all taps at once (im2col's one product, or the blocked
    tiles), never to one with a pass per tap (shift_add: about 100x slower here)."""
    x = np.ones((1, 64, 40, 40), np.float32)
    g = np.ones((1, 32, 40, 40), np.float32)
    spec = make_spec(x.shape, (32, 64, 3, 3), padding="same", dilation=4)
    from dilconv import _select
    from dilconv.grad import _swapped

    xs, ks, swapped = _swapped(x, g, spec)
    assert xs.shape == (64, 40, 40, 1)
    assert ks.shape == (40, 40, 1, 32)
    assert swapped.out_hw == (3, 3)
    assert (swapped.stride, swapped.dilation) == ((4, 4), (1, 1))
    assert _select.resolve_method("auto", swapped) in {"im2col", "blocked"}


def test_flip_gradient_is_flipped_back() -> None:
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((1, 2, 9, 9)), rng.standard_normal((3, 2, 3, 2))
    g = rng.standard_normal(dilconv.output_shape(x.shape, w.shape, dilation=2))
    flipped = dilconv.conv2d_grad_weight(x, g, w.shape, dilation=2, flip=True)
    plain = dilconv.conv2d_grad_weight(x, g, w.shape, dilation=2)
    np.testing.assert_allclose(flipped, plain[..., ::-1, ::-1], rtol=1e-12, atol=1e-12)


def test_reflected_pixels_add_into_their_sources() -> None:
    """1-D by hand: reflect-pad [a, b, c] by 1 -> [b, a, b, c, b]; a 1-tap kernel reads all."""
    gx = dilconv.conv2d_grad_input(
        np.ones((1, 5)), np.ones((1, 1)), (1, 3), padding=((0, 0), (1, 1)), padding_mode="reflect"
    )
    np.testing.assert_array_equal(gx, [[1.0, 3.0, 1.0]])
    gx = dilconv.conv2d_grad_input(
        np.ones((1, 5)), np.ones((1, 1)), (1, 3), padding=((0, 0), (1, 1)), padding_mode="circular"
    )
    np.testing.assert_array_equal(gx, [[2.0, 1.0, 2.0]])


# --- dtypes -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_low_precision_dtypes(dtype: Any) -> None:
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 4, 10, 10))
    w = rng.standard_normal((5, 4, 3, 3))
    g = rng.standard_normal((1, 5, 10, 10))
    opts = {"padding": "same", "dilation": 2}
    ref_x = dilconv.conv2d_grad_input(g, w, x.shape, **opts)
    ref_w = dilconv.conv2d_grad_weight(x, g, w.shape, **opts)
    xl, wl, gl = x.astype(dtype), w.astype(dtype), g.astype(dtype)
    # the reference on the rounded inputs, so only the accumulation is being measured
    ref_x = dilconv.conv2d_grad_input(gl.astype(np.float64), wl.astype(np.float64), x.shape, **opts)
    ref_w = dilconv.conv2d_grad_weight(
        xl.astype(np.float64), gl.astype(np.float64), w.shape, **opts
    )
    mag_x = dilconv.conv2d_grad_input(
        np.abs(gl).astype(float), np.abs(wl).astype(float), x.shape, **opts
    )
    mag_w = dilconv.conv2d_grad_weight(
        np.abs(xl).astype(float), np.abs(gl).astype(float), w.shape, **opts
    )
    got_x = dilconv.conv2d_grad_input(gl, wl, x.shape, **opts)
    got_w = dilconv.conv2d_grad_weight(xl, gl, w.shape, **opts)
    assert_close(got_x, ref_x.astype(dtype), magnitude=mag_x, kind="gradients")
    assert_close(got_w, ref_w.astype(dtype), magnitude=mag_w, kind="gradients")
    assert dilconv.conv2d_grad_bias(gl).dtype == dtype


def test_integer_gradients_are_exact() -> None:
    rng = np.random.default_rng(8)
    x = rng.integers(-5, 6, (2, 3, 9, 8)).astype(np.int32)
    w = rng.integers(-5, 6, (4, 3, 3, 3)).astype(np.int8)
    opts = {"stride": 2, "dilation": 2, "padding": 2, "padding_mode": "replicate"}
    g = rng.integers(-5, 6, dilconv.output_shape(x.shape, w.shape, stride=2, padding=2, dilation=2))
    gx = dilconv.conv2d_grad_input(g, w, x.shape, **opts)
    gw = dilconv.conv2d_grad_weight(x, g, w.shape, **opts)
    assert gx.dtype == gw.dtype == np.int64
    np.testing.assert_array_equal(
        gx, dilconv.conv2d_grad_input(g.astype(float), w.astype(float), x.shape, **opts)
    )
    np.testing.assert_array_equal(
        gw, dilconv.conv2d_grad_weight(x.astype(float), g.astype(float), w.shape, **opts)
    )
    np.testing.assert_array_equal(dilconv.conv2d_grad_bias(g), g.sum(axis=(0, 2, 3)))


# --- parity with PyTorch ------------------------------------------------------------------


@pytest.mark.peers
@pytest.mark.parametrize(
    ("opts", "mode"),
    [
        ({"stride": 2, "dilation": 3, "padding": 3, "groups": 2}, "zeros"),
        ({"stride": 1, "dilation": 2, "padding": 2}, "reflect"),
        ({"stride": 2, "dilation": 1, "padding": 1}, "circular"),
        ({"stride": (1, 2), "dilation": (2, 1), "padding": (2, 1)}, "replicate"),
    ],
)
def test_matches_torch_autograd(opts: dict[str, Any], mode: str) -> None:
    torch = import_peer("torch")
    rng = np.random.default_rng(9)
    groups = opts.get("groups", 1)
    x = rng.standard_normal((2, 4, 11, 12))
    w = rng.standard_normal((6, 4 // groups, 3, 3))
    b = rng.standard_normal(6)
    layer = torch.nn.Conv2d(4, 6, 3, padding_mode=mode, bias=True, **opts).double()
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w))
        layer.bias.copy_(torch.from_numpy(b))
    xt = torch.from_numpy(x).requires_grad_(True)
    out = layer(xt)
    g = rng.standard_normal(tuple(out.shape))
    out.backward(torch.from_numpy(g))
    ours = {"padding_mode": mode, **opts}
    np.testing.assert_allclose(dilconv.conv2d(x, w, b, **ours), out.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(
        dilconv.conv2d_grad_input(g, w, x.shape, **ours), xt.grad.numpy(), atol=1e-12
    )
    np.testing.assert_allclose(
        dilconv.conv2d_grad_weight(x, g, w.shape, **ours), layer.weight.grad.numpy(), atol=1e-11
    )
    np.testing.assert_allclose(dilconv.conv2d_grad_bias(g), layer.bias.grad.numpy(), atol=1e-12)


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: dilconv.conv2d_grad_input(
                np.ones((1, 2, 4, 4)), np.ones((2, 1, 3, 3)), (1, 1, 7, 7)
            ),
            ValueError,
            r"grad_out must have the shape conv2d returns .*\(1, 2, 5, 5\), got \(1, 2, 4, 4\)",
        ),
        (
            lambda: dilconv.conv2d_grad_input(np.ones((1, 2, 5, 5)), np.ones((2, 1, 3, 3)), 7),
            TypeError,
            r"input_shape must be a tuple of ints, got 7",
        ),
        (
            lambda: dilconv.conv2d_grad_input(
                np.ones((1, 2, 5, 5)), np.ones((2, 1, 3, 3)), (1, 1, 7, 7), method="fft"
            ),
            ValueError,
            r"method must be 'auto' or one of "
            r"\['correlate', 'direct', 'phase', 'scatter'\], got 'fft'",
        ),
        (
            lambda: dilconv.conv2d_grad_weight(
                np.ones((1, 1, 7, 7)), np.ones((1, 2, 5, 5)), (2, 2, 3, 3)
            ),
            ValueError,
            r"w shape \(2, 2, 3, 3\) has 2 input channels per group",
        ),
        (
            lambda: dilconv.conv2d_grad_weight(
                np.ones((1, 1, 7, 7)), np.ones((1, 2, 5, 5)), (2, 1, 3, 3), method="magic"
            ),
            ValueError,
            r"method must be 'auto' or one of .*got 'magic'",
        ),
        (
            lambda: dilconv.conv2d_grad_weight(
                np.ones((1, 1, 7, 7)), np.ones((1, 2, 5, 5)), (2, 1, 3.0, 3)
            ),
            TypeError,
            r"weight_shape\[2\] must be an int, got 3.0",
        ),
        (
            lambda: dilconv.conv2d_grad_bias(np.ones(5)),
            ValueError,
            r"grad_out must be 2-D, 3-D or 4-D \(NCHW\), got 1-D shape \(5,\)",
        ),
        (
            lambda: dilconv.conv2d_grad_bias(np.ones((2, 2)), data_format="NWHC"),
            ValueError,
            r"data_format must be one of \['NCHW', 'NHWC'\], got 'NWHC'",
        ),
        (
            lambda: dilconv.conv2d_grad_bias(np.ones((2, 2), dtype=complex)),
            TypeError,
            r"grad_out has complex dtype",
        ),
    ],
)
def test_bad_input(call: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()

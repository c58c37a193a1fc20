"""A fuzz target over the whole public surface: an answer equal to the oracle's, or a
refusal with a message; never another exception.

Each example draws an entry point (``conv2d``, ``atrous_conv2d``,
``conv2d_transpose``, the three gradients), shapes (1x1 images, kernels as large as
the image), options (odd strides, huge dilations, every padding, padding mode,
layout and method), and arrays that are big-endian, non-contiguous, broadcast
(``np.broadcast_to``: zero strides, read-only) or read-only. The call must return
the loop oracle's answer within the tolerance table, or raise ValueError,
TypeError, OverflowError or MemoryError with a message. The oracle refusing the
call means the call must refuse too.

CI runs ``DILCONV_FUZZ_EXAMPLES`` examples (default 400, a few seconds once compiled). A
longer run: ``DILCONV_FUZZ_EXAMPLES=20000 python -m pytest tests/test_fuzz.py``
(hypothesis's ``thorough`` profile is not needed; the count is set here).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

import dilconv
from dilconv import _spec
from dilconv._methods import METHODS
from dilconv._transpose import TRANSPOSE_METHODS
from tests.test_numerics import winograd_magnitude
from tests.tolerance import TOLERANCE, assert_close

EXAMPLES = int(os.environ.get("DILCONV_FUZZ_EXAMPLES", "400"))
#: ``DILCONV_FUZZ_NATIVE=1`` (the checked-mode pass of ``tools/run_tests.py``): forward
#: only ``conv2d`` and ``grad_weight``, in float32 or float64, with small strides and
#: dilations, forward calls naming a method that runs dilconv's machine code, so that
#: checked examples reach it (with the whole surface, 400 examples made 4 checked
#: native calls).
NATIVE_ONLY = os.environ.get("DILCONV_FUZZ_NATIVE", "") == "1"
NATIVE_METHODS = ("blocked", "winograd")
#: The output limit during the fuzz run: huge dilations and strides with "full"
#: padding ask for outputs of many GiB, which must be refused, and the loop oracle
#: must stay quick on those it accepts.
OUTPUT_LIMIT = 256 * 2**10
REFUSALS = (ValueError, TypeError, OverflowError, MemoryError)
ENTRY_POINTS = ("conv2d", "atrous", "transpose", "grad_input", "grad_weight", "grad_bias")
DTYPES = ("f8", "f4", "f2", "i8", "i4", "u1")


@st.composite
def arrays(draw: st.DrawFn, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """An array of ``shape``: native or big-endian, contiguous or strided, broadcast,
    read-only."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if dtype[0] == "f":
        base = rng.standard_normal(shape)
    else:
        base = rng.integers(-4 if dtype[0] == "i" else 0, 5, shape)
    kind = draw(st.sampled_from(["plain", "big-endian", "strided", "broadcast", "read-only"]))
    order = ">" if kind == "big-endian" else "="
    a = base.astype(np.dtype(dtype).newbyteorder(order))
    if kind == "strided":
        wide = np.zeros(tuple(2 * n for n in shape), dtype=a.dtype)
        wide[tuple(slice(None, None, 2) for _ in shape)] = a
        a = wide[tuple(slice(None, None, 2) for _ in shape)]
    elif kind == "broadcast":
        a = np.broadcast_to(a.reshape(-1)[:1].reshape((1,) * len(shape)), shape)
    elif kind == "read-only":
        a.flags.writeable = False
    return a


@st.composite
def calls(draw: st.DrawFn) -> tuple[str, dict[str, Any], tuple[Any, ...]]:
    """``(entry point, options, arrays)`` of one public call."""
    entry = draw(st.sampled_from(("conv2d", "grad_weight") if NATIVE_ONLY else ENTRY_POINTS))
    rank = 4 if entry == "atrous" else draw(st.sampled_from([2, 3, 4]))
    fmt = "NHWC" if entry == "atrous" else draw(st.sampled_from(["NCHW", "NHWC"]))
    groups = 1 if rank == 2 or entry == "atrous" else draw(st.integers(1, 2))
    cg, og = (1, 1) if rank == 2 else (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    c, o, n = groups * cg, groups * og, draw(st.integers(1, 2))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    kh = draw(st.one_of(st.just(h), st.integers(1, 4)))  # often as large as the image
    kw = draw(st.one_of(st.just(w), st.integers(1, 4)))
    # mostly small, now and then huge (a call that must answer or refuse at once)
    huge = [] if NATIVE_ONLY else [10**4, 10**9, 2**31 - 1]
    steps = st.sampled_from([1, 1, 1, 2, 2, 3, 4, 5, 1, 2, 3, *huge])
    dilation = draw(steps if entry == "atrous" else st.one_of(steps, st.tuples(steps, steps)))
    stride = draw(st.one_of(steps, st.tuples(steps, steps)))
    keywords = ["same", "valid"] if entry == "transpose" else ["same", "valid", "full"]
    padding = draw(
        st.one_of(
            st.sampled_from(keywords),
            st.integers(0, 3),
            st.tuples(st.integers(0, 3), st.integers(0, 3)),
        )
    )
    dtypes = ("f4", "f8") if NATIVE_ONLY else DTYPES  # the compiled loops' dtypes
    dtype = draw(st.sampled_from(dtypes))
    wdtype = draw(st.sampled_from([dtype, *dtypes]))
    options: dict[str, Any] = {"stride": stride, "dilation": dilation, "padding": padding}
    if entry != "atrous":
        options.update(groups=groups, data_format=fmt)
    if entry in ("conv2d", "grad_input", "grad_weight"):
        options["padding_mode"] = draw(
            st.sampled_from(["zeros", "zeros", "reflect", "replicate", "circular", "symmetric"])
        )
        options["flip"] = draw(st.booleans())
    forward = list(NATIVE_METHODS) if NATIVE_ONLY else [*METHODS, "auto"]
    transposed = [*TRANSPOSE_METHODS, "auto"]
    methods = transposed if entry in ("transpose", "grad_input") else forward
    if entry not in ("atrous", "grad_bias"):
        options["method"] = draw(st.sampled_from(methods))

    def layout(batch: int, channels: int) -> tuple[int, ...]:
        full = (batch, channels, h, w) if fmt == "NCHW" else (batch, h, w, channels)
        return (h, w) if rank == 2 else full[4 - rank :]

    kernel = (kh, kw) if rank == 2 else ((o, cg, kh, kw) if fmt == "NCHW" else (kh, kw, cg, o))
    if entry == "transpose":
        kernel = (kh, kw) if rank == 2 else (c, og, kh, kw) if fmt == "NCHW" else (kh, kw, og, c)
    x = draw(arrays(layout(n, c), dtype))
    if entry == "grad_bias":
        return entry, {"data_format": fmt}, (x,)
    k = draw(arrays(kernel, wdtype))
    if entry in ("grad_input", "grad_weight"):
        try:
            out = dilconv.output_shape(x.shape, k.shape, **_shape_options(options))
        except REFUSALS:
            out = x.shape  # the call must refuse as the shape helper does
        if math.prod(out) * 8 > OUTPUT_LIMIT:  # the call must refuse: over the limit
            out = x.shape
        g = draw(arrays(out, wdtype))
        if entry == "grad_input":
            return entry, {**options, "input_shape": x.shape}, (g, k)
        return entry, {**options, "weight_shape": k.shape}, (x, g)
    return entry, options, (x, k)


def _shape_options(options: dict[str, Any]) -> dict[str, Any]:
    keep = ("stride", "dilation", "padding", "groups", "data_format")
    return {key: options[key] for key in keep if key in options}


def _function(entry: str) -> Callable[..., Any]:
    if entry == "atrous":
        return lambda x, w, **o: dilconv.atrous_conv2d(
            x, w, o["dilation"], o["padding"] if isinstance(o["padding"], str) else "VALID"
        )
    return {
        "conv2d": dilconv.conv2d,
        "transpose": dilconv.conv2d_transpose,
        "grad_input": lambda g, w, **o: dilconv.conv2d_grad_input(g, w, o.pop("input_shape"), **o),
        "grad_weight": lambda x, g, **o: dilconv.conv2d_grad_weight(
            x, g, o.pop("weight_shape"), **o
        ),
        "grad_bias": dilconv.conv2d_grad_bias,
    }[entry]


def _oracle(entry: str, options: dict[str, Any], arrays: tuple[Any, ...]) -> Any:
    if entry == "grad_bias":
        x = np.asarray(arrays[0])
        axes = tuple(a for a in range(x.ndim) if x.ndim > 2 and a != _channel_axis(x, options))
        total = x.astype(np.float64 if x.dtype.kind == "f" else object).sum(axis=axes or (0, 1))
        return np.atleast_1d(total)
    oracle = dict(options)
    if "method" in oracle or entry == "atrous":
        oracle["method"] = "direct"
    if entry == "atrous":
        return _function("conv2d")(*arrays, **_atrous_as_conv2d(options))
    return _function(entry)(*arrays, **oracle)


def _atrous_as_conv2d(options: dict[str, Any]) -> dict[str, Any]:
    padding = options["padding"] if isinstance(options["padding"], str) else "VALID"
    return {
        "dilation": options["dilation"],
        "padding": padding.lower() if padding.lower() in ("same", "valid") else "valid",
        "data_format": "NHWC",
        "method": "direct",
    }


def _channel_axis(x: np.ndarray, options: dict[str, Any]) -> int:
    if options.get("data_format", "NCHW") == "NHWC":
        return x.ndim - 1
    return 0 if x.ndim == 3 else 1


def _run(fn: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    try:
        return fn(), None
    except REFUSALS as refusal:
        return None, refusal


@settings(max_examples=EXAMPLES, deadline=None)
@given(call=calls())
def test_fuzz_public_surface(call: tuple[str, dict[str, Any], tuple[Any, ...]]) -> None:
    entry, options, arrays = call
    before, _spec.OUTPUT_LIMIT_BYTES = _spec.OUTPUT_LIMIT_BYTES, OUTPUT_LIMIT
    try:
        with np.errstate(all="ignore"):
            expected, oracle_refused = _run(lambda: _oracle(entry, dict(options), arrays))
            actual, refused = _run(lambda: _function(entry)(*arrays, **dict(options)))
    finally:
        _spec.OUTPUT_LIMIT_BYTES = before
    for refusal in (oracle_refused, refused):
        assert refusal is None or str(refusal), f"{type(refusal).__name__} without a message"
    context = f"{entry} {options} {[(a.shape, a.dtype, a.strides) for a in arrays]}"
    if oracle_refused is not None:
        assert refused is not None, f"the oracle refused ({oracle_refused}), the call did not"
        event(f"{entry}: refused, as the oracle")
        return
    if refused is not None:  # a method that does not take the call, or a limit
        event(f"{entry}: refused: {type(refused).__name__}")
        return
    event(f"{entry}: answered")
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, context
    assert actual.dtype.isnative, context
    if expected.dtype == object or actual.dtype.kind == "i":
        assert actual.dtype == np.int64, context
        assert actual.tolist() == expected.tolist(), context
        return
    method = options.get("method", "auto")
    scale = np.abs(expected).astype(np.float64)
    if entry in ("conv2d", "atrous") and np.asarray(arrays[0]).dtype.kind == "f":
        big = [np.abs(np.asarray(a, dtype=np.float64)) for a in arrays]
        conv_options = options if entry == "conv2d" else _atrous_as_conv2d(options)
        conv_options = {**conv_options, "method": "direct"}
        scale = dilconv.conv2d(*big, **conv_options)
        if method in ("winograd", "auto") or entry == "atrous":
            opts = {k: v for k, v in conv_options.items() if k != "method"}
            scale = np.maximum(scale, winograd_magnitude(*big, None, **opts))
    if entry == "grad_bias" and np.asarray(arrays[0]).dtype.kind == "f":
        # a sum's rounding scales with its terms, not with the sum (which may cancel)
        terms = np.abs(np.asarray(arrays[0], dtype=np.float64))
        scale = dilconv.conv2d_grad_bias(terms, **options)
    if method == "fft" or entry in ("transpose", "grad_input", "grad_weight"):
        scale = scale + (scale.max() if scale.size else 0)  # global rounding, or sums of sums
        scale = scale * 4
    dtype = actual.dtype if actual.dtype in TOLERANCE else np.dtype(np.float64)
    assert_close(
        actual, expected.astype(actual.dtype), dtype=dtype, magnitude=scale, context=context
    )


def test_fuzz_finding_a_bias_gradient_that_cancels() -> None:
    """Found by the long fuzz run: a float32 channel whose 30 terms sum to -0.037 is off
    by 1.2e-6, float32 rounding of terms as large as 2.4, which the check must allow."""
    g = np.random.default_rng(11).standard_normal((5, 6, 2)).astype(np.float32)
    g[..., 1] -= np.float32(g[..., 1].mean() - 0.037)
    exact = g.astype(np.float64).sum(axis=(0, 1))
    terms = np.abs(g.astype(np.float64)).sum(axis=(0, 1))
    got = dilconv.conv2d_grad_bias(g, data_format="NHWC")
    assert got.dtype == np.float32
    assert_close(got, exact.astype(np.float32), dtype=np.dtype(np.float32), magnitude=terms)


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("k", [4, 5, 6])
@pytest.mark.parametrize("method", ["direct", "im2col", "auto"])
def test_fuzz_finding_same_padding_past_the_option_limit(k: int, method: str, flip: bool) -> None:
    """Found by the long fuzz run: "same" at dilation 2**31 - 1 pads a 4-tap row by
    1.5 * (2**31 - 1), which the weight gradient's swapped problem refused (padding past
    2**31 - 1) while ``auto`` answered. The taps that read only padding are cut off
    now, so every method answers: zeros, or the one tap that reads the image (and
    ``im2col``, on a swapped problem whose stride is that dilation, counts one output
    row's slab as the kernel's reach, not the stride: it asked for 64 GiB)."""
    x = np.random.default_rng(12).standard_normal((1, 4))
    opts: dict[str, Any] = {"dilation": 2**31 - 1, "padding": "same", "flip": flip}
    g = np.random.default_rng(13).standard_normal(dilconv.conv2d(x, np.ones((1, k)), **opts).shape)
    got = dilconv.conv2d_grad_weight(x, g, (1, k), method=method, **opts)
    expected = np.zeros((1, k))
    if k % 2:  # the centre tap reads pixel j for output j
        expected[0, k // 2] = float((x * g).sum())
    assert_close(got, expected, magnitude=np.abs(x) @ np.abs(g).T * np.ones((1, k)))


@pytest.mark.parametrize(
    ("x", "w", "options"),
    [
        (np.ones((1, 1)), np.ones((1, 1)), {"dilation": 10**9, "padding": "same"}),
        (np.broadcast_to(2.0, (5, 5)), np.ones((5, 5)), {"padding": "full", "stride": 3}),
    ],
)
def test_fuzz_corners(x: np.ndarray, w: np.ndarray, options: dict[str, Any]) -> None:
    assert_close(dilconv.conv2d(x, w, **options), dilconv.conv2d(x, w, method="direct", **options))

"""TensorFlow: ``tf.nn.conv2d``, ``tf.nn.atrous_conv2d``, their transposes and ``GradientTape``.

TensorFlow computes NHWC on the CPU; cases in NCHW are transposed on the way in
and out. Its C++ logging is silenced before the first import.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from dilconv import _shapes
from dilconv.peers._base import (
    Case,
    Geometry,
    NotApplicable,
    Route,
    explicit_pads,
    flip_hwio,
    geometry,
    part,
    peer_errors,
    require,
    w_from,
    w_to,
    x_from,
    x_to,
)

#: dilconv's padding_mode -> ``tf.pad``'s mode (TensorFlow has no replicate or circular).
PAD_MODES = {"reflect": "REFLECT", "symmetric": "SYMMETRIC"}

Forward = Callable[[Any, Any, Geometry], Any]


def framework() -> ModuleType:
    """The ``tensorflow`` module (RouteUnavailable with the install command when missing)."""
    return require("tensorflow", "tensorflow")


def _nhwc_pads(pads: tuple[tuple[int, int], tuple[int, int]]) -> list[list[int]]:
    (t, b), (left, r) = pads
    return [[0, 0], [t, b], [left, r], [0, 0]]


def _padded(x: Any, w: Any, g: Geometry) -> tuple[Any, Any]:
    """``(x, padding)`` for a TensorFlow op: its own SAME/VALID/explicit, or ``tf.pad`` first."""
    tf = framework()
    in_hw, k_hw = (int(x.shape[1]), int(x.shape[2])), (int(w.shape[0]), int(w.shape[1]))
    if g.padding_mode == "zeros":
        if g.padding in ("same", "valid"):
            return x, str(g.padding).upper()
        return x, _nhwc_pads(explicit_pads(g, in_hw, k_hw))
    if g.padding_mode not in PAD_MODES:
        raise NotApplicable(f"tf.pad has no padding_mode={g.padding_mode!r}")
    pads = _nhwc_pads(explicit_pads(g, in_hw, k_hw))
    return tf.pad(x, pads, mode=PAD_MODES[g.padding_mode]), "VALID"


def forward_conv2d(x: Any, w: Any, g: Geometry) -> Any:
    """``tf.nn.conv2d`` on NHWC ``x`` and HWIO ``w`` (already flipped).

    TensorFlow has no ``groups`` argument: it infers the groups from the shapes,
    so a call whose shapes imply other groups than the case's is not this case.
    """
    channels, depth = int(x.shape[3]), int(w.shape[2])
    if depth and channels % depth == 0 and channels // depth != g.groups:
        raise NotApplicable(
            f"tf.nn.conv2d infers groups from the shapes ({x.shape[3]} channels, filter depth "
            f"{w.shape[2]}), so it cannot be told groups={g.groups}"
        )
    x, padding = _padded(x, w, g)
    return framework().nn.conv2d(
        x, w, strides=[1, *g.stride, 1], padding=padding, dilations=[1, *g.dilation, 1]
    )


def _atrous_rate(g: Geometry) -> int:
    if g.stride != (1, 1) or g.dilation[0] != g.dilation[1]:
        raise NotApplicable("atrous ops take stride 1 and one rate for both axes")
    if g.padding not in ("same", "valid") or g.padding_mode != "zeros":
        raise NotApplicable("atrous ops take padding 'SAME' or 'VALID' with zeros only")
    return g.dilation[0]


def forward_atrous(x: Any, w: Any, g: Geometry) -> Any:
    """``tf.nn.atrous_conv2d`` on NHWC ``x`` and HWIO ``w``."""
    rate = _atrous_rate(g)
    return framework().nn.atrous_conv2d(x, w, rate=rate, padding=str(g.padding).upper())


def _constant(a: np.ndarray | None) -> Any:
    return None if a is None else framework().constant(np.array(a))


def _forward_route(fn: Forward) -> Callable[[Case], np.ndarray]:
    def conv2d(case: Case) -> np.ndarray:
        g = geometry(case)
        w = w_to(part(case, "w"), g, "HWIO")
        w = flip_hwio(w) if g.flip else w
        x = x_to(part(case, "x"), g, "NHWC")
        if fn is forward_atrous:
            _atrous_rate(g)
        with peer_errors():
            y = fn(_constant(x), _constant(w), g)
            if case.bias is not None:
                y = framework().nn.bias_add(y, _constant(case.bias))
        return x_from(y.numpy(), g, "NHWC")

    return conv2d


def _grad_routes(fn: Forward) -> tuple[Callable[[Case], np.ndarray], Callable[[Case], np.ndarray]]:
    def grad_input(case: Case) -> np.ndarray:
        tf, g = framework(), geometry(case)
        w = w_to(part(case, "w"), g, "HWIO")
        w = flip_hwio(w) if g.flip else w
        x0 = _constant(x_to(np.zeros(case.x_shape, case.dtype), g, "NHWC"))
        if fn is forward_atrous:
            _atrous_rate(g)
        with peer_errors():
            with tf.GradientTape() as tape:
                tape.watch(x0)
                y = fn(x0, _constant(w), g)
            dy = _constant(x_to(part(case, "grad_out"), g, "NHWC"))
            grad = tape.gradient(y, x0, output_gradients=dy)
        return x_from(grad.numpy(), g, "NHWC")

    def grad_weight(case: Case) -> np.ndarray:
        tf, g = framework(), geometry(case)
        w0 = _constant(w_to(np.zeros(case.w_shape, case.dtype), g, "HWIO"))
        x = _constant(x_to(part(case, "x"), g, "NHWC"))
        if fn is forward_atrous:
            _atrous_rate(g)
        with peer_errors():
            with tf.GradientTape() as tape:
                tape.watch(w0)
                y = fn(x, w0, g)
            dy = _constant(x_to(part(case, "grad_out"), g, "NHWC"))
            grad = tape.gradient(y, w0, output_gradients=dy).numpy()
        return w_from(flip_hwio(grad) if g.flip else grad, g, "HWIO")

    return grad_input, grad_weight


def _transposed_hw(x: np.ndarray, w: np.ndarray, g: Geometry) -> tuple[int, int]:
    """The output size TensorFlow must be told (it checks it against its own rule)."""
    sizes = []
    for axis in range(2):
        i, k = x.shape[1 + axis], w.shape[axis]
        s, d, op = g.stride[axis], g.dilation[axis], g.output_padding[axis]
        if g.padding == "same":
            sizes.append(_shapes.transpose_same_size(i, s))
        elif g.padding == "valid":
            sizes.append(_shapes.transpose_valid_size(i, k, s, d))
        else:
            lo, hi = explicit_pads(g, (1, 1), (1, 1))[axis]
            sizes.append(_shapes.transpose_out_size(i, k, s, d, lo, hi, op))
    return sizes[0], sizes[1]


def _transpose(case: Case, atrous: bool) -> np.ndarray:
    tf, g = framework(), geometry(case)
    x = x_to(part(case, "x"), g, "NHWC")
    w = w_to(part(case, "w"), g, "HWIO")  # (kh, kw, C_out / groups, C_in)
    if g.output_padding != (0, 0) and isinstance(g.padding, str):
        raise NotApplicable("TensorFlow's SAME/VALID transposes take no output_padding")
    ho, wo = _transposed_hw(x, w, g)
    shape = [x.shape[0], ho, wo, w.shape[2] * g.groups]
    if atrous:
        rate = _atrous_rate(g)
        if g.groups != 1 or g.output_padding != (0, 0):
            raise NotApplicable("tf.nn.atrous_conv2d_transpose takes groups=1, no output_padding")
    with peer_errors():
        if atrous:
            y = tf.nn.atrous_conv2d_transpose(
                _constant(x), _constant(w), shape, rate=rate, padding=str(g.padding).upper()
            )
        else:
            padding: Any = (
                str(g.padding).upper()
                if isinstance(g.padding, str)
                else _nhwc_pads(explicit_pads(g, (1, 1), (1, 1)))
            )
            y = tf.nn.conv2d_transpose(
                _constant(x),
                _constant(w),
                shape,
                strides=[1, *g.stride, 1],
                padding=padding,
                dilations=[1, *g.dilation, 1],
            )
        if case.bias is not None:
            y = tf.nn.bias_add(y, _constant(case.bias))
    return x_from(y.numpy(), g, "NHWC")


def conv2d_transpose(case: Case) -> np.ndarray:
    """``tf.nn.conv2d_transpose``."""
    return _transpose(case, atrous=False)


def atrous_conv2d_transpose(case: Case) -> np.ndarray:
    """``tf.nn.atrous_conv2d_transpose`` (stride 1, one rate, SAME or VALID)."""
    return _transpose(case, atrous=True)


conv2d = _forward_route(forward_conv2d)
atrous_conv2d = _forward_route(forward_atrous)
conv2d_grad_input, conv2d_grad_weight = _grad_routes(forward_conv2d)
atrous_grad_input, atrous_grad_weight = _grad_routes(forward_atrous)

ROUTES = (
    Route("tensorflow", "conv2d", "tf.nn.conv2d", conv2d),
    Route("tensorflow", "conv2d", "tf.nn.atrous_conv2d", atrous_conv2d),
    Route("tensorflow", "conv2d_transpose", "tf.nn.conv2d_transpose", conv2d_transpose),
    Route(
        "tensorflow",
        "conv2d_transpose",
        "tf.nn.atrous_conv2d_transpose",
        atrous_conv2d_transpose,
    ),
    Route("tensorflow", "conv2d_grad_input", "GradientTape(tf.nn.conv2d)", conv2d_grad_input),
    Route("tensorflow", "conv2d_grad_input", "GradientTape(atrous_conv2d)", atrous_grad_input),
    Route("tensorflow", "conv2d_grad_weight", "GradientTape(tf.nn.conv2d)", conv2d_grad_weight),
    Route("tensorflow", "conv2d_grad_weight", "GradientTape(atrous_conv2d)", atrous_grad_weight),
)

"""JAX: ``lax.conv_general_dilated`` with ``rhs_dilation`` (and ``lhs_dilation`` for the
transposed convolution), gradients by JAX's transpose rule. float64 needs JAX's x64 mode,
switched on for each call only."""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from dilconv import _shapes
from dilconv.peers._base import (
    Case,
    Geometry,
    Route,
    explicit_pads,
    flip_hwio,
    flip_oihw,
    geometry,
    part,
    peer_errors,
    require,
    transposed_as_forward_oihw,
    w_from,
    w_to,
    x_from,
    x_to,
)

#: dilconv's padding_mode -> ``jnp.pad``'s mode.
PAD_MODES = {
    "reflect": "reflect",
    "replicate": "edge",
    "circular": "wrap",
    "symmetric": "symmetric",
}


def framework() -> ModuleType:
    """The ``jax`` module (RouteUnavailable when missing)."""
    return require("jax", "jax")


def x64(route: Callable[[Case], np.ndarray]) -> Callable[[Case], np.ndarray]:
    """Run a route with JAX's 64-bit mode on (float64 stays float64), for that call only,
    so that other users of JAX in the same process keep their default."""

    @functools.wraps(route)
    def wrapped(case: Case) -> np.ndarray:
        jax = framework()
        if hasattr(jax, "enable_x64"):
            with jax.enable_x64(True):
                return route(case)
        jax.config.update("jax_enable_x64", True)  # older JAX: no scoped switch
        return route(case)

    return wrapped


def _layouts(g: Geometry) -> tuple[str, str]:
    """The activation and weight layouts the case is computed in (its own, for 3-D and 4-D)."""
    fmt = "NCHW" if g.ndim == 2 else g.data_format
    return fmt, ("OIHW" if fmt == "NCHW" else "HWIO")


def forward(x: Any, w: Any, g: Geometry) -> Any:
    """``lax.conv_general_dilated`` in the case's layout, ``w`` already flipped."""
    jax = framework()
    fmt, wfmt = _layouts(g)
    h_axis = 2 if fmt == "NCHW" else 1
    k_axis = 2 if wfmt == "OIHW" else 0
    in_hw = (int(x.shape[h_axis]), int(x.shape[h_axis + 1]))
    k_hw = (int(w.shape[k_axis]), int(w.shape[k_axis + 1]))
    padding: Any
    if g.padding_mode == "zeros" and g.padding in ("same", "valid"):
        padding = str(g.padding).upper()
    else:
        padding = explicit_pads(g, in_hw, k_hw)
    if g.padding_mode != "zeros":
        widths = [(0, 0)] * 4
        widths[h_axis], widths[h_axis + 1] = padding
        x = jax.numpy.pad(x, widths, mode=PAD_MODES[g.padding_mode])
        padding = "VALID"
    return jax.lax.conv_general_dilated(
        x,
        w,
        window_strides=g.stride,
        padding=padding,
        rhs_dilation=g.dilation,
        dimension_numbers=(fmt, wfmt, fmt),
        feature_group_count=g.groups,
        precision=jax.lax.Precision.HIGHEST,
    )


def _weight(case: Case, g: Geometry, w: np.ndarray | None = None) -> np.ndarray:
    _, wfmt = _layouts(g)
    w = w_to(part(case, "w") if w is None else w, g, wfmt)
    if not g.flip:
        return w
    return flip_oihw(w) if wfmt == "OIHW" else flip_hwio(w)


def _bias(y: Any, bias: np.ndarray | None, fmt: str) -> Any:
    if bias is None:
        return y
    b = framework().numpy.asarray(np.array(bias))
    return y + (b[None, :, None, None] if fmt == "NCHW" else b)


@x64
def conv2d(case: Case) -> np.ndarray:
    """``lax.conv_general_dilated(rhs_dilation=d)``."""
    jnp, g = framework().numpy, geometry(case)
    fmt, _ = _layouts(g)
    x = jnp.asarray(x_to(part(case, "x"), g, fmt))
    with peer_errors():  # jitted: one compilation per case instead of one per primitive
        y = framework().jit(lambda x, w: forward(x, w, g))(x, jnp.asarray(_weight(case, g)))
        y = _bias(y, case.bias, fmt)
    return x_from(np.asarray(y), g, fmt)


def _transposed(f: Any, shape: tuple[int, ...], dtype: np.dtype, cotangent: np.ndarray) -> Any:
    """JAX's own transpose rule of the linear map ``f`` applied to ``cotangent`` (jitted: one
    compilation per case instead of one per primitive)."""
    jax = framework()
    transpose = jax.linear_transpose(f, jax.ShapeDtypeStruct(shape, dtype))
    (grad,) = jax.jit(transpose)(jax.numpy.asarray(cotangent))
    return np.asarray(grad)


@x64
def conv2d_grad_input(case: Case) -> np.ndarray:
    """The transpose (vector-Jacobian product) of the forward convolution in its input."""
    jax, g = framework(), geometry(case)
    fmt, _ = _layouts(g)
    w = jax.numpy.asarray(_weight(case, g))
    x_shape = x_to(np.zeros(case.x_shape, case.dtype), g, fmt).shape
    with peer_errors():
        grad = _transposed(
            lambda x: forward(x, w, g), x_shape, case.dtype, x_to(part(case, "grad_out"), g, fmt)
        )
    return x_from(grad, g, fmt)


@x64
def conv2d_grad_weight(case: Case) -> np.ndarray:
    """The transpose (vector-Jacobian product) of the forward convolution in its weights."""
    jax, g = framework(), geometry(case)
    fmt, wfmt = _layouts(g)
    x = jax.numpy.asarray(x_to(part(case, "x"), g, fmt))
    w_shape = _weight(case, g, np.zeros(case.w_shape, case.dtype)).shape
    with peer_errors():
        grad = _transposed(
            lambda w: forward(x, w, g), w_shape, case.dtype, x_to(part(case, "grad_out"), g, fmt)
        )
    if g.flip:
        grad = flip_oihw(grad) if wfmt == "OIHW" else flip_hwio(grad)
    return w_from(grad, g, wfmt)


@x64
def conv2d_transpose(case: Case) -> np.ndarray:
    """Explicit padding: ``conv_general_dilated(lhs_dilation=stride)`` over the zero-inserted
    input with the reversed, channel-swapped kernel. SAME/VALID: ``lax.conv_transpose``
    (TensorFlow's rule), one call per group."""
    jax, g = framework(), geometry(case)
    lax, jnp = jax.lax, jax.numpy
    if isinstance(g.padding, str):
        fmt, wfmt = _layouts(g)
        x = x_to(part(case, "x"), g, fmt)
        w = w_to(part(case, "w"), g, wfmt)
        c_axis, w_in_axis = (1, 0) if fmt == "NCHW" else (3, 3)
        with peer_errors():
            parts = [
                lax.conv_transpose(
                    jnp.asarray(xg),
                    jnp.asarray(wg),
                    strides=g.stride,
                    padding=str(g.padding).upper(),
                    rhs_dilation=g.dilation,
                    dimension_numbers=(fmt, wfmt, fmt),
                    transpose_kernel=True,
                    precision=lax.Precision.HIGHEST,
                )
                for xg, wg in zip(
                    np.split(x, g.groups, axis=c_axis),
                    np.split(w, g.groups, axis=w_in_axis),
                    strict=True,
                )
            ]
            y = _bias(jnp.concatenate(parts, axis=c_axis), case.bias, fmt)
        return x_from(np.asarray(y), g, fmt)
    x = x_to(part(case, "x"), g, "NCHW")
    w = transposed_as_forward_oihw(w_to(part(case, "w"), g, "OIHW"), g.groups)
    pads = []
    for axis in range(2):
        e = _shapes.effective_size(w.shape[2 + axis], g.dilation[axis]) - 1
        lo, hi = g.padding[axis]
        pads.append((e - lo, e - hi + g.output_padding[axis]))
    with peer_errors():
        y = lax.conv_general_dilated(
            jnp.asarray(x),
            jnp.asarray(w),
            window_strides=(1, 1),
            padding=pads,
            lhs_dilation=g.stride,
            rhs_dilation=g.dilation,
            dimension_numbers=("NCHW", "OIHW", "NCHW"),
            feature_group_count=g.groups,
            precision=lax.Precision.HIGHEST,
        )
        y = _bias(y, case.bias, "NCHW")
    return x_from(np.asarray(y), g, "NCHW")


ROUTES = (
    Route("jax", "conv2d", "lax.conv_general_dilated", conv2d),
    Route("jax", "conv2d_transpose", "lax.conv_general_dilated(lhs_dilation)", conv2d_transpose),
    Route(
        "jax", "conv2d_grad_input", "jax.linear_transpose(conv_general_dilated)", conv2d_grad_input
    ),
    Route(
        "jax",
        "conv2d_grad_weight",
        "jax.linear_transpose(conv_general_dilated)",
        conv2d_grad_weight,
    ),
)

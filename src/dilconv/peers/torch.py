"""PyTorch: ``F.conv2d``, ``F.conv_transpose2d`` and autograd; padding modes through ``F.pad``."""

from __future__ import annotations

import warnings
from types import ModuleType
from typing import Any

import numpy as np

from dilconv.peers._base import (
    Case,
    Geometry,
    NotApplicable,
    Route,
    explicit_pads,
    flip_oihw,
    geometry,
    part,
    peer_errors,
    require,
    w_from,
    w_to,
    x_from,
    x_to,
)

#: dilconv's padding_mode -> ``F.pad``'s mode (PyTorch has no "symmetric").
PAD_MODES = {"reflect": "reflect", "replicate": "replicate", "circular": "circular"}


def framework() -> ModuleType:
    """The ``torch`` module (RouteUnavailable with the install command when missing)."""
    return require("torch", "torch")


def tensor(a: np.ndarray | None) -> Any:
    """A copy of a NumPy array as a tensor (copying avoids read-only array warnings)."""
    return None if a is None else framework().tensor(np.array(a))


def forward(x: Any, w: Any, b: Any, g: Geometry) -> Any:
    """``F.conv2d`` on NCHW ``x`` and OIHW ``w`` (already flipped) with the case's options."""
    functional = framework().nn.functional
    in_hw, k_hw = (x.shape[2], x.shape[3]), (w.shape[2], w.shape[3])
    pad: Any
    if g.padding_mode == "zeros" and g.padding in ("same", "valid"):
        pad = g.padding
    elif g.padding_mode == "zeros" and g.symmetric_pads is not None:
        pad = g.symmetric_pads
    else:
        if g.padding_mode not in ("zeros", *PAD_MODES):
            raise NotApplicable(f"F.pad has no padding_mode={g.padding_mode!r}")
        (t, bottom), (left, r) = explicit_pads(g, in_hw, k_hw)
        mode = PAD_MODES.get(g.padding_mode, "constant")
        x = functional.pad(x, (left, r, t, bottom), mode=mode)
        pad = 0
    with warnings.catch_warnings():  # PyTorch's note that "same" may copy the input
        warnings.filterwarnings("ignore", "Using padding='same'", UserWarning)
        return functional.conv2d(
            x, w, b, stride=g.stride, padding=pad, dilation=g.dilation, groups=g.groups
        )


def conv2d(case: Case) -> np.ndarray:
    """``F.conv2d`` (the kernel reversed first when ``flip=True``)."""
    g = geometry(case)
    w = w_to(part(case, "w"), g, "OIHW")
    w = flip_oihw(w) if g.flip else w
    with peer_errors():
        y = forward(tensor(x_to(part(case, "x"), g, "NCHW")), tensor(w), tensor(case.bias), g)
    return x_from(y.numpy(), g, "NCHW")


def conv2d_transpose(case: Case) -> np.ndarray:
    """``F.conv_transpose2d`` (symmetric integer padding only)."""
    g = geometry(case)
    pads = g.symmetric_pads
    if pads is None:
        raise NotApplicable(
            f"F.conv_transpose2d takes symmetric integer padding only, not {g.padding!r}"
        )
    functional = framework().nn.functional
    with peer_errors():
        y = functional.conv_transpose2d(
            tensor(x_to(part(case, "x"), g, "NCHW")),
            tensor(w_to(part(case, "w"), g, "OIHW")),
            tensor(case.bias),
            stride=g.stride,
            padding=pads,
            output_padding=g.output_padding,
            groups=g.groups,
            dilation=g.dilation,
        )
    return x_from(y.detach().numpy(), g, "NCHW")


def conv2d_grad_input(case: Case) -> np.ndarray:
    """The input gradient of ``F.conv2d`` by autograd."""
    g = geometry(case)
    w = w_to(part(case, "w"), g, "OIHW")
    w = flip_oihw(w) if g.flip else w
    x0 = x_to(np.zeros(case.x_shape, case.dtype), g, "NCHW")
    with peer_errors():
        xt = tensor(x0).requires_grad_(True)
        y = forward(xt, tensor(w), None, g)
        y.backward(tensor(x_to(part(case, "grad_out"), g, "NCHW")))
    return x_from(xt.grad.numpy(), g, "NCHW")


def conv2d_grad_weight(case: Case) -> np.ndarray:
    """The weight gradient of ``F.conv2d`` by autograd."""
    g = geometry(case)
    w0 = w_to(np.zeros(case.w_shape, case.dtype), g, "OIHW")
    with peer_errors():
        wt = tensor(w0).requires_grad_(True)
        y = forward(tensor(x_to(part(case, "x"), g, "NCHW")), wt, None, g)
        y.backward(tensor(x_to(part(case, "grad_out"), g, "NCHW")))
    grad = wt.grad.numpy()
    return w_from(flip_oihw(grad) if g.flip else grad, g, "OIHW")


ROUTES = (
    Route("torch", "conv2d", "F.conv2d", conv2d),
    Route("torch", "conv2d_transpose", "F.conv_transpose2d", conv2d_transpose),
    Route("torch", "conv2d_grad_input", "autograd(F.conv2d)", conv2d_grad_input),
    Route("torch", "conv2d_grad_weight", "autograd(F.conv2d)", conv2d_grad_weight),
)

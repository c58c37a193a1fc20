"""SciPy: ``signal.convolve2d`` (``flip=True``) and ``signal.correlate2d`` for single-channel cases.

The kernel is dilated by hand (zeros between taps, the tutorial's method), the
input padded with ``numpy.pad`` when the padding is not SciPy's own, and a
stride taken by slicing the stride-1 result.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from dilconv.peers._base import (
    Case,
    NotApplicable,
    Route,
    explicit_pads,
    geometry,
    part,
    peer_errors,
    require,
    w_to,
    x_from,
    x_to,
)

#: dilconv's padding_mode -> ``numpy.pad``'s mode.
PAD_MODES: dict[str, Any] = {
    "zeros": "constant",
    "reflect": "reflect",
    "replicate": "edge",
    "circular": "wrap",
    "symmetric": "symmetric",
}


def framework() -> ModuleType:
    """``scipy.signal`` (RouteUnavailable with the install command when missing)."""
    return require("scipy.signal", "scipy")


def conv2d(case: Case) -> np.ndarray:
    """``convolve2d`` / ``correlate2d`` with the hand-dilated kernel, one image at a time."""
    signal, g = framework(), geometry(case)
    x = x_to(part(case, "x"), g, "NCHW")
    w = w_to(part(case, "w"), g, "OIHW")
    if x.shape[1] != 1 or w.shape[0] != 1:
        raise NotApplicable("convolve2d/correlate2d take one channel in and out")
    (dh, dw), (sh, sw) = g.dilation, g.stride
    kernel = np.zeros(((w.shape[2] - 1) * dh + 1, (w.shape[3] - 1) * dw + 1), dtype=w.dtype)
    kernel[::dh, ::dw] = w[0, 0]
    fn = signal.convolve2d if g.flip else signal.correlate2d
    native_same = (
        g.padding == "same" and g.stride == (1, 1) and kernel.shape[0] % 2 and kernel.shape[1] % 2
    )
    if g.padding_mode == "zeros" and (g.padding in ("valid", "full") or native_same):
        mode = str(g.padding)
    else:
        pads = explicit_pads(g, (x.shape[2], x.shape[3]), (w.shape[2], w.shape[3]))
        x = np.pad(x, ((0, 0), (0, 0), *pads), mode=PAD_MODES[g.padding_mode])
        mode = "valid"
    with peer_errors():
        y = np.stack([fn(image[0], kernel, mode=mode)[::sh, ::sw] for image in x])[:, None]
    if case.bias is not None:
        y = y + case.bias.astype(y.dtype)
    return x_from(y.astype(np.result_type(x, w), copy=False), g, "NCHW")


ROUTES = (Route("scipy", "conv2d", "signal.convolve2d/correlate2d", conv2d),)

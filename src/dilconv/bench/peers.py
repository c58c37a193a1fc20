"""The peers' own operations, timed on arrays already in each peer's preferred form.

Every builder takes NumPy arrays in dilconv's canonical layout (NHWC input, HWIO
weights) and returns ``{label: thunk}``: a thunk runs the peer's operation once on
tensors prepared beforehand (layout conversion and tensor creation are not timed)
and returns a NumPy array in NHWC, used once to check that the peer computes the
same thing. A peer that is not installed gives no thunks, and its reason is kept.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

Thunk = Callable[[], Any]
Peers = dict[str, Thunk]

#: Why a peer is missing, by peer name (filled as the builders run).
MISSING: dict[str, str] = {}


def _load(name: str) -> ModuleType | None:
    if name == "tensorflow":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        return importlib.import_module(name)
    except ImportError as err:
        MISSING[name] = f"{name} is not installed ({err})"
        return None


def enabled(peers: tuple[str, ...], name: str) -> ModuleType | None:
    """The peer's module when it is asked for and importable."""
    if name not in peers:
        return None
    return _load(name)


def _torch_pads(pad: tuple[tuple[int, int], tuple[int, int]]) -> tuple[int, int] | None:
    (t, b), (lf, r) = pad
    return (t, lf) if (t, lf) == (b, r) else None


def torch_conv2d(
    x: np.ndarray, w: np.ndarray, pad: Any, dilation: int, peers: tuple[str, ...]
) -> Peers:
    """``F.conv2d`` in NCHW and channels_last memory formats."""
    torch = enabled(peers, "torch")
    if torch is None:
        return {}
    f = torch.nn.functional
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    wt = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))
    sym = _torch_pads(pad)
    padding: Any = sym if sym is not None else "same"
    out: Peers = {}
    for label, fmt in (("torch NCHW", torch.contiguous_format), ("torch CL", torch.channels_last)):
        xf, wf = xt.contiguous(memory_format=fmt), wt.contiguous(memory_format=fmt)

        def run(xf: Any = xf, wf: Any = wf) -> Any:
            with torch.no_grad():
                return f.conv2d(xf, wf, padding=padding, dilation=dilation)

        out[label] = run
    return out


def tf_conv2d(x: np.ndarray, w: np.ndarray, dilation: int, peers: tuple[str, ...]) -> Peers:
    """``tf.nn.conv2d`` with dilations and ``tf.nn.atrous_conv2d`` (NHWC, SAME)."""
    tf = enabled(peers, "tensorflow")
    if tf is None:
        return {}
    xt, wt = tf.constant(x), tf.constant(w)
    return {
        "tf conv2d": lambda: tf.nn.conv2d(
            xt, wt, strides=1, padding="SAME", dilations=[1, dilation, dilation, 1]
        ),
        "tf atrous": lambda: tf.nn.atrous_conv2d(xt, wt, rate=dilation, padding="SAME"),
    }


def scipy_single(x: np.ndarray, w: np.ndarray, dilation: int, peers: tuple[str, ...]) -> Peers:
    """``scipy.signal.convolve2d`` with the dilated kernel, and ``scipy.ndimage.correlate``."""
    if "scipy" not in peers:
        return {}
    from scipy import ndimage, signal

    from dilconv import dilate_kernel

    image, kernel = x[0, :, :, 0], dilate_kernel(w[:, :, 0, 0], dilation)
    flipped = np.ascontiguousarray(kernel[::-1, ::-1])
    return {
        "scipy convolve2d": lambda: signal.convolve2d(image, flipped, mode="same"),
        "ndimage correlate": lambda: ndimage.correlate(image, kernel, mode="constant"),
    }


def torch_backward(
    x: np.ndarray, w: np.ndarray, g: np.ndarray, dilation: int, peers: tuple[str, ...]
) -> Peers:
    """grad_input and grad_weight of ``F.conv2d``, the op autograd runs (no forward)."""
    torch = enabled(peers, "torch")
    if torch is None:
        return {}
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    wt = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))
    gt = torch.from_numpy(np.ascontiguousarray(g.transpose(0, 3, 1, 2)))
    pad = (w.shape[0] - 1) * dilation // 2, (w.shape[1] - 1) * dilation // 2
    out: Peers = {}
    for label, fmt in (("torch NCHW", torch.contiguous_format), ("torch CL", torch.channels_last)):
        xf, wf, gf = (a.contiguous(memory_format=fmt) for a in (xt, wt, gt))

        def run(xf: Any = xf, wf: Any = wf, gf: Any = gf) -> Any:
            return torch.ops.aten.convolution_backward(
                gf,
                xf,
                wf,
                None,
                [1, 1],
                list(pad),
                [dilation, dilation],
                False,
                [0, 0],
                1,
                [True, True, False],
            )

        out[label] = run
    return out


def tf_backward(
    x: np.ndarray, w: np.ndarray, g: np.ndarray, dilation: int, peers: tuple[str, ...]
) -> Peers:
    """grad_input and grad_weight of ``tf.nn.conv2d`` by ``tf.GradientTape``."""
    tf = enabled(peers, "tensorflow")
    if tf is None:
        return {}
    xt, wt, gt = tf.constant(x), tf.constant(w), tf.constant(g)

    def run() -> Any:
        with tf.GradientTape() as tape:
            tape.watch([xt, wt])
            y = tf.nn.conv2d(xt, wt, strides=1, padding="SAME", dilations=dilation)
        return tape.gradient(y, [xt, wt], output_gradients=gt)

    return {"tf GradientTape": run}


def torch_transpose(
    x: np.ndarray, w: np.ndarray, stride: int, dilation: int, peers: tuple[str, ...]
) -> Peers:
    """``F.conv_transpose2d`` giving TensorFlow's SAME size ``H * stride``.

    ``w`` is TensorFlow's ``(kh, kw, C_out, C_in)``.
    """
    torch = enabled(peers, "torch")
    if torch is None:
        return {}
    k_eff = dilation * (w.shape[0] - 1) + 1
    total = k_eff - stride  # full-size crop that leaves H * stride
    pad, extra = (total + 1) // 2, (total + 1) // 2 * 2 - total
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    wt = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))
    out: Peers = {}
    for label, fmt in (("torch NCHW", torch.contiguous_format), ("torch CL", torch.channels_last)):
        xf, wf = xt.contiguous(memory_format=fmt), wt.contiguous(memory_format=fmt)

        def run(xf: Any = xf, wf: Any = wf) -> Any:
            with torch.no_grad():
                y = torch.nn.functional.conv_transpose2d(
                    xf, wf, stride=stride, padding=pad, output_padding=extra, dilation=dilation
                )
            return y

        out[label] = run
    return out


def tf_transpose(
    x: np.ndarray, w: np.ndarray, stride: int, dilation: int, peers: tuple[str, ...]
) -> Peers:
    """``tf.nn.conv2d_transpose`` with SAME padding (``w`` is ``(kh, kw, C_out, C_in)``)."""
    tf = enabled(peers, "tensorflow")
    if tf is None:
        return {}
    n, h, wd, _ = x.shape
    shape = [n, h * stride, wd * stride, w.shape[2]]
    xt, wt = tf.constant(x), tf.constant(w)
    return {
        "tf conv2d_transpose": lambda: tf.nn.conv2d_transpose(
            xt, wt, shape, strides=stride, padding="SAME", dilations=dilation
        )
    }


def to_nhwc(result: Any, label: str) -> np.ndarray | None:
    """A peer's result as an NHWC NumPy array, for the agreement check (None: not comparable)."""
    if isinstance(result, (list, tuple)):
        return None
    a = result.numpy() if hasattr(result, "numpy") else np.asarray(result)
    if label.startswith("torch") or label.endswith("NCHW"):
        a = np.moveaxis(a, 1, -1)  # NCHW (or NCW, NCDHW) -> channels-last
    elif a.ndim == 2:
        a = a[None, :, :, None]
    return np.asarray(a)

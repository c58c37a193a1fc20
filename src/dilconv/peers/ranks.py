"""The peers in 1-D and 3-D: the routes of ``conv1d``, ``conv3d``, their transposes and gradients.

* PyTorch: ``F.conv1d`` / ``F.conv3d`` (padding modes through ``F.pad``),
  ``F.conv_transpose1d`` / ``F.conv_transpose3d``, autograd.
* TensorFlow: ``tf.nn.conv1d``, ``tf.nn.conv3d``, ``tf.nn.convolution``,
  ``tf.nn.conv1d_transpose``, ``tf.nn.conv3d_transpose``, ``GradientTape``, and
  Keras ``Conv1D(padding="causal")``.
* JAX: ``lax.conv_general_dilated`` (``lhs_dilation`` for the transposes, ``jax.vjp``
  for the gradients).
* NumPy/SciPy, one channel: ``np.convolve`` (1-D) and ``scipy.ndimage.correlate`` (3-D)
  with the kernel dilated by hand.

Every route takes a :class:`~dilconv.peers.Case` in dilconv's layout and returns
dilconv's layout; arrays are moved to channels-first ``(N, C, *spatial)`` (or
channels-last) batched form on the way in and back on the way out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from dilconv import _shapes
from dilconv._spec_nd import PadsN, as_tuple, parse_padding_nd, resolve_pads_nd
from dilconv.peers._base import (
    Case,
    NotApplicable,
    PeerRefused,
    Route,
    part,
    peer_errors,
    require,
)


def rank_of(op: str) -> int:
    """1 or 3, from the operation's name."""
    return int(op[4])


@dataclasses.dataclass(frozen=True)
class GeometryN:
    """A case's options, normalised, for any rank."""

    rank: int
    first: bool
    ndim: int
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    padding: str | PadsN
    padding_mode: str
    flip: bool
    output_padding: tuple[int, ...]

    def pads(self, size: tuple[int, ...], kernel: tuple[int, ...]) -> PadsN:
        """Explicit pads of the forward convolution."""
        return resolve_pads_nd(self.padding, size, kernel, self.stride, self.dilation)

    def symmetric(self) -> tuple[int, ...] | None:
        """One int per axis when the pads are explicit and equal on both sides."""
        if isinstance(self.padding, str) or any(lo != hi for lo, hi in self.padding):
            return None
        return tuple(lo for lo, _ in self.padding)


def geometry(case: Case) -> GeometryN:
    """The normalised options of a case."""
    rank, opts = rank_of(case.op), case.options
    fmt = opts.get("data_format", "NCW" if rank == 1 else "NCDHW")
    return GeometryN(
        rank=rank,
        first=fmt.startswith("NC"),
        ndim=len(case.x_shape),
        stride=as_tuple("stride", opts.get("stride", 1), rank, minimum=1),
        dilation=as_tuple("dilation", opts.get("dilation", 1), rank, minimum=1),
        groups=int(opts.get("groups", 1)),
        padding=parse_padding_nd(opts.get("padding", 0), rank),
        padding_mode=opts.get("padding_mode", "zeros"),
        flip=bool(opts.get("flip", False)),
        output_padding=as_tuple("output_padding", opts.get("output_padding", 0), rank, minimum=0),
    )


# --- layouts ---------------------------------------------------------------------------------


def x_first(a: np.ndarray, g: GeometryN) -> np.ndarray:
    """Activations in the case's layout -> batched channels-first ``(N, C, *spatial)``."""
    if g.ndim == g.rank:
        return np.ascontiguousarray(a[None, None])
    a = a[None] if g.ndim == g.rank + 1 else a
    return np.ascontiguousarray(a if g.first else np.moveaxis(a, -1, 1))


def x_back(a: np.ndarray, g: GeometryN) -> np.ndarray:
    """Batched channels-first -> the case's layout and rank."""
    if g.ndim == g.rank:
        return np.ascontiguousarray(a[0, 0])
    a = a if g.first else np.moveaxis(a, 1, -1)
    return np.ascontiguousarray(a[0] if g.ndim == g.rank + 1 else a)


def w_first(w: np.ndarray, g: GeometryN) -> np.ndarray:
    """Weights in the case's layout -> ``(O, C/g, *kernel)`` (or the transposed
    ``(C_in, C_out/g, *kernel)``: the same two axes)."""
    if g.ndim == g.rank:
        return np.ascontiguousarray(w[None, None])
    return np.ascontiguousarray(w if g.first else np.moveaxis(w, (-1, -2), (0, 1)))


def w_back(w: np.ndarray, g: GeometryN) -> np.ndarray:
    """``(O, C/g, *kernel)`` -> the case's weight layout."""
    if g.ndim == g.rank:
        return np.ascontiguousarray(w[0, 0])
    return np.ascontiguousarray(w if g.first else np.moveaxis(w, (0, 1), (-1, -2)))


def flipped(w: np.ndarray, rank: int) -> np.ndarray:
    """``(O, I, *kernel)`` reversed along every spatial axis."""
    index = (slice(None), slice(None)) + (slice(None, None, -1),) * rank
    return np.ascontiguousarray(w[index])


def prepared(case: Case) -> tuple[GeometryN, np.ndarray, np.ndarray, PadsN]:
    """Geometry, channels-first ``x`` and (flipped) ``w``, and the explicit pads."""
    g = geometry(case)
    x = x_first(part(case, "x"), g) if case.x is not None else None
    w = w_first(part(case, "w"), g) if case.w is not None else None
    xs = x_first(np.zeros(case.x_shape), g).shape[2:]
    ws = w_first(np.zeros(case.w_shape), g).shape[2:]
    if w is not None and g.flip:
        w = flipped(w, g.rank)
    return g, x, w, g.pads(xs, ws)  # type: ignore[return-value]


# --- PyTorch ---------------------------------------------------------------------------------

_TORCH_MODES = {
    "zeros": "constant",
    "reflect": "reflect",
    "replicate": "replicate",
    "circular": "circular",
}


def _torch_forward(x: Any, w: Any, b: Any, g: GeometryN, pads: PadsN) -> Any:
    torch = require("torch", "torch")
    functional = torch.nn.functional
    if g.padding_mode not in _TORCH_MODES:
        raise NotApplicable(f"F.pad has no padding_mode={g.padding_mode!r}")
    flat = [p for lo_hi in reversed(pads) for p in lo_hi]
    if any(flat):
        x = functional.pad(x, flat, mode=_TORCH_MODES[g.padding_mode])
    conv = functional.conv1d if g.rank == 1 else functional.conv3d
    return conv(x, w, b, stride=g.stride, dilation=g.dilation, groups=g.groups)


def _tensor(a: np.ndarray | None) -> Any:
    return None if a is None else require("torch", "torch").tensor(np.array(a))


def torch_conv(case: Case) -> np.ndarray:
    """``F.conv1d`` / ``F.conv3d`` after ``F.pad``."""
    g, x, w, pads = prepared(case)
    with peer_errors():
        y = _torch_forward(_tensor(x), _tensor(w), _tensor(case.bias), g, pads)
    return x_back(y.detach().numpy(), g)


def torch_transpose(case: Case) -> np.ndarray:
    """``F.conv_transpose1d`` / ``F.conv_transpose3d`` (symmetric integer padding only)."""
    g = geometry(case)
    pads = g.symmetric()
    if pads is None:
        raise NotApplicable(
            f"F.conv_transpose{g.rank}d takes symmetric pads only, not {g.padding!r}"
        )
    functional = require("torch", "torch").nn.functional
    fn = functional.conv_transpose1d if g.rank == 1 else functional.conv_transpose3d
    with peer_errors():
        y = fn(
            _tensor(x_first(part(case, "x"), g)),
            _tensor(w_first(part(case, "w"), g)),
            _tensor(case.bias),
            stride=g.stride,
            padding=pads,
            output_padding=g.output_padding,
            groups=g.groups,
            dilation=g.dilation,
        )
    return x_back(y.detach().numpy(), g)


def torch_grad_input(case: Case) -> np.ndarray:
    """The input gradient of the forward route, by autograd."""
    g, _, w, pads = prepared(case)
    x0 = x_first(np.zeros(case.x_shape, case.dtype), g)
    with peer_errors():
        xt = _tensor(x0).requires_grad_(True)
        _torch_forward(xt, _tensor(w), None, g, pads).backward(
            _tensor(x_first(part(case, "grad_out"), g))
        )
    return x_back(xt.grad.numpy(), g)


def torch_grad_weight(case: Case) -> np.ndarray:
    """The weight gradient of the forward route, by autograd."""
    g, x, _, pads = prepared(case)
    w0 = w_first(np.zeros(case.w_shape, case.dtype), g)
    with peer_errors():
        wt = _tensor(w0).requires_grad_(True)
        _torch_forward(_tensor(x), wt, None, g, pads).backward(
            _tensor(x_first(part(case, "grad_out"), g))
        )
    grad = wt.grad.numpy()
    return w_back(flipped(grad, g.rank) if g.flip else grad, g)


# --- TensorFlow ------------------------------------------------------------------------------

_TF_MODES = {"zeros": "CONSTANT", "reflect": "REFLECT", "symmetric": "SYMMETRIC"}


def _tf() -> Any:
    return require("tensorflow", "tensorflow")


def _last(a: np.ndarray) -> np.ndarray:
    """``(N, C, *S)`` -> ``(N, *S, C)``."""
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


def _first(a: Any) -> np.ndarray:
    """``(N, *S, C)`` -> ``(N, C, *S)``."""
    return np.ascontiguousarray(np.moveaxis(np.asarray(a), -1, 1))


def _w_last(w: np.ndarray) -> np.ndarray:
    """``(O, I, *k)`` -> ``(*k, I, O)``."""
    return np.ascontiguousarray(np.moveaxis(w, (0, 1), (-1, -2)))


def _tf_padded(x: Any, g: GeometryN, pads: PadsN, native: bool) -> tuple[Any, str]:
    """``(x, padding)``: TensorFlow's own SAME/VALID where it is the case's, else ``tf.pad``."""
    if g.padding_mode == "zeros" and native and g.padding in ("same", "valid"):
        return x, str(g.padding).upper()
    if g.padding_mode not in _TF_MODES:
        raise NotApplicable(f"tf.pad has no padding_mode={g.padding_mode!r}")
    widths = [[0, 0], *([lo, hi] for lo, hi in pads), [0, 0]]
    if any(v for pair in widths for v in pair):
        x = _tf().pad(x, widths, mode=_TF_MODES[g.padding_mode])
    return x, "VALID"


def _tf_same_crops(x: Any, w: Any, g: GeometryN) -> bool:
    """Whether TensorFlow's own ``SAME`` would need a negative pad on some axis (the
    stride reaches past the kernel's span: ``(ceil(i / s) - 1) * s + d * (k - 1) + 1 < i``).

    Its documented rule pads ``max(total, 0)``, and dilconv follows it; its CPU
    ``Conv3D`` crops instead (verify, seed 788: ``x`` (2, 2, 3, 4, 3), depth kernel 1,
    stride 3, read depth 1 where the rule reads depth 0; no zero padding reproduces
    its output). Such cases are given to TensorFlow padded explicitly, as ``VALID``.
    """
    sizes, kernel = [int(v) for v in x.shape[1:-1]], [int(v) for v in w.shape[:-2]]
    for i, k, s, d in zip(sizes, kernel, g.stride, g.dilation, strict=True):
        if (-(-i // s) - 1) * s + d * (k - 1) + 1 < i:
            return True
    return False


def _check_groups(channels: int, depth: int, g: GeometryN, name: str) -> None:
    if channels // depth != g.groups:
        raise NotApplicable(
            f"{name} infers groups from the shapes ({channels} channels, filter depth "
            f"{depth}), so it cannot be told groups={g.groups}"
        )


def _tf_forward(name: str) -> Callable[[Any, Any, GeometryN, PadsN], Any]:
    def forward(x: Any, w: Any, g: GeometryN, pads: PadsN) -> Any:
        tf = _tf()
        _check_groups(int(x.shape[-1]), int(w.shape[-2]), g, name)
        if g.rank == 3 and g.groups != 1:
            raise NotApplicable(f"{name} in 3-D (Conv3D) has no groups")
        native = not (g.padding == "same" and _tf_same_crops(x, w, g))
        x, padding = _tf_padded(x, g, pads, native=native)
        if name == "tf.nn.convolution":
            return tf.nn.convolution(
                x, w, strides=list(g.stride), padding=padding, dilations=list(g.dilation)
            )
        if name == "tf.nn.conv1d":
            return tf.nn.conv1d(x, w, stride=g.stride[0], padding=padding, dilations=g.dilation[0])
        return tf.nn.conv3d(
            x, w, strides=[1, *g.stride, 1], padding=padding, dilations=[1, *g.dilation, 1]
        )

    return forward


def _tape_gradient(tape: Any, y: Any, source: Any, grad_out: np.ndarray) -> Any:
    """``tape.gradient``; an AttributeError raised inside TensorFlow's own gradient
    function (``tf.nn.convolution``'s 3-D gradient reads a missing ``data_format`` in
    TensorFlow 2.21) is TensorFlow's refusal, not an adapter bug."""
    try:
        return tape.gradient(y, source, output_gradients=grad_out)
    except AttributeError as err:
        raise PeerRefused(f"AttributeError in TensorFlow's gradient function: {err}") from err


def _tf_routes(name: str) -> tuple[Callable[[Case], np.ndarray], ...]:
    forward = _tf_forward(name)

    def conv(case: Case) -> np.ndarray:
        g, x, w, pads = prepared(case)
        with peer_errors():
            y = forward(_tf().constant(_last(x)), _tf().constant(_w_last(w)), g, pads)
            if case.bias is not None:
                y = y + case.bias
        return x_back(_first(y), g)

    def grad_input(case: Case) -> np.ndarray:
        tf = _tf()
        g, _, w, pads = prepared(case)
        with peer_errors():
            xt = tf.Variable(_last(x_first(np.zeros(case.x_shape, case.dtype), g)))
            with tf.GradientTape() as tape:
                y = forward(xt, tf.constant(_w_last(w)), g, pads)
            grad = _tape_gradient(tape, y, xt, _last(x_first(part(case, "grad_out"), g)))
        return x_back(_first(grad), g)

    def grad_weight(case: Case) -> np.ndarray:
        tf = _tf()
        g, x, _, pads = prepared(case)
        with peer_errors():
            wt = tf.Variable(_w_last(w_first(np.zeros(case.w_shape, case.dtype), g)))
            with tf.GradientTape() as tape:
                y = forward(tf.constant(_last(x)), wt, g, pads)
            grad = _tape_gradient(tape, y, wt, _last(x_first(part(case, "grad_out"), g)))
            grad = np.moveaxis(np.asarray(grad), (-1, -2), (0, 1))
        return w_back(flipped(grad, g.rank) if g.flip else grad, g)

    return conv, grad_input, grad_weight


def tf_transpose(case: Case) -> np.ndarray:
    """``tf.nn.conv1d_transpose`` / ``tf.nn.conv3d_transpose`` ("same"/"valid", one group)."""
    from dilconv.verify import OURS

    g = geometry(case)
    if g.padding not in ("same", "valid"):
        raise NotApplicable("TensorFlow's transposed convolutions take 'SAME' or 'VALID' only")
    if g.groups != 1:
        raise NotApplicable("TensorFlow's transposed convolutions have no groups")
    tf = _tf()
    size = x_first(OURS[case.op](case), g).shape  # the output size the case asks for
    x = _last(x_first(part(case, "x"), g))
    w = _w_last(w_first(part(case, "w"), g))  # (*k, C_out, C_in): TensorFlow's layout
    out_shape = (size[0], *size[2:], size[1])
    with peer_errors():
        if g.rank == 1:
            y = tf.nn.conv1d_transpose(
                x, w, out_shape, strides=g.stride[0], padding=str(g.padding).upper(),
                dilations=g.dilation[0],
            )  # fmt: skip
        else:
            y = tf.nn.conv3d_transpose(
                x, w, out_shape, strides=[1, *g.stride, 1], padding=str(g.padding).upper(),
                dilations=[1, *g.dilation, 1],
            )  # fmt: skip
        if case.bias is not None:
            y = y + case.bias
    return x_back(_first(y), g)


def keras_causal(case: Case) -> np.ndarray:
    """Keras ``Conv1D(padding="causal")`` with the case's weights (causal cases only)."""
    g, x, w, _ = prepared(case)
    if g.padding != "causal" or g.padding_mode != "zeros":
        raise NotApplicable("Keras Conv1D(padding='causal') computes causal cases only")
    keras = require("tensorflow", "tensorflow").keras
    with peer_errors():
        layer = keras.layers.Conv1D(
            filters=w.shape[0], kernel_size=w.shape[2], strides=g.stride[0], padding="causal",
            dilation_rate=g.dilation[0], groups=g.groups, use_bias=case.bias is not None,
            dtype=str(case.dtype),
        )  # fmt: skip
        layer.build((None, x.shape[2], x.shape[1]))
        weights = [_w_last(w)] + ([case.bias] if case.bias is not None else [])
        layer.set_weights(weights)
        y = layer(_last(x))
    return x_back(_first(y), g)


# --- JAX -------------------------------------------------------------------------------------


def _jax_numbers(rank: int) -> tuple[str, str, str]:
    return ("NCW", "OIW", "NCW") if rank == 1 else ("NCDHW", "OIDHW", "NCDHW")


def _jax_forward(x: Any, w: Any, g: GeometryN, pads: PadsN) -> Any:
    jax = require("jax", "jax")
    if g.padding_mode != "zeros":
        modes = {
            "reflect": "reflect",
            "replicate": "edge",
            "circular": "wrap",
            "symmetric": "symmetric",
        }
        x = jax.numpy.pad(x, [(0, 0), (0, 0), *pads], mode=modes[g.padding_mode])
        pads = tuple((0, 0) for _ in pads)
    return jax.lax.conv_general_dilated(
        x, w, window_strides=g.stride, padding=list(pads), rhs_dilation=g.dilation,
        dimension_numbers=_jax_numbers(g.rank), feature_group_count=g.groups,
    )  # fmt: skip


def _x64(route: Callable[[Case], np.ndarray]) -> Callable[[Case], np.ndarray]:
    from dilconv.peers.jax import x64

    return x64(route)


@_x64
def jax_conv(case: Case) -> np.ndarray:
    """``lax.conv_general_dilated`` with ``rhs_dilation``."""
    g, x, w, pads = prepared(case)
    with peer_errors():
        y = np.asarray(_jax_forward(x, w, g, pads))
        if case.bias is not None:
            y = y + case.bias.reshape(1, -1, *(1,) * g.rank)
    return x_back(y, g)


@_x64
def jax_grads(case: Case) -> np.ndarray:
    """The input or weight gradient by ``jax.vjp`` of the forward route."""
    jax = require("jax", "jax")
    g, x, w, pads = prepared(case)
    ct = x_first(part(case, "grad_out"), g)
    with peer_errors():
        if case.op.endswith("grad_input"):
            x0 = x_first(np.zeros(case.x_shape, case.dtype), g)
            _, vjp = jax.vjp(lambda a: _jax_forward(a, w, g, pads), x0)
            return x_back(np.asarray(vjp(ct)[0]), g)
        w0 = w_first(np.zeros(case.w_shape, case.dtype), g)
        _, vjp = jax.vjp(lambda b: _jax_forward(x, b, g, pads), w0)
        grad = np.asarray(vjp(ct)[0])
    return w_back(flipped(grad, g.rank) if g.flip else grad, g)


@_x64
def jax_transpose(case: Case) -> np.ndarray:
    """The transposed convolution as ``lhs_dilation``: zeros between the sources, the
    kernel reversed and its channel axes exchanged, pads ``d * (k - 1) - lo`` before."""
    from dilconv.verify import OURS

    jax = require("jax", "jax")
    g = geometry(case)
    x = x_first(part(case, "x"), g)
    w = w_first(part(case, "w"), g)
    c_in, og = w.shape[:2]
    ig = c_in // g.groups
    kernel = w.shape[2:]
    v = w.reshape(g.groups, ig, og, *kernel).swapaxes(1, 2).reshape(g.groups * og, ig, *kernel)
    v = flipped(v, g.rank)
    size = x_first(OURS[case.op](case), g).shape[2:]
    pads = []
    for a in range(g.rank):
        n, k, s, d = x.shape[2 + a], kernel[a], g.stride[a], g.dilation[a]
        if isinstance(g.padding, str):  # same/valid: the forward pads of the output size
            lo, hi = g.pads(size, kernel)[a]
        else:
            lo, hi = g.padding[a]
        extra = size[a] - _shapes.transpose_out_size(n, k, s, d, lo, hi, 0)
        e = _shapes.effective_size(k, d) - 1
        pads.append((e - lo, e - hi + extra))
    with peer_errors():
        y = np.asarray(
            jax.lax.conv_general_dilated(
                x, v, window_strides=(1,) * g.rank, padding=pads, lhs_dilation=g.stride,
                rhs_dilation=g.dilation, dimension_numbers=_jax_numbers(g.rank),
                feature_group_count=g.groups,
            )
        )  # fmt: skip
        if case.bias is not None:
            y = y + case.bias.reshape(1, -1, *(1,) * g.rank)
    return x_back(y, g)


# --- NumPy and SciPy, one channel ----------------------------------------------------------

_NP_MODES: dict[str, Any] = {
    "zeros": "constant",
    "reflect": "reflect",
    "replicate": "edge",
    "circular": "wrap",
    "symmetric": "symmetric",
}


def single_channel(case: Case) -> np.ndarray:
    """``np.convolve`` (1-D) or ``scipy.ndimage.correlate`` (3-D) with the kernel dilated by
    hand, after ``np.pad``, the stride taken by slicing; one channel in and out."""
    g, x, w, pads = prepared(case)  # w already reversed when flip
    if x.shape[1] != 1 or w.shape[0] != 1:
        raise NotApplicable("np.convolve / ndimage.correlate take one channel in and out")
    kernel = np.zeros(
        [_shapes.effective_size(k, d) for k, d in zip(w.shape[2:], g.dilation, strict=True)]
    )
    kernel[tuple(slice(None, None, d) for d in g.dilation)] = w[0, 0]
    out = []
    for image in x[:, 0]:
        padded = np.pad(image, [list(p) for p in pads], mode=_NP_MODES[g.padding_mode])
        if g.rank == 1:
            full = np.convolve(padded, kernel[::-1], mode="valid")
        else:
            ndimage = require("scipy.ndimage", "scipy")
            origin = [-(n // 2) for n in kernel.shape]
            whole = ndimage.correlate(padded, kernel, mode="constant", origin=origin)
            full = whole[
                tuple(slice(0, p - k + 1) for p, k in zip(padded.shape, kernel.shape, strict=True))
            ]
        out.append(full[tuple(slice(None, None, s) for s in g.stride)])
    y = np.stack(out)[:, None]
    if case.bias is not None:
        y = y + case.bias[0]
    return x_back(y.astype(case.dtype), g)


def _routes() -> dict[str, tuple[Route, ...]]:
    Named = list[tuple[str, str, Callable[[Case], np.ndarray]]]
    torch: Named = [
        ("conv", "F.conv{r}d", torch_conv),
        ("transpose", "F.conv_transpose{r}d", torch_transpose),
        ("grad_input", "autograd(F.conv{r}d)", torch_grad_input),
        ("grad_weight", "autograd(F.conv{r}d)", torch_grad_weight),
    ]
    tensorflow: Named = []
    for rank in (1, 3):
        for name in (f"tf.nn.conv{rank}d", "tf.nn.convolution"):
            conv, gi, gw = _tf_routes(name)
            tensorflow += [
                (f"conv{rank}", name, conv),
                (f"grad_input{rank}", f"GradientTape({name})", gi),
                (f"grad_weight{rank}", f"GradientTape({name})", gw),
            ]
    jax: Named = [
        ("conv", "lax.conv_general_dilated", jax_conv),
        ("transpose", "conv_general_dilated(lhs_dil.)", jax_transpose),
        ("grad_input", "vjp(conv_general_dilated)", jax_grads),
        ("grad_weight", "vjp(conv_general_dilated)", jax_grads),
    ]
    table: dict[str, list[Route]] = {"torch": [], "tensorflow": [], "jax": [], "scipy": []}
    for rank in (1, 3):
        op = {
            "conv": f"conv{rank}d",
            "transpose": f"conv{rank}d_transpose",
            "grad_input": f"conv{rank}d_grad_input",
            "grad_weight": f"conv{rank}d_grad_weight",
        }
        for kind, label, fn in torch:
            table["torch"].append(Route("torch", op[kind], label.format(r=rank), fn))
        for kind, label, fn in jax:
            table["jax"].append(Route("jax", op[kind], label, fn))
        for kind, label, fn in tensorflow:
            if kind.endswith(str(rank)):
                table["tensorflow"].append(Route("tensorflow", op[kind[:-1]], label, fn))
        table["tensorflow"].append(
            Route("tensorflow", op["transpose"], f"tf.nn.conv{rank}d_transpose", tf_transpose)
        )
    table["tensorflow"].append(Route("tensorflow", "conv1d", "keras Conv1D(causal)", keras_causal))
    table["scipy"].append(Route("scipy", "conv1d", "np.convolve", single_channel))
    table["scipy"].append(Route("scipy", "conv3d", "ndimage.correlate", single_channel))
    return {peer: tuple(routes) for peer, routes in table.items()}


#: Peer name -> its routes of the 1-D and 3-D operations.
ROUTES_ND = _routes()

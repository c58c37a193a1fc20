"""Streaming a trained stack of causal layers: ``dilconv.nn.Module.stream``.

A stack is first read into a *plan*, a tree of causal convolutions, elementwise
functions, residual sums and gates (nested ``Sequential`` flattened), refusing any
other layer with its name. Two engines run a plan:

- ``"compiled"`` (stride 1 everywhere, float32 or float64, Numba installed): one
  Numba call per block runs every layer (:mod:`dilconv._stream_kernel`), each
  layer keeping a ring of its last ``dilation * (k - 1)`` inputs.
- ``"layers"`` (any stride, any dtype): one :class:`dilconv.stream.Conv1dStream`
  per convolution and NumPy for the rest, layer by layer.

Both read the layers' weight arrays themselves (no copy), so in-place updates,
such as :class:`dilconv.nn.SGD`'s, are seen by the stream.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from typing import Any

import numpy as np

from dilconv import _shapes
from dilconv._native import headroom
from dilconv._nn_blocks import Gated, Residual, Sigmoid, Tanh, sigmoid
from dilconv._spec import FLOAT_DTYPES, as_choice, as_int, as_pair, compute_dtypes, parse_padding
from dilconv.nn import Conv2d, Module, ReLU, Sequential
from dilconv.stream import Conv1dStream

ENGINES = ("auto", "compiled", "layers")

#: Samples per compiled call: a long block runs in chunks, so the registers stay small.
CHUNK = 1024


@dataclasses.dataclass(frozen=True)
class CausalConv:
    """A causal 1-D convolution read from a layer: weights ``(O, C/groups, k)`` (a view
    of the layer's array) and its options."""

    name: str
    w: np.ndarray
    bias: np.ndarray | None
    stride: int
    dilation: int
    groups: int

    @property
    def channels(self) -> int:
        return self.w.shape[1] * self.groups


# A plan node: ("conv", CausalConv) | ("act", kind) | ("seq", [nodes]) | ("res", node)
# | ("gate", node, node)
Node = tuple[Any, ...]


def _refuse(name: str, layer: Any, why: str) -> ValueError:
    return ValueError(f"{name} ({layer!r}) cannot be streamed: {why}")


def causal_conv(layer: Any, name: str) -> CausalConv:
    """The causal 1-D convolution a layer computes, or ValueError naming it.

    Accepted: a 1-D layer whose ``options["padding"]`` is ``"causal"`` (weights
    ``(O, C/groups, k)``), and a :class:`dilconv.nn.Conv2d` with one kernel row and
    ``padding=((0, 0), (dilation * (k - 1), 0))`` in zeros mode, the same
    computation on ``(N, C, 1, L)`` activations.
    """
    options = getattr(layer, "options", {})
    w = np.asarray(layer.weight)
    bias = None if getattr(layer, "bias", None) is None else np.asarray(layer.bias)
    groups = as_int("groups", options.get("groups", 1), minimum=1)
    if options.get("padding_mode", "zeros") != "zeros":
        raise _refuse(name, layer, f"its padding_mode is {options['padding_mode']!r}, not 'zeros'")
    if w.ndim == 3:
        if options.get("padding") != "causal":
            raise _refuse(name, layer, f"its padding is {options.get('padding')!r}, not 'causal'")
        stride = _one(options.get("stride", 1), "stride", name)
        dilation = _one(options.get("dilation", 1), "dilation", name)
        return CausalConv(name, w, bias, stride, dilation, groups)
    if w.ndim != 4:
        raise _refuse(name, layer, f"its weights {w.shape} are not those of a 1-D convolution")
    kh, k = w.shape[2:]
    (sh, stride), (_, dilation) = (
        as_pair("stride", options.get("stride", 1), minimum=1),
        as_pair("dilation", options.get("dilation", 1), minimum=1),
    )
    padding = parse_padding(options.get("padding", 0))
    if padding == "valid" or (isinstance(padding, str) and k == 1):
        padding = ((0, 0), (0, 0))
    causal = ((0, 0), (_shapes.effective_size(k, dilation) - 1, 0))
    if kh != 1 or sh != 1:
        raise _refuse(name, layer, "a causal 1-D layer has one kernel row, stride 1 across rows")
    if padding != causal:
        raise _refuse(
            name, layer, f"its padding is {padding!r}; a causal layer pads {causal} with zeros"
        )
    return CausalConv(name, w[:, :, 0, :], bias, stride, dilation, groups)


def _one(value: Any, what: str, name: str) -> int:
    if isinstance(value, (tuple, list)):
        if len(value) != 1:
            raise ValueError(f"{name}: {what} must be one int, got {value!r}")
        value = value[0]
    return as_int(f"{name}.{what}", value, minimum=1)


def plan(module: Module, name: str = "stack") -> Node:
    """The plan of a module, refusing any layer that cannot be streamed."""
    if isinstance(module, Sequential):
        return ("seq", [plan(layer, f"{name}[{k}]") for k, layer in enumerate(module.layers)])
    if isinstance(module, Residual):
        return ("res", plan(module.inner, f"{name}.inner"))
    if isinstance(module, Gated):
        return ("gate", plan(module.a, f"{name}.a"), plan(module.b, f"{name}.b"))
    for kind, cls in (("relu", ReLU), ("tanh", Tanh), ("sigmoid", Sigmoid)):
        if type(module) is cls:
            return ("act", kind)
    if isinstance(module, Conv2d) or hasattr(module, "weight"):
        return ("conv", causal_conv(module, name))
    raise _refuse(name, module, "it is not a causal convolution, ReLU, Tanh, Sigmoid, "
                  "Residual, Gated or Sequential")  # fmt: skip


def convs(node: Node) -> list[CausalConv]:
    """The plan's convolutions, depth first (the order of :attr:`StackStream.state`)."""
    if node[0] == "conv":
        return [node[1]]
    children = node[1] if node[0] == "seq" else node[1:] if node[0] != "act" else []
    return [c for child in children for c in convs(child)]


def shape_through(node: Node, channels: int | None, name: str = "stack") -> tuple[Any, int, int]:
    """``(channels out, receptive field, stride)`` of a plan fed ``channels`` (None: any),
    checking that every layer fits the one before it."""
    kind = node[0]
    if kind == "conv":
        conv = node[1]
        if channels is not None and channels != conv.channels:
            raise ValueError(
                f"{conv.name} expects {conv.channels} input channels, but gets {channels}"
            )
        rf = _shapes.effective_size(conv.w.shape[2], conv.dilation)
        return conv.w.shape[0], rf, conv.stride
    if kind == "act":
        return channels, 1, 1
    if kind == "seq":
        rf, jump = 1, 1
        for child in node[1]:
            channels, r, s = shape_through(child, channels, name)
            rf, jump = rf + (r - 1) * jump, jump * s
        return channels, rf, jump
    if kind == "res":
        out, rf, s = shape_through(node[1], channels, name)
        if s != 1 or (channels is not None and out is not None and out != channels):
            raise ValueError(
                f"a Residual's inner layers must keep channels and length: they take "
                f"{channels} channels to {out} with stride {s}"
            )
        return channels if channels is not None else out, rf, 1
    out_a, rf_a, s_a = shape_through(node[1], channels, name)
    out_b, rf_b, s_b = shape_through(node[2], channels, name)
    if (out_a, s_a) != (out_b, s_b):
        raise ValueError(
            f"a Gated's a and b must give one shape: {out_a} and {out_b} channels, "
            f"strides {s_a} and {s_b}"
        )
    return out_a, max(rf_a, rf_b), s_a


def stream_module(module: Module, *, batch: int = 1, engine: str = "auto") -> StackStream:
    """A streaming copy of a causal stack (see :class:`StackStream`)."""
    if not isinstance(module, Module):
        raise TypeError(f"module must be a dilconv.nn.Module, got {module!r}")
    return StackStream(plan(module), batch=batch, engine=engine)


def compiled_refusal(node: Node, dtype: np.dtype) -> str | None:
    """Why the compiled engine cannot run a plan, or None."""
    if importlib.util.find_spec("numba") is None:
        return "Numba is not installed"
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        return f"it computes in float32 or float64, not {dtype}"
    strided = [c.name for c in convs(node) if c.stride != 1]
    if strided:
        return f"it runs stride 1 only, and {strided[0]} has stride > 1"
    return None


class StackStream:
    """A causal stack fed a block of samples at a time (from ``Module.stream``).

    ``push(block)`` takes ``(batch, C, n)``, ``n >= 0``, and returns the ``(batch,
    O, m)`` outputs those samples complete (``m = n`` unless a layer has stride >
    1); concatenated over any cut of a signal, they are the stack's ``forward`` on
    the whole signal (for a stack of one-row ``Conv2d`` layers, on ``(N, C, 1,
    L)``), within rounding. There is nothing to flush: causal layers never wait
    for later input. ``reset``, ``state`` and ``load_state`` are those of
    :class:`dilconv.stream.Conv1dStream`, for every layer at once; the state is
    ``history.<i>`` and ``phase.<i>`` for the ``i``-th convolution, depth first.

    Examples
    --------
    >>> import numpy as np
    >>> from dilconv import nn
    >>> conv = nn.Conv2d(1, 1, (1, 2), dilation=(1, 2), padding=((0, 0), (2, 0)), rng=0)
    >>> s = nn.Sequential(nn.Residual(conv), nn.Tanh()).stream()
    >>> s.receptive_field, s.latency, s.history_values
    (3, 0, 2)
    >>> x = np.arange(6, dtype=np.float32).reshape(1, 1, 6)
    >>> y = np.concatenate([s.push(x[..., :1]), s.push(x[..., 1:4]), s.push(x[..., 4:])], 2)
    >>> bool(np.allclose(y, nn.Sequential(nn.Residual(conv), nn.Tanh())(x[:, :, None])[:, :, 0]))
    True
    """

    def __init__(self, node: Node, *, batch: int = 1, engine: str = "auto") -> None:
        self.batch = as_int("batch", batch, minimum=1)
        as_choice("engine", engine, ENGINES)
        self._convs = convs(node)
        if not self._convs:
            raise ValueError("the stack has no convolution: its channels are unknown")
        self.channels = self._convs[0].channels
        self.out_channels, self.receptive_field, self.stride = shape_through(node, self.channels)
        dtypes = [c.w.dtype for c in self._convs] + [
            c.bias.dtype for c in self._convs if c.bias is not None
        ]
        self.dtype = compute_dtypes(*dtypes)[1]
        if self.dtype not in FLOAT_DTYPES and self.dtype != np.int64:
            raise ValueError(f"the stack's weights must be floats or integers, got {self.dtype}")
        why = compiled_refusal(node, self.dtype)
        if engine == "compiled" and why is not None:
            raise ValueError(f"engine='compiled' cannot run this stack: {why}")
        self.engine = "compiled" if engine in ("auto", "compiled") and why is None else "layers"
        if self.engine == "compiled":
            from dilconv import _imports

            CompiledStack = _imports.whole(
                "dilconv._stream_compiled",  # imports Numba
                room=headroom.NUMBA_BYTES,
                what="loading Numba for engine='compiled'",
            ).CompiledStack

            self._impl: Any = CompiledStack(node, self._convs, self.batch, self.dtype)
        else:
            self._impl = LayerStack(node, self.batch, self.dtype)

    @property
    def latency(self) -> int:
        """Samples of delay: 0, as for every causal layer."""
        return 0

    @property
    def history_values(self) -> int:
        """Values kept per stream: ``sum((k - 1) * dilation * C)`` over the convolutions."""
        return sum((_shapes.effective_size(c.w.shape[2], c.dilation) - 1) * c.channels
                   for c in self._convs)  # fmt: skip

    def push(self, block: Any) -> np.ndarray:
        """The outputs completed by the next ``n`` samples of every stream."""
        x = block
        if not (
            type(x) is np.ndarray
            and x.dtype == self.dtype
            and x.shape[:2] == (self.batch, self.channels)
            and x.ndim == 3
        ):  # the checks and conversions of any other block (a sample costs ~1 us of checks)
            x = np.asarray(block)
            if x.ndim != 3 or x.shape[:2] != (self.batch, self.channels):
                raise ValueError(
                    f"block must have shape (batch={self.batch}, C={self.channels}, n), "
                    f"got {x.shape}"
                )
            if not np.can_cast(x.dtype, self.dtype, "same_kind"):
                raise TypeError(f"block has dtype {x.dtype}, which the {self.dtype} stream refuses")
            x = x.astype(self.dtype)
        result: np.ndarray = self._impl.push(x)
        return result

    def reset(self, index: Any = None) -> None:
        """Forget the history of every stream (``index=None``) or of stream ``index``."""
        if index is not None:
            index = as_int("index", index, minimum=-self.batch)
            if index >= self.batch:
                raise ValueError(f"index must be < batch={self.batch}, got {index}")
        self._impl.reset(index)

    @property
    def state(self) -> dict[str, np.ndarray]:
        """Every convolution's history and phase, as plain arrays (a copy)."""
        out: dict[str, np.ndarray] = {}
        for k, (history, phase) in enumerate(self._impl.states()):
            out[f"history.{k}"], out[f"phase.{k}"] = history, np.array(phase, np.int64)
        return out

    def load_state(self, state: Any) -> None:
        """Continue from a :attr:`state`, here or in another process."""
        for k in range(len(self._convs)):
            for key in (f"history.{k}", f"phase.{k}"):
                if key not in state:
                    raise ValueError(f"state has no {key!r}: it is not this stack's state")
        self._impl.load_states(
            [
                {"history": state[f"history.{k}"], "phase": state[f"phase.{k}"]}
                for k in range(len(self._convs))
            ]  # fmt: skip
        )

    def __repr__(self) -> str:
        return (
            f"StackStream({len(self._convs)} convolutions, C={self.channels}, "
            f"O={self.out_channels}, receptive_field={self.receptive_field}, "
            f"batch={self.batch}, engine={self.engine!r})"
        )


class LayerStack:
    """The ``"layers"`` engine: a :class:`Conv1dStream` per convolution, NumPy between."""

    def __init__(self, node: Node, batch: int, dtype: np.dtype) -> None:
        self.node = node
        self.streams = [
            Conv1dStream(
                c.w,
                c.bias,
                stride=c.stride,
                dilation=c.dilation,
                groups=c.groups,
                batch=batch,
                dtype=dtype,
            )  # fmt: skip
            for c in convs(node)
        ]

    def push(self, x: np.ndarray) -> np.ndarray:
        streams = iter(self.streams)
        return self._run(self.node, x, streams)

    def _run(self, node: Node, x: np.ndarray, streams: Any) -> np.ndarray:
        kind = node[0]
        if kind == "conv":
            y: np.ndarray = next(streams).push(x)
            return y
        if kind == "act":
            if node[1] == "relu":
                return np.where(x > 0, x, 0).astype(x.dtype)
            return np.tanh(x) if node[1] == "tanh" else sigmoid(x)
        if kind == "seq":
            for child in node[1]:
                x = self._run(child, x, streams)
            return x
        if kind == "res":
            return x + self._run(node[1], x, streams)
        a = self._run(node[1], x, streams)
        return np.tanh(a) * sigmoid(self._run(node[2], x, streams))

    def reset(self, index: int | None) -> None:
        phases = {s.state["phase"].item() for s in self.streams}
        if index is not None and phases != {0}:
            raise ValueError(
                f"index={index}: one stream can be reset only when every layer is at a "
                "stride boundary"
            )
        for s in self.streams:
            s.reset(index)

    def states(self) -> list[tuple[np.ndarray, int]]:
        return [(s.state["history"], int(s.state["phase"])) for s in self.streams]

    def load_states(self, states: list[dict[str, Any]]) -> None:
        for s, st in zip(self.streams, states, strict=True):
            s.load_state(st)

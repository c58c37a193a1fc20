"""Layers with hand-written backward passes, on NumPy arrays: enough to train a context network.

Every layer has ``forward(x)`` and ``backward(grad_out)``; ``backward`` returns the
gradient with respect to the layer's input and adds the gradients of its parameters
into their ``.grad`` (as PyTorch does; :meth:`Module.zero_grad` clears them). The
convolution's backward pass is :func:`dilconv.conv2d_grad_input` (a transposed
convolution) and :func:`dilconv.conv2d_grad_weight` (their 1-D and 3-D
counterparts for :class:`Conv1d` and :class:`Conv3d`). Activations are
channels-first: NCW, NCHW, NCDHW.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from dilconv import convnd, gradnd
from dilconv._spec import PADDING_MODES, as_choice, as_int, as_pair
from dilconv._spec_nd import as_tuple
from dilconv.conv import conv2d
from dilconv.grad import conv2d_grad_bias, conv2d_grad_input, conv2d_grad_weight
from dilconv.receptive import receptive_field

if TYPE_CHECKING:
    from dilconv._nn_blocks import Gated, Residual, Sigmoid, Tanh
    from dilconv._stream_stack import StackStream


class Parameter(np.ndarray):
    """A NumPy array that carries its gradient in ``.grad`` (None until a backward pass)."""

    grad: np.ndarray | None

    def __new__(cls, data: Any) -> Parameter:
        obj = np.array(data).view(cls)
        obj.grad = None
        return obj

    def __array_finalize__(self, obj: Any) -> None:
        self.grad = None


class Module:
    """Base class: ``forward``, ``backward``, the parameters and their gradients."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The layer's output for ``x``; remembers what ``backward`` needs."""
        raise NotImplementedError

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """Gradient with respect to the last ``forward`` input; accumulates ``.grad``."""
        raise NotImplementedError

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def parameters(self) -> list[Parameter]:
        """The trainable arrays of this layer and its children."""
        return []

    def zero_grad(self) -> None:
        """Forget every accumulated gradient."""
        for p in self.parameters():
            p.grad = None

    def stream(self, *, batch: int = 1, engine: str = "auto") -> StackStream:
        """A streaming copy of this causal layer or stack that shares its weights.

        See :func:`dilconv.stream.stream_module`: the stack may hold causal 1-D
        convolutions, ``ReLU``, ``Tanh``, ``Sigmoid``, ``Residual``, ``Gated`` and
        nested ``Sequential``; any other layer is refused with its name.
        """
        from dilconv._stream_stack import stream_module

        return stream_module(self, batch=batch, engine=engine)


def _accumulate(p: Parameter, grad: np.ndarray) -> None:
    p.grad = grad.astype(p.dtype) if p.grad is None else p.grad + grad


class Conv2d(Module):
    """A dilated 2-D convolution layer, like ``torch.nn.Conv2d``.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of the input and the output.
    kernel_size : int or (int, int)
        Taps per axis.
    stride, padding, dilation, groups, padding_mode
        As for :func:`dilconv.conv2d`.
    bias : bool
        Whether the layer adds a learned bias.
    rng : numpy.random.Generator or int, optional
        Source of the initial weights.
    dtype : numpy dtype
        Of the parameters (float32 by default, as in PyTorch).

    Notes
    -----
    PyTorch's default initialisation: ``kaiming_uniform_(a=sqrt(5))``, which draws
    weights from ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with
    ``fan_in = in_channels / groups * kh * kw``, and the bias from the same range.

    Examples
    --------
    >>> import numpy as np
    >>> layer = Conv2d(3, 8, 3, padding=2, dilation=2, rng=0)
    >>> y = layer(np.ones((1, 3, 16, 16), dtype=np.float32))
    >>> y.shape, layer.backward(np.ones_like(y)).shape, layer.weight.grad.shape
    ((1, 8, 16, 16), (1, 3, 16, 16), (8, 3, 3, 3))
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        *,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        rng: Any = None,
        dtype: Any = np.float32,
    ) -> None:
        self.in_channels = as_int("in_channels", in_channels, minimum=1)
        self.out_channels = as_int("out_channels", out_channels, minimum=1)
        self.kernel_size = as_pair("kernel_size", kernel_size, minimum=1)
        self.groups = as_int("groups", groups, minimum=1)
        for name, channels in (("in_channels", in_channels), ("out_channels", out_channels)):
            if channels % self.groups:
                raise ValueError(f"groups={groups} must divide {name}, got {channels}")
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"bias must be a bool, got {bias!r}")
        self.options = {
            "stride": stride,
            "padding": padding,
            "dilation": dilation,
            "groups": self.groups,
            "padding_mode": as_choice("padding_mode", padding_mode, PADDING_MODES),
        }
        generator = np.random.default_rng(rng)
        kh, kw = self.kernel_size
        fan_in = self.in_channels // self.groups * kh * kw
        bound = 1 / math.sqrt(fan_in)
        shape = (self.out_channels, self.in_channels // self.groups, kh, kw)
        self.weight = Parameter(generator.uniform(-bound, bound, shape).astype(dtype))
        self.bias = (
            Parameter(generator.uniform(-bound, bound, self.out_channels).astype(dtype))
            if bias
            else None
        )
        self._x: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``conv2d(x, weight, bias)`` with the layer's options."""
        self._x = np.asarray(x)
        return conv2d(self._x, self.weight, self.bias, **self.options)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """Input gradient (a transposed convolution); fills ``weight.grad`` and ``bias.grad``."""
        if self._x is None:
            raise RuntimeError("Conv2d.backward called before forward")
        grad_out = np.asarray(grad_out)
        _accumulate(
            self.weight, conv2d_grad_weight(self._x, grad_out, self.weight.shape, **self.options)
        )
        if self.bias is not None:
            _accumulate(self.bias, conv2d_grad_bias(grad_out))
        return conv2d_grad_input(grad_out, self.weight, self._x.shape, **self.options)

    def parameters(self) -> list[Parameter]:
        """``[weight, bias]`` (or ``[weight]``)."""
        return [self.weight] + ([] if self.bias is None else [self.bias])

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"Conv2d({self.in_channels}, {self.out_channels}, {self.kernel_size}, {opts})"


class _ConvN(Module):
    """The 1-D and 3-D layers: :class:`Conv2d`'s parameters and initialisation, per axis."""

    rank: int
    _forward: Callable[..., np.ndarray]
    _grad_input: Callable[..., np.ndarray]
    _grad_weight: Callable[..., np.ndarray]
    _grad_bias: Callable[..., np.ndarray]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        *,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        rng: Any = None,
        dtype: Any = np.float32,
    ) -> None:
        self.in_channels = as_int("in_channels", in_channels, minimum=1)
        self.out_channels = as_int("out_channels", out_channels, minimum=1)
        self.kernel_size = as_tuple("kernel_size", kernel_size, self.rank, minimum=1)
        self.groups = as_int("groups", groups, minimum=1)
        for name, channels in (("in_channels", in_channels), ("out_channels", out_channels)):
            if channels % self.groups:
                raise ValueError(f"groups={groups} must divide {name}, got {channels}")
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"bias must be a bool, got {bias!r}")
        self.options = {
            "stride": stride,
            "padding": padding,
            "dilation": dilation,
            "groups": self.groups,
            "padding_mode": as_choice("padding_mode", padding_mode, PADDING_MODES),
        }
        shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        generator = np.random.default_rng(rng)
        fan_in = self.in_channels // self.groups * math.prod(self.kernel_size)
        bound = 1 / math.sqrt(fan_in)
        self.weight = Parameter(generator.uniform(-bound, bound, shape).astype(dtype))
        self.bias = (
            Parameter(generator.uniform(-bound, bound, self.out_channels).astype(dtype))
            if bias
            else None
        )
        self._x: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The convolution of ``x`` with the layer's weight, bias and options."""
        self._x = np.asarray(x)
        return type(self)._forward(self._x, self.weight, self.bias, **self.options)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """Input gradient (a transposed convolution); fills ``weight.grad`` and ``bias.grad``."""
        if self._x is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        grad_out = np.asarray(grad_out)
        cls = type(self)
        _accumulate(
            self.weight, cls._grad_weight(self._x, grad_out, self.weight.shape, **self.options)
        )
        if self.bias is not None:
            _accumulate(self.bias, cls._grad_bias(grad_out))
        return cls._grad_input(grad_out, self.weight, self._x.shape, **self.options)

    def parameters(self) -> list[Parameter]:
        """``[weight, bias]`` (or ``[weight]``)."""
        return [self.weight] + ([] if self.bias is None else [self.bias])

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        name = type(self).__name__
        return f"{name}({self.in_channels}, {self.out_channels}, {self.kernel_size}, {opts})"


class Conv1d(_ConvN):
    """A dilated 1-D convolution layer, like ``torch.nn.Conv1d``, on NCW activations.

    Parameters are those of :class:`Conv2d`, per axis, and ``padding`` may be
    ``"causal"`` (Keras's rule, :func:`dilconv.conv1d`): the layers of a WaveNet or
    a temporal convolutional network.

    Examples
    --------
    >>> import numpy as np
    >>> layer = Conv1d(2, 4, 2, dilation=8, padding="causal", rng=0)
    >>> y = layer(np.ones((1, 2, 100), dtype=np.float32))
    >>> y.shape, layer.backward(np.ones_like(y)).shape, layer.weight.grad.shape
    ((1, 4, 100), (1, 2, 100), (4, 2, 2))
    """

    rank = 1
    _forward = staticmethod(convnd.conv1d)
    _grad_input = staticmethod(gradnd.conv1d_grad_input)
    _grad_weight = staticmethod(gradnd.conv1d_grad_weight)
    _grad_bias = staticmethod(gradnd.conv1d_grad_bias)


class Conv3d(_ConvN):
    """A dilated 3-D convolution layer, like ``torch.nn.Conv3d``, on NCDHW activations.

    Parameters are those of :class:`Conv2d`, per axis ``(d, h, w)``.

    Examples
    --------
    >>> import numpy as np
    >>> layer = Conv3d(1, 2, 3, padding=2, dilation=2, rng=0)
    >>> y = layer(np.ones((1, 1, 6, 6, 6), dtype=np.float32))
    >>> y.shape, layer.backward(np.ones_like(y)).shape, layer.weight.grad.shape
    ((1, 2, 6, 6, 6), (1, 1, 6, 6, 6), (2, 1, 3, 3, 3))
    """

    rank = 3
    _forward = staticmethod(convnd.conv3d)
    _grad_input = staticmethod(gradnd.conv3d_grad_input)
    _grad_weight = staticmethod(gradnd.conv3d_grad_weight)
    _grad_bias = staticmethod(gradnd.conv3d_grad_bias)


class ReLU(Module):
    """``max(x, 0)``, elementwise."""

    def __init__(self) -> None:
        self._mask: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``max(x, 0)``."""
        self._mask = np.asarray(x) > 0
        return np.where(self._mask, x, 0).astype(np.asarray(x).dtype)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """``grad_out`` where the input was positive, else 0."""
        if self._mask is None:
            raise RuntimeError("ReLU.backward called before forward")
        return np.where(self._mask, grad_out, 0).astype(np.asarray(grad_out).dtype)

    def __repr__(self) -> str:
        return "ReLU()"


class Sequential(Module):
    """Layers applied in order; ``backward`` runs them in reverse.

    Examples
    --------
    >>> import numpy as np
    >>> net = Sequential(Conv2d(1, 4, 3, padding=1, rng=0), ReLU(), Conv2d(4, 1, 1, rng=1))
    >>> len(net), len(net.parameters()), net(np.zeros((2, 1, 8, 8), np.float32)).shape
    (3, 4, (2, 1, 8, 8))
    """

    def __init__(self, *layers: Module) -> None:
        for k, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"layers[{k}] must be a dilconv.nn.Module, got {layer!r}")
        self.layers = list(layers)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Each layer's ``forward``, in order."""
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """Each layer's ``backward``, in reverse order."""
        for layer in reversed(self.layers):
            grad_out = layer.backward(grad_out)
        return grad_out

    def parameters(self) -> list[Parameter]:
        """Every layer's parameters, in order."""
        return [p for layer in self.layers for p in layer.parameters()]

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> Module:
        return self.layers[index]

    def __iter__(self) -> Iterator[Module]:
        return iter(self.layers)

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"Sequential(\n  {inner}\n)"


class ContextModule(Sequential):
    """The basic context module of Yu & Koltun, *Multi-Scale Context Aggregation by
    Dilated Convolutions* (ICLR 2016).

    Seven 3x3 layers of ``channels`` channels with dilations 1, 1, 2, 4, 8, 16, 1,
    each padded to keep the size and followed by ``max(., 0)``, then a 1x1 layer.
    The paper's identity initialisation (``init="identity"``) sets each kernel to
    ``1[t = 0] 1[a = b]`` and each bias to 0, so the untrained module passes its
    input through unchanged (exactly, for non-negative input such as the
    rectified features it is meant to refine; the truncations clip negatives).
    ``init="default"`` uses :class:`Conv2d`'s PyTorch initialisation instead.

    Examples
    --------
    >>> import numpy as np
    >>> m = ContextModule(4)
    >>> x = np.random.default_rng(0).random((1, 4, 20, 20)).astype(np.float32)
    >>> m.receptive_field, bool(np.array_equal(m(x), x))
    ((67, 67), True)
    """

    def __init__(
        self,
        channels: int,
        *,
        dilations: Iterable[int] = (1, 1, 2, 4, 8, 16, 1),
        init: str = "identity",
        padding_mode: str = "zeros",
        rng: Any = None,
        dtype: Any = np.float32,
    ) -> None:
        channels = as_int("channels", channels, minimum=1)
        as_choice("init", init, ("identity", "default"))
        self.dilations = tuple(
            as_int(f"dilations[{k}]", d, minimum=1) for k, d in enumerate(dilations)
        )
        generator = np.random.default_rng(rng)
        layers: list[Module] = []
        for d in self.dilations:
            layers.append(
                Conv2d(
                    channels,
                    channels,
                    3,
                    padding=d,
                    dilation=d,
                    padding_mode=padding_mode,
                    rng=generator,
                    dtype=dtype,
                )
            )
            layers.append(ReLU())
        layers.append(Conv2d(channels, channels, 1, rng=generator, dtype=dtype))
        super().__init__(*layers)
        if init == "identity":
            for layer in self.layers:
                if isinstance(layer, Conv2d):
                    kh, kw = layer.kernel_size
                    layer.weight[...] = 0
                    layer.weight[np.arange(channels), np.arange(channels), kh // 2, kw // 2] = 1
                    if layer.bias is not None:
                        layer.bias[...] = 0

    @property
    def receptive_field(self) -> tuple[int, int]:
        """Input pixels each output pixel sees, per axis (67x67 for the basic module)."""
        stack = [(3, 1, d) for d in self.dilations] + [(1, 1, 1)]
        size = receptive_field(stack)[-1].size
        return size, size


class SGD:
    """Stochastic gradient descent with momentum, on :class:`Parameter` arrays in place.

    Examples
    --------
    >>> import numpy as np
    >>> p = Parameter(np.ones(2))
    >>> p.grad = np.array([1.0, -1.0])
    >>> SGD([p], lr=0.5).step()
    >>> p
    Parameter([0.5, 1.5])
    """

    def __init__(self, params: Iterable[Parameter], *, lr: float, momentum: float = 0.0) -> None:
        self.params = list(params)
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.lr, self.momentum = float(lr), float(momentum)
        self._velocity: list[np.ndarray | None] = [None] * len(self.params)

    def step(self) -> None:
        """``v = momentum * v + grad; p -= lr * v`` for every parameter with a gradient."""
        for k, p in enumerate(self.params):
            if p.grad is None:
                continue
            v = self._velocity[k]
            v = p.grad.copy() if v is None else self.momentum * v + p.grad
            self._velocity[k] = v
            p -= (self.lr * v).astype(p.dtype)

    def zero_grad(self) -> None:
        """Forget every parameter's gradient."""
        for p in self.params:
            p.grad = None


# The WaveNet / TCN layers live in their own module, which subclasses Module from
# here: they are looked up on first use (PEP 562), so either module may be imported first.
_BLOCKS = ("Gated", "Residual", "Sigmoid", "Tanh")


def __getattr__(name: str) -> Any:
    if name in _BLOCKS:
        from dilconv import _nn_blocks

        return getattr(_nn_blocks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SGD",
    "ContextModule",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "Gated",
    "Module",
    "Parameter",
    "ReLU",
    "Residual",
    "Sequential",
    "Sigmoid",
    "Tanh",
]

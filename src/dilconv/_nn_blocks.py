"""The layers a WaveNet or TCN block needs besides convolutions (re-exported by dilconv.nn).

Elementwise ``Tanh`` and ``Sigmoid`` (``ReLU`` is in :mod:`dilconv.nn`), a
``Residual`` wrapper that adds a block's input to its output, and WaveNet's gated
activation ``Gated(a, b)``: ``tanh(a(x)) * sigmoid(b(x))``. Each has the
``forward`` / ``backward`` pair of :class:`dilconv.nn.Module`.
"""

from __future__ import annotations

import numpy as np

from dilconv.nn import Module, Parameter


def sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` without overflow: ``exp(-|x|)`` is at most 1.

    >>> sigmoid(np.array([-1000.0, 0.0, 1000.0])).tolist()
    [0.0, 0.5, 1.0]
    """
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def _remembered(value: np.ndarray | None, layer: str) -> np.ndarray:
    if value is None:
        raise RuntimeError(f"{layer}.backward called before forward")
    return value


class Tanh(Module):
    """``tanh(x)``, elementwise.

    >>> Tanh()(np.zeros(2, np.float32))
    array([0., 0.], dtype=float32)
    """

    def __init__(self) -> None:
        self._y: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``tanh(x)``."""
        self._y = np.tanh(np.asarray(x))
        return self._y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """``grad_out * (1 - tanh(x)**2)``."""
        y = _remembered(self._y, "Tanh")
        return (np.asarray(grad_out) * (1 - y * y)).astype(y.dtype, copy=False)

    def __repr__(self) -> str:
        return "Tanh()"


class Sigmoid(Module):
    """``1 / (1 + exp(-x))``, elementwise.

    >>> Sigmoid()(np.zeros(2, np.float32))
    array([0.5, 0.5], dtype=float32)
    """

    def __init__(self) -> None:
        self._y: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``sigmoid(x)``."""
        self._y = sigmoid(np.asarray(x))
        return self._y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """``grad_out * s * (1 - s)`` with ``s = sigmoid(x)``."""
        y = _remembered(self._y, "Sigmoid")
        return (np.asarray(grad_out) * (y * (1 - y))).astype(y.dtype, copy=False)

    def __repr__(self) -> str:
        return "Sigmoid()"


class Residual(Module):
    """``x + inner(x)``: a residual connection around ``inner``, whose output must have
    the shape of its input.

    >>> from dilconv.nn import ReLU
    >>> Residual(ReLU())(np.array([-1.0, 2.0])).tolist()
    [-1.0, 4.0]
    """

    def __init__(self, inner: Module) -> None:
        if not isinstance(inner, Module):
            raise TypeError(f"inner must be a dilconv.nn.Module, got {inner!r}")
        self.inner = inner

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``x + inner.forward(x)``."""
        x = np.asarray(x)
        y = self.inner.forward(x)
        if y.shape != x.shape:
            raise ValueError(
                f"Residual needs inner's output in the shape of its input {x.shape}, "
                f"got {y.shape} from {self.inner!r}"
            )
        return x + y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """``grad_out + inner.backward(grad_out)``."""
        return np.asarray(grad_out) + self.inner.backward(grad_out)

    def parameters(self) -> list[Parameter]:
        """``inner``'s parameters."""
        return self.inner.parameters()

    def __repr__(self) -> str:
        return f"Residual({self.inner!r})"


class Gated(Module):
    """WaveNet's gated activation unit: ``tanh(a(x)) * sigmoid(b(x))``.

    ``a`` (the filter) and ``b`` (the gate) read the same input and must give
    outputs of one shape.

    >>> from dilconv.nn import ReLU
    >>> Gated(ReLU(), ReLU())(np.array([0.0, 1.0])).round(4).tolist()
    [0.0, 0.5568]
    """

    def __init__(self, a: Module, b: Module) -> None:
        for name, layer in (("a", a), ("b", b)):
            if not isinstance(layer, Module):
                raise TypeError(f"{name} must be a dilconv.nn.Module, got {layer!r}")
        self.a, self.b = a, b
        self._saved: tuple[np.ndarray, np.ndarray] | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``tanh(a.forward(x)) * sigmoid(b.forward(x))``."""
        ya, yb = self.a.forward(x), self.b.forward(x)
        if ya.shape != yb.shape:
            raise ValueError(
                f"Gated needs a and b to give one shape, got {ya.shape} and {yb.shape}"
            )
        t, s = np.tanh(ya), sigmoid(yb)
        self._saved = (t, s)
        return t * s

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """The sum of ``a``'s and ``b``'s input gradients."""
        if self._saved is None:
            raise RuntimeError("Gated.backward called before forward")
        t, s = self._saved
        g = np.asarray(grad_out)
        ga = (g * s * (1 - t * t)).astype(t.dtype, copy=False)
        gb = (g * t * s * (1 - s)).astype(t.dtype, copy=False)
        return self.a.backward(ga) + self.b.backward(gb)

    def parameters(self) -> list[Parameter]:
        """``a``'s parameters, then ``b``'s."""
        return self.a.parameters() + self.b.parameters()

    def __repr__(self) -> str:
        return f"Gated({self.a!r}, {self.b!r})"

"""What every peer adapter shares: the case, the route, the refusals, the layouts.

A *case* is one call of a dilconv operation (its arrays in the caller's layout
and its keyword options). A *route* is one way a peer framework computes the
same thing; it takes the case and returns a NumPy array in dilconv's layout, or
raises :class:`PeerRefused` (the peer raised an error: its message is kept) or
:class:`NotApplicable` (the peer has no way to express this case at all).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import re
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import numpy as np

from dilconv import _shapes
from dilconv._spec import Pads, as_pair, parse_padding
from dilconv.conv import same_padding
from dilconv.tutorial import RouteUnavailable

#: The operations a case can name.
OPS = ("conv2d", "conv2d_transpose", "conv2d_grad_input", "conv2d_grad_weight")

#: Peer name -> the command that installs it.
INSTALL = {
    "torch": "pip install torch==2.13.0",
    "tensorflow": "pip install tensorflow-cpu",
    "jax": "pip install jax jaxlib",
    "scipy": "pip install scipy",
}


class PeerRefused(Exception):
    """The peer framework raised an error for this case; the message is the peer's."""


class NotApplicable(Exception):
    """The peer has no operation that expresses this case (for example SciPy with channels)."""


@dataclasses.dataclass(frozen=True)
class Case:
    """One call of a dilconv operation, with everything a peer needs to repeat it.

    ``x`` and ``w`` are in the caller's layout (``data_format`` in ``options``);
    ``grad_out`` is the output gradient of the gradient operations. ``x_shape``
    and ``w_shape`` are always set, whichever arrays the operation takes.
    """

    op: str
    options: dict[str, Any]
    x_shape: tuple[int, ...]
    w_shape: tuple[int, ...]
    x: np.ndarray | None = None
    w: np.ndarray | None = None
    grad_out: np.ndarray | None = None
    bias: np.ndarray | None = None
    seed: int = 0

    @property
    def dtype(self) -> np.dtype:
        """The floating dtype of the case's arrays."""
        arrays = [a for a in (self.x, self.w, self.grad_out) if a is not None]
        return np.result_type(*arrays)

    def describe(self) -> str:
        """One line naming the operation, the shapes and the options (for failure reports)."""
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        bias = "" if self.bias is None else ", bias"
        return (
            f"{self.op}(x{self.x_shape}, w{self.w_shape}{bias}, {opts}) "
            f"{self.dtype} seed={self.seed}"
        )


@dataclasses.dataclass(frozen=True)
class Route:
    """One way a peer computes one operation."""

    peer: str
    op: str
    label: str
    compute: Callable[[Case], np.ndarray]


def require(module: str, peer: str) -> ModuleType:
    """Import ``module`` of ``peer``, or raise :class:`RouteUnavailable` with the install command.

    TensorFlow's C++ logging is silenced before its first import.
    """
    if peer == "tensorflow":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        return importlib.import_module(module)
    except ImportError:
        raise RouteUnavailable(f"{peer} is not installed: {INSTALL[peer]}") from None


def available(peer: str) -> str | None:
    """None when ``peer`` imports, else the message saying how to install it."""
    from dilconv.peers import load

    try:
        load(peer).framework()
    except RouteUnavailable as missing:
        return str(missing)
    return None


@contextlib.contextmanager
def peer_errors() -> Iterator[None]:
    """Turn an error the peer raises into :class:`PeerRefused` with its message.

    Errors that only a bug in an adapter raises (a missing name, attribute or
    key, a bad index) pass through unchanged, so they are never mistaken for a
    refusal.
    """
    try:
        yield
    except (NotApplicable, PeerRefused, RouteUnavailable, NameError, AttributeError, KeyError):
        raise
    except IndexError:
        raise
    except Exception as err:  # the peer's own exception types vary by framework
        raise PeerRefused(f"{type(err).__name__}: {first_sentence(str(err))}") from err


def first_sentence(message: str) -> str:
    """The first sentence of a peer's error message, without TensorFlow's node prefix,
    so that one refusal reads the same for every shape it happens at."""
    text = re.sub(r"^\{\{[^}]*\}\}\s*", "", message.strip())
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    end = line.find(". ")
    return (line if end < 0 else line[: end + 1])[:300]


# --- options -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Geometry:
    """A case's options, normalised for the adapters."""

    data_format: str
    ndim: int
    stride: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    padding: str | Pads
    padding_mode: str
    flip: bool
    output_padding: tuple[int, int]

    @property
    def symmetric_pads(self) -> tuple[int, int] | None:
        """``(ph, pw)`` when explicit pads are equal on both sides of each axis."""
        if isinstance(self.padding, str):
            return None
        (t, b), (lf, r) = self.padding
        return (t, lf) if (t == b and lf == r) else None


def geometry(case: Case) -> Geometry:
    """The normalised options of a case."""
    opts = case.options
    return Geometry(
        data_format=opts.get("data_format", "NCHW"),
        ndim=len(case.x_shape),
        stride=as_pair("stride", opts.get("stride", 1), minimum=1),
        dilation=as_pair("dilation", opts.get("dilation", 1), minimum=1),
        groups=int(opts.get("groups", 1)),
        padding=parse_padding(opts.get("padding", 0)),
        padding_mode=opts.get("padding_mode", "zeros"),
        flip=bool(opts.get("flip", False)),
        output_padding=as_pair("output_padding", opts.get("output_padding", 0), minimum=0),
    )


def explicit_pads(g: Geometry, in_hw: tuple[int, int], kernel_hw: tuple[int, int]) -> Pads:
    """The ``((top, bottom), (left, right))`` of a forward convolution's padding."""
    if g.padding == "valid":
        return (0, 0), (0, 0)
    if g.padding == "same":
        rows, cols = same_padding(in_hw, kernel_hw, stride=g.stride, dilation=g.dilation)
        return rows, cols
    if g.padding == "full":
        return (
            _shapes.full_pads(kernel_hw[0], g.dilation[0]),
            _shapes.full_pads(kernel_hw[1], g.dilation[1]),
        )
    if isinstance(g.padding, str):
        raise NotApplicable(f"padding={g.padding!r}")
    return g.padding


# --- layouts (NumPy side) ---------------------------------------------------------------------


def x_to(a: np.ndarray, g: Geometry, target: str) -> np.ndarray:
    """Activations in the case's layout and rank -> 4-D ``target`` ("NCHW" or "NHWC")."""
    if g.ndim == 2:
        a = a[None, None]
        source = "NCHW"
    else:
        a = a[None] if g.ndim == 3 else a
        source = g.data_format
    if source != target:
        a = a.transpose(0, 3, 1, 2) if target == "NCHW" else a.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(a)


def x_from(a: np.ndarray, g: Geometry, source: str) -> np.ndarray:
    """4-D activations in ``source`` layout -> the case's layout and rank."""
    target = "NCHW" if g.ndim == 2 else g.data_format
    if source != target:
        a = a.transpose(0, 3, 1, 2) if target == "NCHW" else a.transpose(0, 2, 3, 1)
    if g.ndim == 2:
        a = a[0, 0]
    elif g.ndim == 3:
        a = a[0]
    return np.ascontiguousarray(a)


def w_to(w: np.ndarray, g: Geometry, target: str) -> np.ndarray:
    """Weights in the case's layout -> ``target`` ("OIHW" or "HWIO")."""
    if g.ndim == 2:
        w = w[None, None]
        source = "OIHW"
    else:
        source = "OIHW" if g.data_format == "NCHW" else "HWIO"
    if source != target:
        w = w.transpose(2, 3, 1, 0) if target == "HWIO" else w.transpose(3, 2, 0, 1)
    return np.ascontiguousarray(w)


def w_from(w: np.ndarray, g: Geometry, source: str) -> np.ndarray:
    """Weights in ``source`` layout -> the case's layout."""
    target = "OIHW" if (g.ndim == 2 or g.data_format == "NCHW") else "HWIO"
    if source != target:
        w = w.transpose(2, 3, 1, 0) if target == "HWIO" else w.transpose(3, 2, 0, 1)
    return np.ascontiguousarray(w[0, 0] if g.ndim == 2 else w)


def flip_oihw(w: np.ndarray) -> np.ndarray:
    """Reverse both spatial axes of OIHW weights."""
    return np.ascontiguousarray(w[:, :, ::-1, ::-1])


def flip_hwio(w: np.ndarray) -> np.ndarray:
    """Reverse both spatial axes of HWIO weights."""
    return np.ascontiguousarray(w[::-1, ::-1])


def transposed_as_forward_oihw(w_oihw: np.ndarray, groups: int) -> np.ndarray:
    """A transposed convolution's ``(C_in, C_out/g, kh, kw)`` weight as the forward
    convolution's ``(C_out, C_in/g, kh, kw)`` weight over the zero-inserted input,
    spatially reversed (the transposed convolution is that forward convolution)."""
    c_in, og, kh, kw = w_oihw.shape
    ig = c_in // groups
    v = w_oihw.reshape(groups, ig, og, kh, kw).swapaxes(1, 2).reshape(groups * og, ig, kh, kw)
    return flip_oihw(v)


def part(case: Case, name: str) -> np.ndarray:
    """The array ``name`` ("x", "w" or "grad_out") of a case; ValueError if the case lacks it."""
    value = getattr(case, name)
    if value is None:
        raise ValueError(f"a {case.op} case needs {name}, got none")
    return np.asarray(value)

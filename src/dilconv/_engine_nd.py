"""1-D and 3-D convolutions, their adjoints and weight gradients, on the 2-D engine.

Every rank is lifted to three spatial axes ``(D, H, W)``: a 1-D signal is one
row of one plane, a 2-D image one plane. A 3-D convolution is then a sum over
its depth taps: tap ``kd`` reads input planes ``od * sd + kd * dd - pad_front``
for the outputs ``od`` where that plane is real (:func:`dilconv._shapes.tap_output_range`),
so those planes, stacked on the batch axis, go through one 2-D call whose result
is added in place into the output planes; ``blocked`` and ``winograd`` instead run
every depth tap in one pass over the output (:mod:`~dilconv._methods._blocked_volume`,
:mod:`~dilconv._methods._winograd_volume`). The adjoint scatters the 2-D
transposed convolution of each output-plane stack back into the same input
planes, except where, at stride 1, it is one forward correlation whose depth taps
run in one pass (:func:`turned`); the weight gradient of tap ``kd`` is the 2-D
weight gradient of the same stacks. Zero taps (planes in the padding) cost
nothing; the 2-D engine (its ``method`` argument, its cost model, its workspace
limit) does the rest.

Arrays here are channels-last and lifted: activations ``(N, D, H, W, C)``,
weights ``(kd, kh, kw, C/groups, O)``, in the spec's accumulation dtype.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from dilconv import _first_calls, _select, _shapes
from dilconv._methods import METHODS, _blocked_volume, _winograd_volume, blocked, winograd
from dilconv._native import channels
from dilconv._padding import pad_spatial_adjoint
from dilconv._spec import ConvSpec, make_spec
from dilconv._spec_nd import SpecN
from dilconv._transpose import TRANSPOSE_METHODS, resolve_transpose_method, run_conv_transpose
from dilconv.conv import run_conv

_NUMPY_MODES = {
    "reflect": "reflect",
    "replicate": "edge",
    "circular": "wrap",
    "symmetric": "symmetric",
}

Triple = tuple[int, int, int]


@dataclasses.dataclass(frozen=True)
class Volume:
    """A zero-padded cross-correlation over ``(D, H, W)``: the lifted, lowered spec."""

    in_size: Triple
    kernel: Triple
    stride: Triple
    dilation: Triple
    pad: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
    groups: int
    in_channels: int
    out_channels: int
    dtype: np.dtype

    @property
    def out_size(self) -> Triple:
        """Output size per axis."""
        d, h, w = (
            _shapes.conv_out_size(n, k, s, dl, lo, hi)
            for n, k, s, dl, (lo, hi) in zip(
                self.in_size, self.kernel, self.stride, self.dilation, self.pad, strict=True
            )
        )
        return d, h, w

    def depth_taps(self) -> list[tuple[int, int, int, int]]:
        """``(kd, first, stop, start)`` per depth tap that reads real planes: outputs
        ``[first, stop)`` read input planes ``start, start + sd, ...``."""
        n, (lo, _), s, dl = self.in_size[0], self.pad[0], self.stride[0], self.dilation[0]
        out = self.out_size[0]
        taps = []
        for kd in range(self.kernel[0]):
            first, stop = _shapes.tap_output_range(n, kd, s, dl, lo, out)
            if first < stop:
                taps.append((kd, first, stop, first * s + kd * dl - lo))
        return taps

    def plane_spec(self, batch: int) -> ConvSpec:
        """The 2-D spec of one stack of ``batch`` planes through one depth tap."""
        (_, h, w), (_, kh, kw) = self.in_size, self.kernel
        return make_spec(
            (batch, h, w, self.in_channels),
            (kh, kw, self.in_channels // self.groups, self.out_channels),
            dtypes=[self.dtype],
            stride=self.stride[1:],
            padding=self.pad[1:],
            dilation=self.dilation[1:],
            groups=self.groups,
            data_format="NHWC",
        )


def _lift(values: tuple[Any, ...], rank: int, fill: Any) -> tuple[Any, Any, Any]:
    full = (fill,) * (3 - rank) + tuple(values)
    return full[0], full[1], full[2]


def volume(spec: SpecN) -> Volume:
    """The lifted problem the engine solves: zero padding, correlation, three axes.

    A non-zero ``padding_mode`` is applied to the input first (:func:`pad_input`),
    so the volume then has the padded size and no padding.
    """
    zeros = spec.padding_mode == "zeros"
    size = spec.in_size if zeros else spec.padded_size
    pad = spec.pad if zeros else tuple((0, 0) for _ in spec.pad)
    return Volume(
        in_size=_lift(size, spec.rank, 1),
        kernel=_lift(spec.kernel, spec.rank, 1),
        stride=_lift(spec.stride, spec.rank, 1),
        dilation=_lift(spec.dilation, spec.rank, 1),
        pad=_lift(pad, spec.rank, (0, 0)),
        groups=spec.groups,
        in_channels=spec.in_channels,
        out_channels=spec.out_channels,
        dtype=spec.dtype,
    )


# --- layouts ----------------------------------------------------------------------------


def to_channels_last(a: np.ndarray, spec: SpecN) -> np.ndarray:
    """Activations in the caller's layout and rank -> lifted ``(N, D, H, W, C)``."""
    if spec.x_ndim == spec.rank:
        a = a[None, ..., None]
    else:
        if spec.x_ndim == spec.rank + 1:
            a = a[None]
        if spec.channels_first:
            moved = None
            if a.dtype == spec.dtype and a.flags.c_contiguous:
                moved = channels.move_channels(a, last=True)  # compiled, where it applies
            a = np.moveaxis(a, 1, -1) if moved is None else moved
    a = a.reshape(a.shape[0], *(1,) * (3 - spec.rank), *a.shape[1:])
    return np.ascontiguousarray(a, dtype=spec.dtype)


def from_channels_last(a: np.ndarray, spec: SpecN) -> np.ndarray:
    """Lifted ``(N, D, H, W, C)`` -> the caller's layout and rank, in ``spec.out_dtype``."""
    a = a.reshape(a.shape[0], *a.shape[4 - spec.rank :])
    if spec.x_ndim == spec.rank:
        a = a[0, ..., 0]
    else:
        if spec.channels_first:
            moved = None
            if a.dtype == spec.out_dtype and a.flags.c_contiguous:
                moved = channels.move_channels(a, last=False)
            a = np.moveaxis(a, -1, 1) if moved is None else moved
        if spec.x_ndim == spec.rank + 1:
            a = a[0]
    return np.ascontiguousarray(a, dtype=spec.out_dtype)


def weight_to_channels_last(w: np.ndarray, spec: SpecN) -> np.ndarray:
    """Weights in the caller's layout -> lifted ``(kd, kh, kw, C/g, O)``, flipped if asked."""
    if spec.x_ndim == spec.rank:
        w = w[..., None, None]
    elif spec.channels_first:
        w = np.moveaxis(w, (0, 1), (-1, -2))
    if spec.flip:
        w = w[tuple(slice(None, None, -1) for _ in range(spec.rank))]
    w = w.reshape(*(1,) * (3 - spec.rank), *w.shape)
    return np.ascontiguousarray(w, dtype=spec.dtype)


def weight_from_channels_last(w: np.ndarray, spec: SpecN) -> np.ndarray:
    """Lifted ``(kd, kh, kw, C/g, O)`` -> the caller's weight layout, flip undone."""
    w = w.reshape(w.shape[3 - spec.rank :])
    if spec.flip:
        w = w[tuple(slice(None, None, -1) for _ in range(spec.rank))]
    if spec.x_ndim == spec.rank:
        w = w[..., 0, 0]
    elif spec.channels_first:
        w = np.moveaxis(w, (-1, -2), (0, 1))
    return np.ascontiguousarray(w, dtype=spec.out_dtype)


def pad_input(x: np.ndarray, spec: SpecN) -> np.ndarray:
    """Lifted ``x`` padded by ``spec.padding_mode`` (unchanged for zero padding)."""
    if spec.padding_mode == "zeros":
        return x
    widths = [(0, 0), *_lift(spec.pad, spec.rank, (0, 0)), (0, 0)]
    return np.pad(x, widths, mode=_NUMPY_MODES[spec.padding_mode])  # type: ignore[call-overload]


def unpad_adjoint(x: np.ndarray, spec: SpecN) -> np.ndarray:
    """Adjoint of :func:`pad_input`: padded pixels' gradients added into their sources."""
    if spec.padding_mode == "zeros":
        return x
    axes = tuple(range(4 - spec.rank, 4))
    return pad_spatial_adjoint(x, spec.pad, spec.padding_mode, spec.in_size, axes)  # type: ignore[arg-type]


# --- methods ----------------------------------------------------------------------------


def check_method(method: Any) -> None:
    """``method`` names a forward algorithm (or ``"auto"``)."""
    if not isinstance(method, str):
        raise TypeError(f"method must be a str, got {method!r}")
    if method != "auto" and method not in METHODS:
        raise ValueError(f"method must be 'auto' or one of {sorted(METHODS)}, got {method!r}")


def check_transpose_method(method: Any) -> None:
    """``method`` names a transposed-convolution algorithm (or ``"auto"``)."""
    if not isinstance(method, str):
        raise TypeError(f"method must be a str, got {method!r}")
    if method != "auto" and method not in TRANSPOSE_METHODS:
        raise ValueError(
            f"method must be 'auto' or one of {sorted(TRANSPOSE_METHODS)}, got {method!r}"
        )


# --- the three operations ---------------------------------------------------------------


def _planes(a: np.ndarray, start: int, step: int, count: int) -> np.ndarray:
    """Planes ``start, start + step, ...`` (``count`` of them) of ``(N, D, H, W, C)`` as
    one stack ``(N * count, H, W, C)``."""
    part = a[:, start : start + (count - 1) * step + 1 : step]
    return part.reshape(-1, *a.shape[2:])


def _add_planes(
    total: np.ndarray | None,
    part: np.ndarray,
    planes: Any,
    whole: bool,
    result: tuple[tuple[int, ...], np.dtype],
    source: np.ndarray,
) -> np.ndarray:
    """``total[planes] += part``, ``total`` starting as zeros of the ``result``'s
    ``(shape, dtype)``; but the first ``part`` that covers every plane (``whole``)
    and is a fresh array of the result's dtype becomes ``total`` itself: no zeros
    and no extra pass. ``source``: the array the parts were computed from."""
    shape, dtype = result
    if total is None:
        fresh = part.flags.writeable and not np.may_share_memory(part, source)
        if whole and fresh and part.dtype == dtype:
            return part
        total = np.zeros(shape, dtype=dtype)
    total[planes] += part
    return total


def forward(x: np.ndarray, w: np.ndarray, vol: Volume, method: str) -> np.ndarray:
    """The lifted cross-correlation: ``(N, D, H, W, C)`` -> ``(N, Do, Ho, Wo, O)``.

    Every depth tap runs one algorithm: ``method`` checked, or ``"auto"``'s one
    choice for the stack of every output plane (served as any first call is: a
    loaded stand-in while the choice's machine code is not worth loading yet; NaN
    and Inf in the arrays leave out the methods that would spread them, as in 2-D).
    """
    check_method(method)
    plane = ranking_spec(vol, x.shape[0])
    return _select.run_resolved(method, plane, (x, w), lambda name: _forward(x, w, vol, name))


def fuses_depth(vol: Volume, batch: int) -> bool:
    """Whether both ``blocked`` and ``winograd`` run every depth tap of ``vol`` (a batch
    of ``batch``) in one pass: two or more taps read real planes and
    :func:`~dilconv._methods._winograd_volume.refusal` is None."""
    taps = len(vol.depth_taps())
    plane = vol.plane_spec(batch * vol.out_size[0])
    return taps > 1 and _winograd_volume.refusal(plane, taps) is None


def ranking_spec(vol: Volume, batch: int) -> ConvSpec:
    """The 2-D spec on which ``"auto"`` ranks the methods for a volume of ``batch``.

    The stack of every output plane, one depth tap's work; where ``blocked`` and
    ``winograd`` both run every tap in one pass (:func:`fuses_depth`), the same
    stack with the channels of every tap that reads real planes, as the two do. So
    32 channels at ``64^3`` (3x3x3) rank by 96 input channels: there one tap of 32
    took 29.7 ms by Winograd and 17.2 by ``blocked``, the three taps at once 37.1
    and 48.8 (d = 2, 2 vCPUs, 2026-12-07).

    >>> vol = Volume((64, 64, 64), (3, 3, 3), (1, 1, 1), (2, 2, 2), ((2, 2),) * 3, 1, 32, 32,
    ...              np.dtype(np.float32))
    >>> ranking_spec(vol, 1).in_channels == (96 if fuses_depth(vol, 1) else 32)
    True
    """
    plane = vol.plane_spec(batch * vol.out_size[0])
    if not fuses_depth(vol, batch):
        return plane
    return _winograd_volume.stacked_spec(plane, len(vol.depth_taps()))


def _forward(x: np.ndarray, w: np.ndarray, vol: Volume, method: str) -> np.ndarray:
    """:func:`forward` with its algorithm resolved.

    With ``blocked`` and two or more depth taps reading real planes, one tile loop
    runs every tap (:mod:`~dilconv._methods._blocked_volume`): no per-tap results to
    add; so does ``winograd`` where :func:`fuses_depth`
    (:mod:`~dilconv._methods._winograd_volume`).
    """
    n = x.shape[0]
    do, ho, wo = vol.out_size
    shape = (n, do, ho, wo, vol.out_channels)
    if method == "blocked" and len(vol.depth_taps()) > 1:
        threads = blocked.thread_count(vol.plane_spec(n * do))
        depth = (do, vol.stride[0])
        whole = _blocked_volume.conv(
            x, w, vol.plane_spec(1), depth, tuple(vol.depth_taps()), threads
        )
        _first_calls.settle()
        return whole
    if method == "winograd" and fuses_depth(vol, n):
        stack = vol.plane_spec(n * do)
        reads = tuple(vol.depth_taps())
        threads = winograd.thread_count(_winograd_volume.stacked_spec(stack, len(reads)))
        whole = _winograd_volume.conv(x, w, stack, (do, vol.stride[0]), reads, threads)
        _first_calls.settle()
        return whole
    # A tap that reads real planes for every output (the only tap of a 1-D or 2-D
    # call) goes first, and its result becomes the output: no zeros, no extra pass.
    taps = sorted(vol.depth_taps(), key=lambda tap: (tap[1], tap[2]) != (0, do))
    y: np.ndarray | None = None
    for kd, first, stop, start in taps:
        count = stop - first
        xs = _planes(x, start, vol.stride[0], count)
        plane = vol.plane_spec(xs.shape[0])
        part = run_conv(xs, w[kd], None, plane, _select.resolve_method(method, plane))
        part = part.reshape(n, count, ho, wo, vol.out_channels)
        y = _add_planes(y, part, np.s_[:, first:stop], count == do, (shape, vol.dtype), x)
    return np.zeros(shape, dtype=vol.dtype) if y is None else y


def turned(vol: Volume) -> Volume | None:
    """The adjoint of a stride-1, one-group ``vol`` as a forward volume: the output
    gradient correlated with the kernel reversed along every axis, its input and output
    channels swapped, each axis padded by :func:`dilconv._shapes.adjoint_pads`; None
    where a stride is not 1, there are groups, or a pad exceeds the kernel's reach.

    >>> vol = Volume((8, 9, 10), (3, 3, 3), (1, 1, 1), (2, 1, 1), ((4, 0), (1, 1), (0, 0)),
    ...              1, 5, 7, np.dtype(np.float32))
    >>> back = turned(vol)
    >>> back.in_size == vol.out_size, back.out_size == vol.in_size, back.pad
    (True, True, ((0, 4), (1, 1), (2, 2)))
    """
    if vol.groups != 1 or vol.stride != (1, 1, 1):
        return None
    pads = [
        _shapes.adjoint_pads(k, d, lo, hi)
        for k, d, (lo, hi) in zip(vol.kernel, vol.dilation, vol.pad, strict=True)
    ]
    if any(p is None for p in pads):
        return None
    front, top, left = (p for p in pads if p is not None)
    return dataclasses.replace(
        vol,
        in_size=vol.out_size,
        pad=(front, top, left),
        in_channels=vol.out_channels,
        out_channels=vol.in_channels,
    )


def adjoint(g: np.ndarray, w: np.ndarray, vol: Volume, method: str) -> np.ndarray:
    """The adjoint of :func:`forward`: ``(N, Do, Ho, Wo, O)`` -> ``(N, D, H, W, C)``.

    With ``method="auto"`` and a :func:`turned` volume whose depth taps run in one
    pass (:func:`fuses_depth`), the adjoint is that forward correlation; else one 2-D
    transposed convolution per depth tap, added into its input planes.
    """
    check_transpose_method(method)
    n = g.shape[0]
    back = turned(vol) if method == "auto" else None
    if back is not None and fuses_depth(back, n):
        reversed_w = np.ascontiguousarray(w[::-1, ::-1, ::-1].swapaxes(-1, -2))
        return forward(g, reversed_w, back, "auto")
    d, h, wd = vol.in_size
    shape = (n, d, h, wd, vol.in_channels)
    sd = vol.stride[0]
    # As in forward: a tap whose result covers every input plane becomes the result.
    taps = sorted(vol.depth_taps(), key=lambda tap: (tap[3], tap[2] - tap[1], sd) != (0, d, 1))
    x: np.ndarray | None = None
    for kd, first, stop, start in taps:
        count = stop - first
        gs = g[:, first:stop].reshape(n * count, *g.shape[2:])
        plane = vol.plane_spec(n * count)
        part = run_conv_transpose(gs, w[kd], None, plane, resolve_transpose_method(method, plane))
        part = part.reshape(n, count, h, wd, vol.in_channels)
        planes = np.s_[:, start : start + (count - 1) * sd + 1 : sd]
        whole = start == 0 and count == d and sd == 1
        x = _add_planes(x, part, planes, whole, (shape, vol.dtype), g)
    return np.zeros(shape, dtype=vol.dtype) if x is None else x


def grad_weight(x: np.ndarray, g: np.ndarray, vol: Volume, method: str) -> np.ndarray:
    """The weight gradient of :func:`forward`: lifted ``(kd, kh, kw, C/g, O)``."""
    from dilconv.grad import conv2d_grad_weight

    check_method(method)
    n = x.shape[0]
    kd_, kh, kw = vol.kernel
    shape = (kh, kw, vol.in_channels // vol.groups, vol.out_channels)
    dw = np.zeros((kd_, *shape), dtype=vol.dtype)
    for kd, first, stop, start in vol.depth_taps():
        count = stop - first
        xs = _planes(x, start, vol.stride[0], count)
        gs = g[:, first:stop].reshape(n * count, *g.shape[2:])
        dw[kd] = conv2d_grad_weight(
            xs,
            gs,
            shape,
            stride=vol.stride[1:],
            padding=vol.pad[1:],
            dilation=vol.dilation[1:],
            groups=vol.groups,
            data_format="NHWC",
            method=method,
        )
    return dw

"""One validation path for ``n`` spatial axes: arguments in, one frozen :class:`SpecN` out.

``conv1d``, ``conv2d`` and ``conv3d`` take the same options, per axis; this module
validates them for any rank ``n`` (1, 2 or 3) into per-axis tuples of length ``n``.
For ``n == 2`` every per-axis option goes through :mod:`dilconv._spec`'s own
parsers, so the 2-D messages stay exactly those of ``conv2d`` (which keeps its own
:class:`~dilconv._spec.ConvSpec`, the one its algorithms read). The 1-D and 3-D
operations run on the 2-D engine: :meth:`SpecN.plane` is the 2-D spec of one
plane (a 1-D signal is one row; a volume is a stack of ``(H, W)`` planes).

Keras's causal padding is 1-D only: ``dilation * (k - 1)`` zeros before the
signal and none after, for every stride, so output ``t`` reads inputs
``t * stride - dilation * (k - 1) ... t * stride`` and there are
``ceil(L / stride)`` outputs.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from dilconv import _shapes
from dilconv._config import physical_memory_bytes
from dilconv._spec import (
    PADDING_MODES,
    PADDING_STRINGS,
    as_choice,
    as_int,
    as_pair,
    check_shapes,
    compute_dtypes,
    parse_padding,
)

#: The layouts of each rank, channels-first then channels-last.
FORMATS: dict[int, tuple[str, str]] = {
    1: ("NCW", "NWC"),
    2: ("NCHW", "NHWC"),
    3: ("NCDHW", "NDHWC"),
}
#: The spatial axis letters of each rank.
AXES: dict[int, str] = {1: "W", 2: "HW", 3: "DHW"}
#: Padding keywords, the 1-D causal one included.
PADDING_KEYWORDS = (*PADDING_STRINGS, "causal")

PadsN = tuple[tuple[int, int], ...]


def rank_of_format(data_format: Any) -> int | None:
    """The rank a layout string names (None for anything else).

    >>> rank_of_format("NCW"), rank_of_format("NDHWC"), rank_of_format("XY")
    (1, 3, None)
    """
    for rank, names in FORMATS.items():
        if data_format in names:
            return rank
    return None


def as_tuple(name: str, value: Any, rank: int, *, minimum: int) -> tuple[int, ...]:
    """An int, or one int per spatial axis, each at least ``minimum``."""
    if rank == 2:
        return as_pair(name, value, minimum=minimum)
    if isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, str):
        items = list(value)
        if len(items) != rank:
            axes = ", ".join(AXES[rank].lower())
            raise ValueError(
                f"{name} must be an int or {rank} int(s), one per axis ({axes}), got {value!r}"
            )
        return tuple(as_int(f"{name}[{k}]", v, minimum=minimum) for k, v in enumerate(items))
    return (as_int(name, value, minimum=minimum),) * rank


def parse_padding_nd(padding: Any, rank: int) -> str | PadsN:
    """``padding`` as a lower-case keyword or one ``(before, after)`` pair per axis."""
    if isinstance(padding, str):
        key = padding.lower()
        if key == "causal":
            if rank != 1:
                raise ValueError(
                    f"padding='causal' is for 1-D convolutions only (conv1d, conv1d_grad_*, "
                    f"nn.Conv1d), got it for a {rank}-D convolution; give the pads explicitly"
                )
            return key
        if rank == 2:
            return parse_padding(padding)
        if key not in PADDING_STRINGS:
            extra = ", 'causal'" if rank == 1 else ""
            raise ValueError(
                f"padding must be an int, one entry per axis or one of "
                f"{list(PADDING_STRINGS)}{extra}, got {padding!r}"
            )
        return key
    if rank == 2:
        return parse_padding(padding)
    if isinstance(padding, (Sequence, np.ndarray)):
        items = list(padding)
        if len(items) != rank:
            example = "((1, 6),) for 1 before and 6 after" if rank == 1 else "(pd, ph, pw)"
            raise ValueError(
                f"padding must be an int, a keyword or {rank} entries, one per axis "
                f"({', '.join(AXES[rank].lower())}), each an int or a (before, after) pair "
                f"(for example {example}), got {padding!r}"
            )
        axes = []
        for k, item in enumerate(items):
            if isinstance(item, (Sequence, np.ndarray)) and not isinstance(item, str):
                axes.append(as_pair(f"padding[{k}]", item, minimum=0))
            else:
                p = as_int(f"padding[{k}]", item, minimum=0)
                axes.append((p, p))
        return tuple(axes)
    p = as_int("padding", padding, minimum=0)
    return ((p, p),) * rank


def resolve_pads_nd(
    padding: str | PadsN,
    in_size: tuple[int, ...],
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
) -> PadsN:
    """Explicit pads per axis for a keyword (``valid``, ``same``, ``full``, ``causal``)."""
    axes = range(len(in_size))
    if padding == "valid":
        return tuple((0, 0) for _ in axes)
    if padding == "same":
        return tuple(_shapes.same_pads(in_size[a], kernel[a], stride[a], dilation[a]) for a in axes)
    if padding == "full":
        return tuple(_shapes.full_pads(kernel[a], dilation[a]) for a in axes)
    if padding == "causal":
        return tuple(_shapes.causal_pads(kernel[a], dilation[a]) for a in axes)
    if isinstance(padding, str):
        raise ValueError(f"padding must be one of {list(PADDING_KEYWORDS)}, got {padding!r}")
    return tuple(padding)


def split_layout_nd(
    shape: tuple[int, ...], rank: int, data_format: str
) -> tuple[int, int, tuple[int, ...]]:
    """``(batch, channels, spatial)`` of an input shape: ranks ``n``, ``n + 1``, ``n + 2``."""
    if len(shape) == rank:
        return 1, 1, shape
    if len(shape) == rank + 1:
        shape = (1, *shape)
    if len(shape) != rank + 2:
        plain = "(" + ", ".join(AXES[rank]) + ")"
        raise ValueError(
            f"x must be {rank}-D {plain}, {rank + 1}-D or {rank + 2}-D ({data_format}) for a "
            f"{rank}-D convolution, got {len(shape)}-D shape {shape}"
        )
    if data_format.startswith("NC"):
        return shape[0], shape[1], shape[2:]
    return shape[0], shape[-1], shape[1:-1]


def split_weight_nd(
    shape: tuple[int, ...], x_ndim: int, rank: int, data_format: str, *, transposed: bool = False
) -> tuple[int, int, tuple[int, ...]]:
    """``(first, second, kernel)`` of a weight: ``(O, C/groups, k...)`` read in the layout.

    For a transposed convolution (``transposed=True``) the same two channel numbers
    are ``(C_in, C_out/groups)``, as PyTorch and TensorFlow store them.
    """
    taps = ", ".join(f"k{a.lower()}" for a in AXES[rank])
    if x_ndim == rank:
        if len(shape) != rank:
            raise ValueError(f"w must be {rank}-D ({taps}) when x is {rank}-D, got shape {shape}")
        return 1, 1, shape
    if len(shape) != rank + 2:
        o, i = ("C_in", "C_out/groups") if transposed else ("O", "C/groups")
        expected = f"({o}, {i}, {taps})" if data_format.startswith("NC") else f"({taps}, {i}, {o})"
        raise ValueError(
            f"w must be {rank + 2}-D {expected} for {data_format} input, got shape {shape}"
        )
    if data_format.startswith("NC"):
        return shape[0], shape[1], shape[2:]
    return shape[-1], shape[-2], shape[:-2]


def same_padding_nd(
    rank: int, in_size: Any, kernel: Any, stride: Any, dilation: Any
) -> tuple[tuple[int, int], ...]:
    """:func:`dilconv.same_padding` for ``rank`` axes."""
    sizes = as_tuple("in_hw", in_size, rank, minimum=1)
    taps = as_tuple("kernel_hw", kernel, rank, minimum=1)
    steps = as_tuple("stride", stride, rank, minimum=1)
    gaps = as_tuple("dilation", dilation, rank, minimum=1)
    return tuple(_shapes.same_pads(sizes[a], taps[a], steps[a], gaps[a]) for a in range(rank))


def sequence_rank(*values: Any) -> int | None:
    """The length of the first argument that is a sequence (None when all are ints)."""
    for value in values:
        if isinstance(value, (tuple, list, np.ndarray)):
            return len(value)
    return None


@dataclasses.dataclass(frozen=True)
class SpecN:
    """A validated convolution over ``rank`` spatial axes, each option per axis.

    ``pad`` holds one ``(before, after)`` pair per axis. ``dtype`` is the
    accumulation dtype, ``out_dtype`` the returned one; ``x_ndim`` the rank of the
    caller's input (``rank``: a plain signal, image or volume; ``rank + 1``:
    unbatched; ``rank + 2``: batched).
    """

    rank: int
    batch: int
    in_channels: int
    out_channels: int
    groups: int
    in_size: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pad: PadsN
    padding_mode: str = "zeros"
    flip: bool = False
    data_format: str = "NCHW"
    x_ndim: int = 4
    dtype: np.dtype = np.dtype(np.float64)
    out_dtype: np.dtype = np.dtype(np.float64)

    @property
    def channels_first(self) -> bool:
        """True for the NC... layouts."""
        return self.data_format.startswith("NC")

    @property
    def padded_size(self) -> tuple[int, ...]:
        """Input size after padding, per axis."""
        return tuple(n + lo + hi for n, (lo, hi) in zip(self.in_size, self.pad, strict=True))

    @property
    def out_size(self) -> tuple[int, ...]:
        """Output size per axis."""
        return tuple(
            _shapes.conv_out_size(n, k, s, d, lo, hi)
            for n, k, s, d, (lo, hi) in zip(
                self.in_size, self.kernel, self.stride, self.dilation, self.pad, strict=True
            )
        )

    @property
    def in_per_group(self) -> int:
        """Input channels each group reads."""
        return self.in_channels // self.groups

    def activation_shape(self, size: tuple[int, ...], channels: int) -> tuple[int, ...]:
        """The caller's shape of an activation with this spatial ``size`` and ``channels``."""
        if self.x_ndim == self.rank:
            return size
        full = (
            (self.batch, channels, *size) if self.channels_first else (self.batch, *size, channels)
        )
        return full if self.x_ndim == self.rank + 2 else full[1:]

    @property
    def out_shape(self) -> tuple[int, ...]:
        """The shape returned to the caller, in the caller's layout and rank."""
        return self.activation_shape(self.out_size, self.out_channels)


def make_spec_nd(
    rank: int,
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    *,
    bias_shape: tuple[int, ...] | None = None,
    dtypes: Sequence[np.dtype] = (np.dtype(np.float64),),
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: Any = 1,
    padding_mode: Any = "zeros",
    data_format: Any = None,
    flip: Any = False,
    memory_check: bool = True,
) -> SpecN:
    """Validate every option of a ``rank``-D convolution against the shapes.

    ``data_format=None`` is the rank's channels-first layout. The checks and their
    order are those of :func:`dilconv._spec.make_spec`, per axis.
    """
    formats = FORMATS[rank]
    data_format = as_choice(
        "data_format", formats[0] if data_format is None else data_format, formats
    )
    padding_mode = as_choice("padding_mode", padding_mode, PADDING_MODES)
    if not isinstance(flip, (bool, np.bool_)):
        raise TypeError(f"flip must be a bool, got {flip!r}")
    strides = as_tuple("stride", stride, rank, minimum=1)
    dilations = as_tuple("dilation", dilation, rank, minimum=1)
    n_groups = as_int("groups", groups, minimum=1)
    parsed = parse_padding_nd(padding, rank)

    x_shape, w_shape = tuple(x_shape), tuple(w_shape)
    for name, shape in (("x", x_shape), ("w", w_shape)):
        if not all(isinstance(v, numbers.Integral) for v in shape):
            raise TypeError(f"{name} shape must be ints, got {shape!r}")
    batch, channels, in_size = split_layout_nd(x_shape, rank, data_format)
    out_ch, in_per_group, kernel = split_weight_nd(w_shape, len(x_shape), rank, data_format)
    check_shapes(x_shape, w_shape, bias_shape, rank, n_groups, channels, out_ch, in_per_group)

    pad = resolve_pads_nd(parsed, in_size, kernel, strides, dilations)
    _check_padding_mode_fits(padding_mode, pad, in_size, rank)
    accumulate, result = compute_dtypes(*dtypes)
    spec = SpecN(
        rank=rank,
        batch=batch,
        in_channels=channels,
        out_channels=out_ch,
        groups=n_groups,
        in_size=in_size,
        kernel=kernel,
        stride=strides,
        dilation=dilations,
        pad=pad,
        padding_mode=padding_mode,
        flip=bool(flip),
        data_format=data_format,
        x_ndim=len(x_shape),
        dtype=accumulate,
        out_dtype=result,
    )
    if min(spec.out_size) < 1:
        extent = "x".join(
            str(_shapes.effective_size(k, d)) for k, d in zip(kernel, dilations, strict=True)
        )
        padded = "x".join(str(n) for n in spec.padded_size)
        raise ValueError(
            f"the dilated kernel ({extent}: kernel {kernel}, dilation {dilations}) is "
            f"larger than the padded input ({padded}); pad more, or use a smaller "
            "kernel or dilation"
        )
    if memory_check:
        _check_memory(spec)
    return spec


def _check_padding_mode_fits(mode: str, pad: PadsN, in_size: tuple[int, ...], rank: int) -> None:
    """Refuse pads that ``mode`` cannot fill from this input (PyTorch's rules)."""
    limits = {"reflect": 1, "circular": 0, "symmetric": 0}
    if mode not in limits:
        return
    for axis, ((lo, hi), size) in enumerate(zip(pad, in_size, strict=True)):
        most = size - limits[mode]
        if max(lo, hi) > most:
            raise ValueError(
                f"padding {pad} is too wide for padding_mode={mode!r} on an input of "
                f"{AXES[rank][axis]}={size}: each side must be at most {most}"
            )


def _check_memory(spec: SpecN) -> None:
    """Refuse a call whose output alone would not fit in this machine's memory."""
    out_bytes = math.prod(spec.out_shape) * spec.dtype.itemsize
    padded = spec.batch * spec.in_channels * math.prod(spec.padded_size)
    pad_bytes = padded * spec.dtype.itemsize if spec.padding_mode != "zeros" else 0
    total = physical_memory_bytes()
    if out_bytes + pad_bytes > total:
        raise ValueError(
            f"this call needs {(out_bytes + pad_bytes) / 2**30:.1f} GiB for its output "
            f"{spec.out_shape} (padding {spec.pad}), more than this machine's "
            f"{total / 2**30:.1f} GiB; use smaller arrays or process them in pieces"
        )

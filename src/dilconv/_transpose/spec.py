"""Validation of ``conv2d_transpose`` arguments: the forward spec whose adjoint it is.

A transposed convolution of ``x`` is the adjoint of the ``conv2d`` whose *output*
has ``x``'s spatial size and whose *weight* is the transposed convolution's weight
(PyTorch's ``(C_in, C_out/groups, kh, kw)`` is exactly ``conv2d``'s
``(O, C/groups, kh, kw)``; TensorFlow's ``(kh, kw, C_out, C_in)`` is exactly HWIO).
So validation works out the output size, then asks :func:`dilconv._spec.make_spec`
for that forward call's spec; the algorithms only ever see forward specs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dilconv import _shapes
from dilconv._spec import (
    DATA_FORMATS,
    ConvSpec,
    Pair,
    as_choice,
    as_int,
    as_pair,
    check_result,
    input_shape,
    make_spec,
    parse_padding,
    split_layout,
)


def as_shape(name: str, value: Any, *, minimum: int = 1) -> tuple[int, ...]:
    """A shape given as a tuple or list of ints, each at least ``minimum``."""
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"{name} must be a tuple of ints, got {value!r}")
    return tuple(as_int(f"{name}[{k}]", v, minimum=minimum) for k, v in enumerate(value))


def split_transpose_weight(
    shape: tuple[int, ...], x_ndim: int, data_format: str
) -> tuple[int, int, Pair]:
    """``(in_channels, out_per_group, (kh, kw))`` of a transposed-convolution weight."""
    if x_ndim == 2:
        if len(shape) != 2:
            raise ValueError(f"w must be 2-D (kh, kw) when x is 2-D, got shape {shape}")
        return 1, 1, (shape[0], shape[1])
    if len(shape) != 4:
        expected = (
            "(C_in, C_out/groups, kh, kw)"
            if data_format == "NCHW"
            else "(kh, kw, C_out/groups, C_in)"
        )
        raise ValueError(f"w must be 4-D {expected} for {data_format} input, got shape {shape}")
    if data_format == "NCHW":
        c_in, out_per_group, kh, kw = shape
    else:
        kh, kw, out_per_group, c_in = shape
    return c_in, out_per_group, (kh, kw)


def _size_range(
    padding: str | tuple[tuple[int, int], tuple[int, int]],
    axis: int,
    i: int,
    k: int,
    s: int,
    d: int,
    out_pad: int,
) -> tuple[tuple[int, int], int]:
    """The reachable output sizes along one axis, and the size ``output_padding`` picks."""
    if padding == "same":
        return _shapes.transpose_same_range(i, s), _shapes.transpose_same_size(i, s)
    if isinstance(padding, str):  # "valid": make_transpose_spec refuses "full"
        return _shapes.transpose_valid_range(i, k, s, d), _shapes.transpose_valid_size(i, k, s, d)
    lo, hi = padding[axis]
    reach = _shapes.transpose_size_range(i, k, s, d, lo, hi)
    return reach, _shapes.transpose_out_size(i, k, s, d, lo, hi, out_pad)


def make_transpose_spec(
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    *,
    bias_shape: tuple[int, ...] | None = None,
    dtypes: Sequence[np.dtype] = (np.dtype(np.float64),),
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    dilation: Any = 1,
    groups: Any = 1,
    data_format: Any = "NCHW",
    output_size: Any = None,
) -> ConvSpec:
    """Validate every ``conv2d_transpose`` option; return the forward ``conv2d`` spec.

    The spec's input is the transposed convolution's output, its output the
    transposed convolution's input (possibly larger at the end, when
    ``output_padding`` reaches past the stride: those sources are zeros).
    """
    data_format = as_choice("data_format", data_format, DATA_FORMATS)
    stride_hw = as_pair("stride", stride, minimum=1)
    dilation_hw = as_pair("dilation", dilation, minimum=1)
    n_groups = as_int("groups", groups, minimum=1)
    out_pad = as_pair("output_padding", output_padding, minimum=0)
    parsed = parse_padding(padding)
    if parsed == "full":
        raise ValueError(
            "padding must be an int, a pair, a pair of pairs, 'same' or 'valid' for a "
            "transposed convolution, got 'full'"
        )

    x_shape, w_shape = tuple(x_shape), tuple(w_shape)
    batch, channels, in_hw = split_layout("x", x_shape, data_format)
    c_in, out_per_group, kernel_hw = split_transpose_weight(w_shape, len(x_shape), data_format)
    if 0 in x_shape:
        raise ValueError(f"x must have no zero-size dimension, got shape {x_shape}")
    if 0 in w_shape:
        raise ValueError(f"w must have no zero-size dimension, got shape {w_shape}")
    if len(x_shape) == 2 and n_groups != 1:
        raise ValueError(f"groups must be 1 for 2-D input, got {n_groups}")
    if c_in != channels:
        where = "first" if data_format == "NCHW" else "last"
        raise ValueError(
            f"w shape {w_shape} has {c_in} input channels (its {where} axis); "
            f"x has {channels} channels"
        )
    if channels % n_groups:
        raise ValueError(
            f"groups={n_groups} must divide the input channels, got {channels} channels"
        )
    out_channels = out_per_group * n_groups
    if bias_shape is not None and tuple(bias_shape) != (out_channels,):
        raise ValueError(f"bias must have shape ({out_channels},), got {tuple(bias_shape)}")

    reach, default = [], []
    for axis in range(2):
        s, d = stride_hw[axis], dilation_hw[axis]
        limit = _shapes.output_padding_limit(s, d)
        if out_pad[axis] >= limit:
            raise ValueError(
                f"output_padding must be smaller than max(stride, dilation) = {limit} along "
                f"{'HW'[axis]}, got output_padding={output_padding!r}"
            )
        if isinstance(parsed, str) and out_pad[axis]:
            raise ValueError(
                f"output_padding applies to explicit padding; with padding={parsed!r} "
                f"choose the size with output_size instead, got output_padding={output_padding!r}"
            )
        r, size = _size_range(parsed, axis, in_hw[axis], kernel_hw[axis], s, d, out_pad[axis])
        reach.append(r)
        default.append(size)
    if output_size is None:
        out_hw = (default[0], default[1])
    else:
        if any(out_pad):
            raise ValueError(
                f"give output_padding or output_size, not both; got output_padding="
                f"{output_padding!r} and output_size={output_size!r}"
            )
        out_hw = as_pair("output_size", output_size, minimum=1)
        if not all(lo <= n <= hi for n, (lo, hi) in zip(out_hw, reach, strict=True)):
            (h0, h1), (w0, w1) = reach
            raise ValueError(
                f"output_size={output_size!r} cannot be reached: for this input, kernel, "
                f"stride, dilation and padding the output height must be in [{h0}, {h1}] "
                f"and the width in [{w0}, {w1}]"
            )
    if min(out_hw) < 1:
        raise ValueError(
            f"the transposed output would be {out_hw[0]}x{out_hw[1]}: padding={padding!r} "
            "crops more than the input and kernel cover; pad less"
        )

    if len(x_shape) == 2:
        fwd_shape: tuple[int, ...] = out_hw
    elif data_format == "NCHW":
        fwd_shape = (batch, out_channels, *out_hw)
    else:
        fwd_shape = (batch, *out_hw, out_channels)
    if len(x_shape) == 3:
        fwd_shape = fwd_shape[1:]
    spec = make_spec(
        fwd_shape,
        w_shape,
        dtypes=dtypes,
        stride=stride_hw,
        padding=parsed,
        dilation=dilation_hw,
        groups=n_groups,
        data_format=data_format,
    )
    check_result("output", input_shape(spec), spec.dtype.itemsize)
    return spec

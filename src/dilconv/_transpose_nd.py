"""Validation of ``conv1d_transpose`` / ``conv3d_transpose``: the forward spec whose adjoint it is.

As in 2-D (:mod:`dilconv._transpose.spec`), a transposed convolution of ``x`` is the
adjoint of the convolution whose *output* has ``x``'s spatial size and whose
weight is the transposed convolution's weight; this module works out the output
size per axis by ``conv2d_transpose``'s rules (``output_padding``, ``output_size``,
``"same"``, ``"valid"``) and asks :func:`dilconv._spec_nd.make_spec_nd` for that
forward spec.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dilconv import _shapes
from dilconv._spec import as_choice, as_int, check_sizes_and_groups
from dilconv._spec_nd import (
    AXES,
    FORMATS,
    PadsN,
    SpecN,
    as_tuple,
    make_spec_nd,
    parse_padding_nd,
    split_layout_nd,
    split_weight_nd,
)


def _size_range(
    padding: str | PadsN, axis: int, i: int, k: int, s: int, d: int, out_pad: int
) -> tuple[tuple[int, int], int]:
    """The reachable output sizes along one axis, and the size ``output_padding`` picks."""
    if padding == "same":
        return _shapes.transpose_same_range(i, s), _shapes.transpose_same_size(i, s)
    if isinstance(padding, str):  # "valid"
        return _shapes.transpose_valid_range(i, k, s, d), _shapes.transpose_valid_size(i, k, s, d)
    lo, hi = padding[axis]
    reach = _shapes.transpose_size_range(i, k, s, d, lo, hi)
    return reach, _shapes.transpose_out_size(i, k, s, d, lo, hi, out_pad)


def make_transpose_spec_nd(
    rank: int,
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
    data_format: Any = None,
    output_size: Any = None,
) -> SpecN:
    """Validate every option of a ``rank``-D transposed convolution; return the forward spec.

    The spec's input is the transposed convolution's output; its output is the
    transposed convolution's input, or larger at the end when ``output_padding``
    reaches past the stride (those sources are zeros).
    """
    formats = FORMATS[rank]
    data_format = as_choice(
        "data_format", formats[0] if data_format is None else data_format, formats
    )
    strides = as_tuple("stride", stride, rank, minimum=1)
    dilations = as_tuple("dilation", dilation, rank, minimum=1)
    n_groups = as_int("groups", groups, minimum=1)
    out_pad = as_tuple("output_padding", output_padding, rank, minimum=0)
    if isinstance(padding, str) and padding.lower() == "causal":
        raise ValueError(
            "padding='causal' is for conv1d, conv1d_grad_input, conv1d_grad_weight and "
            "nn.Conv1d, not for a transposed convolution; give the pads explicitly "
            f"(causal is ((dilation * (k - 1), 0),)), got padding={padding!r}"
        )
    parsed = parse_padding_nd(padding, rank)
    if parsed == "full":
        raise ValueError(
            "padding must be an int, per-axis pads, 'same' or 'valid' for a "
            "transposed convolution, got 'full'"
        )

    x_shape, w_shape = tuple(x_shape), tuple(w_shape)
    batch, channels, in_size = split_layout_nd(x_shape, rank, data_format)
    c_in, out_per_group, kernel = split_weight_nd(
        w_shape, len(x_shape), rank, data_format, transposed=True
    )
    check_sizes_and_groups(x_shape, w_shape, rank, n_groups)
    if c_in != channels:
        where = "first" if data_format.startswith("NC") else "last"
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
    for axis in range(rank):
        s, d = strides[axis], dilations[axis]
        limit = _shapes.output_padding_limit(s, d)
        if out_pad[axis] >= limit:
            raise ValueError(
                f"output_padding must be smaller than max(stride, dilation) = {limit} along "
                f"{AXES[rank][axis]}, got output_padding={output_padding!r}"
            )
        if isinstance(parsed, str) and out_pad[axis]:
            raise ValueError(
                f"output_padding applies to explicit padding; with padding={parsed!r} "
                f"choose the size with output_size instead, got output_padding={output_padding!r}"
            )
        r, size = _size_range(parsed, axis, in_size[axis], kernel[axis], s, d, out_pad[axis])
        reach.append(r)
        default.append(size)
    if output_size is None:
        out_size = tuple(default)
    else:
        if any(out_pad):
            raise ValueError(
                f"give output_padding or output_size, not both; got output_padding="
                f"{output_padding!r} and output_size={output_size!r}"
            )
        out_size = as_tuple("output_size", output_size, rank, minimum=1)
        if not all(lo <= n <= hi for n, (lo, hi) in zip(out_size, reach, strict=True)):
            ranges = ", ".join(
                f"{AXES[rank][a]} in [{lo}, {hi}]" for a, (lo, hi) in enumerate(reach)
            )
            raise ValueError(
                f"output_size={output_size!r} cannot be reached: for this input, kernel, "
                f"stride, dilation and padding the output size must have {ranges}"
            )
    if min(out_size) < 1:
        raise ValueError(
            f"the transposed output would be {'x'.join(map(str, out_size))}: "
            f"padding={padding!r} crops more than the input and kernel cover; pad less"
        )

    if len(x_shape) == rank:
        fwd_shape: tuple[int, ...] = out_size
    elif data_format.startswith("NC"):
        fwd_shape = (batch, out_channels, *out_size)
    else:
        fwd_shape = (batch, *out_size, out_channels)
    if len(x_shape) == rank + 1:
        fwd_shape = fwd_shape[1:]
    return make_spec_nd(
        rank,
        fwd_shape,
        w_shape,
        dtypes=dtypes,
        stride=strides,
        padding=parsed,
        dilation=dilations,
        groups=n_groups,
        data_format=data_format,
    )

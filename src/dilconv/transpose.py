"""Transposed (fractionally strided) dilated convolution: the adjoint of ``conv2d``."""

from __future__ import annotations

from typing import Any

import numpy as np

from dilconv._spec import as_array, as_choice, as_int
from dilconv._transpose import resolve_transpose_method, run_conv_transpose
from dilconv._transpose.spec import as_shape, make_transpose_spec


def conv2d_transpose(
    x: Any,
    w: Any,
    bias: Any = None,
    *,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    data_format: str = "NCHW",
    output_size: Any = None,
    method: str = "auto",
) -> np.ndarray:
    """Dilated 2-D transposed convolution, the adjoint of :func:`dilconv.conv2d`.

    ``<conv2d(z, w), x> == <z, conv2d_transpose(x, w)>`` for the same stride,
    padding, dilation, groups and layout, where ``z`` has this function's output shape.
    No zeros are inserted between the input pixels: each kernel tap adds one matrix
    product into a strided slice of the result (``method="scatter"``); at stride 1
    it is the forward correlation with the reversed kernel (``"correlate"``), and
    where the stride divides the dilation the same on the one phase of the result
    the taps reach (``"phase"``).

    Parameters
    ----------
    x : array_like
        Input: ``(N, C_in, H, W)`` or ``(C_in, H, W)`` for ``"NCHW"``,
        ``(N, H, W, C_in)`` or ``(H, W, C_in)`` for ``"NHWC"``, or a plain
        ``(H, W)`` image with a ``(kh, kw)`` kernel.
    w : array_like
        NCHW: PyTorch's ``conv_transpose2d`` weight ``(C_in, C_out/groups, kh, kw)``.
        NHWC: TensorFlow's ``conv2d_transpose`` filter ``(kh, kw, C_out/groups, C_in)``
        (TensorFlow itself has no groups; with ``groups`` they split ``C_in`` and
        ``C_out`` into consecutive blocks, as in PyTorch).
    bias : array_like, optional
        ``(C_out,)``.
    stride, dilation : int or (int, int)
        Of the forward convolution this is the adjoint of.
    padding : int, (int, int), ((int, int), (int, int)), "same" or "valid"
        Explicit pads cropped from the full result, as in PyTorch; or TensorFlow's
        rule: ``"same"`` gives ``H * stride`` (or ``output_size``) with the forward
        SAME pads of that size, ``"valid"`` gives ``(H - 1) * stride + k_eff +
        max(stride - k_eff, 0)``.
    output_padding : int or (int, int)
        Extra rows/columns at the bottom/right, each below ``max(stride, dilation)``
        as in PyTorch; explicit padding only.
    groups : int
        Channel groups; must divide ``C_in``.
    data_format : {"NCHW", "NHWC"}
        Layout of ``x``, ``w`` and the result.
    output_size : (int, int), optional
        The result's ``(H, W)``; it chooses ``output_padding`` (or, with
        ``"same"``/``"valid"``, the size among those whose forward convolution
        gives ``x``'s size). A size no choice reaches raises ValueError naming the
        range (PyTorch's ``output_size`` reaches only ``stride - 1`` past the
        smallest; this reaches every ``output_padding``).
    method : str
        ``"auto"`` (``"correlate"`` at stride 1, ``"phase"`` where the stride divides
        the dilation, else ``"scatter"``), ``"scatter"``, ``"correlate"``, ``"phase"``
        or ``"direct"`` (the loop oracle).

    Returns
    -------
    numpy.ndarray
        The result in ``x``'s layout and rank, dtype ``numpy.result_type`` of the inputs
        (float16 accumulated in float32; integers exact as int64).

    Notes
    -----
    With input size ``i``, pads ``lo`` and ``hi``, ``k`` taps, dilation ``d`` and
    stride ``s``, the output size is
    ``(i - 1) * s - lo - hi + d * (k - 1) + 1 + output_padding``, and input pixel
    ``o`` adds ``x[o] * w[t]`` into output ``o * s - lo + t * d``.

    Examples
    --------
    >>> import numpy as np
    >>> conv2d_transpose(np.array([[1, 2], [3, 4]]), np.array([[1, 10]]), stride=2, dilation=1)
    array([[ 1, 10,  2, 20],
           [ 0,  0,  0,  0],
           [ 3, 30,  4, 40]])
    >>> conv2d_transpose(np.ones((1, 8, 5, 5)), np.ones((8, 4, 3, 3)), stride=2,
    ...                  padding=1, output_padding=1, dilation=2).shape
    (1, 4, 12, 12)
    >>> conv2d_transpose(np.ones((1, 5, 5, 8)), np.ones((3, 3, 4, 8)), stride=2,
    ...                  padding="same", data_format="NHWC").shape
    (1, 10, 10, 4)
    """
    xa, wa = as_array("x", x), as_array("w", w)
    ba = None if bias is None else as_array("bias", bias)
    dtypes = [xa.dtype, wa.dtype] + ([] if ba is None else [ba.dtype])
    spec = make_transpose_spec(
        xa.shape,
        wa.shape,
        bias_shape=None if ba is None else ba.shape,
        dtypes=dtypes,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        groups=groups,
        data_format=data_format,
        output_size=output_size,
    )
    return run_conv_transpose(xa, wa, ba, spec, resolve_transpose_method(method, spec))


def atrous_conv2d_transpose(
    value: Any, filters: Any, output_shape: Any, rate: int, padding: str
) -> np.ndarray:
    """A drop-in for ``tf.nn.atrous_conv2d_transpose``: the adjoint of ``atrous_conv2d``.

    Parameters
    ----------
    value : array_like
        ``(N, H, W, in_channels)``.
    filters : array_like
        ``(kh, kw, out_channels, in_channels)``.
    output_shape : sequence of 4 ints
        ``(N, out_height, out_width, out_channels)``; ``atrous_conv2d`` of an array
        of this shape must give ``value``'s shape.
    rate : int
        The dilation, >= 1.
    padding : {"SAME", "VALID"}
        TensorFlow's padding keyword (SAME: the odd pixel at the bottom/right).

    Examples
    --------
    >>> import numpy as np
    >>> y = atrous_conv2d_transpose(np.ones((1, 9, 9, 2)), np.ones((3, 3, 1, 2)), (1, 9, 9, 1),
    ...                             2, "SAME")
    >>> float(y[0, 4, 4, 0]), float(y[0, 0, 0, 0])
    (18.0, 8.0)
    """
    rate = as_int("rate", rate, minimum=1)
    if not isinstance(padding, str) or padding.upper() not in ("SAME", "VALID"):
        raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
    value_arr, filters_arr = as_array("value", value), as_array("filters", filters)
    if value_arr.ndim != 4:
        raise ValueError(f"value must be 4-D (N, H, W, C), got shape {value_arr.shape}")
    if filters_arr.ndim != 4:
        raise ValueError(
            f"filters must be 4-D (kh, kw, out_channels, in_channels), got shape "
            f"{filters_arr.shape}"
        )
    shape = as_shape("output_shape", output_shape)
    if len(shape) != 4:
        raise ValueError(f"output_shape must have 4 entries (N, H, W, C), got {output_shape!r}")
    if shape[0] != value_arr.shape[0]:
        raise ValueError(
            f"output_shape batch {shape[0]} must equal value's batch {value_arr.shape[0]}"
        )
    if shape[3] != filters_arr.shape[2]:
        raise ValueError(
            f"output_shape channel count {shape[3]} must equal filters' output channel "
            f"count {filters_arr.shape[2]} (filters shape {filters_arr.shape})"
        )
    return conv2d_transpose(
        value_arr,
        filters_arr,
        dilation=rate,
        padding=as_choice("padding", padding.lower(), ("same", "valid")),
        data_format="NHWC",
        output_size=shape[1:3],
    )

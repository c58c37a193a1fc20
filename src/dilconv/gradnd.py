"""Transposed convolutions and gradients in 1-D and 3-D: each one a convolution.

As in 2-D (:mod:`dilconv.grad`): the input gradient is the transposed
convolution (the same code runs ``conv1d_transpose``/``conv3d_transpose``), the
weight gradient a correlation of the input with the output gradient, stride and
dilation swapped, and the bias gradient a sum. Both run on the 2-D engine per
depth tap (:mod:`dilconv._engine_nd`): a 1-D call is one 2-D call on one row. At
stride 1 a 3-D input gradient is instead the forward correlation of the output
gradient with the reversed kernel, where that runs every depth tap in one pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dilconv import _engine_nd
from dilconv._spec import as_array, as_choice, compute_dtypes
from dilconv._spec_nd import FORMATS, SpecN, make_spec_nd
from dilconv._transpose.spec import as_shape
from dilconv._transpose_nd import make_transpose_spec_nd


def _adjoint(
    g: np.ndarray, w: np.ndarray, bias: np.ndarray | None, spec: SpecN, method: str
) -> np.ndarray:
    """The adjoint of the convolution ``spec`` applied to ``g`` (caller layout), in the
    caller's layout; ``g`` may be shorter at the end than the forward output (zeros)."""
    gc = _engine_nd.to_channels_last(g, spec)
    want = (*(1,) * (3 - spec.rank), *spec.out_size)
    missing = [(0, n - have) for n, have in zip(want, gc.shape[1:4], strict=True)]
    if any(m for _, m in missing):
        gc = np.pad(gc, [(0, 0), *missing, (0, 0)])
    wc = _engine_nd.weight_to_channels_last(w, spec)
    x = _engine_nd.adjoint(gc, wc, _engine_nd.volume(spec), method)
    x = _engine_nd.unpad_adjoint(x, spec)
    if bias is not None:
        x += bias.astype(spec.dtype)
    return _engine_nd.from_channels_last(x, spec)


def _transpose(rank: int, x: Any, w: Any, bias: Any, method: str, **options: Any) -> np.ndarray:
    xa, wa = as_array("x", x), as_array("w", w)
    ba = None if bias is None else as_array("bias", bias)
    dtypes = [xa.dtype, wa.dtype] + ([] if ba is None else [ba.dtype])
    spec = make_transpose_spec_nd(
        rank,
        xa.shape,
        wa.shape,
        bias_shape=None if ba is None else ba.shape,
        dtypes=dtypes,
        **options,
    )
    _engine_nd.check_transpose_method(method)
    return _adjoint(xa, wa, ba, spec, method)


def conv1d_transpose(
    x: Any,
    w: Any,
    bias: Any = None,
    *,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    data_format: str = "NCW",
    output_size: Any = None,
    method: str = "auto",
) -> np.ndarray:
    """Dilated 1-D transposed convolution, the adjoint of :func:`dilconv.conv1d`.

    ``conv2d_transpose``'s rules, per axis: ``output_padding`` (below
    ``max(stride, dilation)``), ``output_size``, and TensorFlow's ``"same"``
    (``L * stride``) and ``"valid"``; ``padding="causal"`` is refused (give
    ``((d * (k - 1), 0),)``).

    Parameters
    ----------
    x : array_like
        ``(N, C_in, L)`` or ``(C_in, L)`` for ``"NCW"``, ``(N, L, C_in)`` or
        ``(L, C_in)`` for ``"NWC"``, or a plain ``(L,)`` signal with a ``(k,)`` kernel.
    w : array_like
        PyTorch's ``conv_transpose1d`` weight ``(C_in, C_out/groups, k)`` for NCW;
        TensorFlow's ``conv1d_transpose`` filter ``(k, C_out/groups, C_in)`` for NWC.
    bias : array_like, optional
        ``(C_out,)``.
    stride, padding, output_padding, dilation, groups, output_size, method
        As for :func:`dilconv.conv2d_transpose`, per axis (``((before, after),)``
        for explicit pads).
    data_format : {"NCW", "NWC"}
        Layout of ``x``, ``w`` and the result.

    Returns
    -------
    numpy.ndarray
        Output length ``(L - 1) * s - lo - hi + d * (k - 1) + 1 + output_padding``
        for explicit pads.

    Examples
    --------
    >>> import numpy as np
    >>> conv1d_transpose(np.array([1, 2]), np.array([1, 10]), stride=3, dilation=2)
    array([ 1,  0, 10,  2,  0, 20])
    """
    return _transpose(
        1,
        x,
        w,
        bias,
        method,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        groups=groups,
        data_format=data_format,
        output_size=output_size,
    )


def conv3d_transpose(
    x: Any,
    w: Any,
    bias: Any = None,
    *,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    data_format: str = "NCDHW",
    output_size: Any = None,
    method: str = "auto",
) -> np.ndarray:
    """Dilated 3-D transposed convolution, the adjoint of :func:`dilconv.conv3d`.

    Each depth tap's 2-D transposed convolution (``method`` names its algorithm,
    as for :func:`dilconv.conv2d_transpose`) is added into the planes that tap
    reaches.

    Parameters
    ----------
    x : array_like
        ``(N, C_in, D, H, W)`` / ``(C_in, D, H, W)`` for ``"NCDHW"``,
        ``(N, D, H, W, C_in)`` / ``(D, H, W, C_in)`` for ``"NDHWC"``, or a plain
        ``(D, H, W)`` volume with a ``(kd, kh, kw)`` kernel.
    w : array_like
        ``(C_in, C_out/groups, kd, kh, kw)`` for NCDHW (PyTorch),
        ``(kd, kh, kw, C_out/groups, C_in)`` for NDHWC (TensorFlow).
    bias : array_like, optional
        ``(C_out,)``.
    stride, padding, output_padding, dilation, groups, output_size, method
        As for :func:`dilconv.conv2d_transpose`, per axis ``(d, h, w)``.
    data_format : {"NCDHW", "NDHWC"}
        Layout of ``x``, ``w`` and the result.

    Returns
    -------
    numpy.ndarray
        The transposed convolution in the input's layout and rank.

    Examples
    --------
    >>> import numpy as np
    >>> conv3d_transpose(np.ones((1, 1, 2, 2, 2)), np.ones((1, 1, 2, 2, 2)), dilation=2).shape
    (1, 1, 4, 4, 4)
    """
    return _transpose(
        3,
        x,
        w,
        bias,
        method,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        groups=groups,
        data_format=data_format,
        output_size=output_size,
    )


def _grad_input(
    rank: int, grad_out: Any, w: Any, input_shape: Any, method: str, **options: Any
) -> np.ndarray:
    ga, wa = as_array("grad_out", grad_out), as_array("w", w)
    spec = make_spec_nd(
        rank, as_shape("input_shape", input_shape), wa.shape, dtypes=[ga.dtype, wa.dtype], **options
    )
    if ga.shape != spec.out_shape:
        raise ValueError(
            f"grad_out must have the shape conv{rank}d returns for input_shape "
            f"{tuple(input_shape)} and w {wa.shape}, {spec.out_shape}, got {ga.shape}"
        )
    _engine_nd.check_transpose_method(method)
    return _adjoint(ga, wa, None, spec, method)


def _grad_weight(
    rank: int, x: Any, grad_out: Any, weight_shape: Any, method: str, **options: Any
) -> np.ndarray:
    xa, ga = as_array("x", x), as_array("grad_out", grad_out)
    spec = make_spec_nd(
        rank,
        xa.shape,
        as_shape("weight_shape", weight_shape),
        dtypes=[xa.dtype, ga.dtype],
        **options,
    )
    if ga.shape != spec.out_shape:
        raise ValueError(
            f"grad_out must have the shape conv{rank}d returns for x {xa.shape} and "
            f"weight_shape {tuple(weight_shape)}, {spec.out_shape}, got {ga.shape}"
        )
    xc = _engine_nd.pad_input(_engine_nd.to_channels_last(xa, spec), spec)
    gc = _engine_nd.to_channels_last(ga, spec)
    dw = _engine_nd.grad_weight(xc, gc, _engine_nd.volume(spec), method)
    return _engine_nd.weight_from_channels_last(dw, spec)


def conv1d_grad_input(
    grad_out: Any,
    w: Any,
    input_shape: Any,
    *,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    data_format: str = "NCW",
    flip: bool = False,
    method: str = "auto",
) -> np.ndarray:
    """Gradient of ``conv1d(x, w, ...)`` with respect to ``x``: the transposed convolution.

    Like ``torch.nn.grad.conv1d_input``, for every :func:`dilconv.conv1d` option,
    ``padding="causal"`` included: the same code as :func:`conv1d_transpose`, with
    the length restored to ``input_shape``; a non-zero ``padding_mode`` adds each
    padded sample's gradient into the sample it was copied from.

    Parameters
    ----------
    grad_out : array_like
        Gradient of the loss with respect to ``conv1d``'s result.
    w : array_like
        The weights given to ``conv1d``.
    input_shape : tuple of int
        Shape of ``x``.
    stride, padding, dilation, groups, padding_mode, data_format, flip
        As for :func:`dilconv.conv1d`.
    method : str
        ``"auto"`` or a transposed-convolution algorithm of
        :func:`dilconv.conv2d_grad_input`.

    Returns
    -------
    numpy.ndarray
        Of shape ``input_shape``, dtype ``numpy.result_type(grad_out, w)``.

    Examples
    --------
    >>> import numpy as np
    >>> conv1d_grad_input(np.ones(4), np.array([1.0, 2.0]), (4,), dilation=2, padding="causal")
    array([3., 3., 2., 2.])
    """
    return _grad_input(
        1,
        grad_out,
        w,
        input_shape,
        method,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        padding_mode=padding_mode,
        data_format=data_format,
        flip=flip,
    )


def conv3d_grad_input(
    grad_out: Any,
    w: Any,
    input_shape: Any,
    *,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    data_format: str = "NCDHW",
    flip: bool = False,
    method: str = "auto",
) -> np.ndarray:
    """Gradient of ``conv3d(x, w, ...)`` with respect to ``x``: the transposed convolution.

    Like ``torch.nn.grad.conv3d_input``, for every :func:`dilconv.conv3d` option:
    the same code as :func:`conv3d_transpose`, with the size restored to
    ``input_shape``.

    Parameters
    ----------
    grad_out : array_like
        Gradient of the loss with respect to ``conv3d``'s result.
    w : array_like
        The weights given to ``conv3d``.
    input_shape : tuple of int
        Shape of ``x``.
    stride, padding, dilation, groups, padding_mode, data_format, flip
        As for :func:`dilconv.conv3d`.
    method : str
        ``"auto"`` or a transposed-convolution algorithm of
        :func:`dilconv.conv2d_grad_input`.

    Returns
    -------
    numpy.ndarray
        Of shape ``input_shape``, dtype ``numpy.result_type(grad_out, w)``.

    Examples
    --------
    >>> import numpy as np
    >>> g = conv3d_grad_input(np.ones((2, 2, 2)), np.ones((2, 2, 2)), (3, 3, 3))
    >>> g[:, 1, 1]
    array([4., 8., 4.])
    """
    return _grad_input(
        3,
        grad_out,
        w,
        input_shape,
        method,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        padding_mode=padding_mode,
        data_format=data_format,
        flip=flip,
    )


def conv1d_grad_weight(
    x: Any,
    grad_out: Any,
    weight_shape: Any,
    *,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    data_format: str = "NCW",
    flip: bool = False,
    method: str = "auto",
) -> np.ndarray:
    """Gradient of ``conv1d(x, w, ...)`` with respect to ``w``.

    Like ``torch.nn.grad.conv1d_weight``, for every :func:`dilconv.conv1d` option,
    ``padding="causal"`` included: :func:`dilconv.conv2d_grad_weight` of the
    signal as one row.

    Parameters
    ----------
    x : array_like
        The input given to ``conv1d``.
    grad_out : array_like
        Gradient of the loss with respect to ``conv1d``'s result.
    weight_shape : tuple of int
        Shape of ``w``.
    stride, padding, dilation, groups, padding_mode, data_format, flip
        As for :func:`dilconv.conv1d`.
    method : str
        As for :func:`dilconv.conv2d_grad_weight`.

    Returns
    -------
    numpy.ndarray
        Of shape ``weight_shape``, dtype ``numpy.result_type(x, grad_out)``.

    Examples
    --------
    >>> import numpy as np
    >>> conv1d_grad_weight(np.arange(5.0), np.ones(5), (2,), dilation=3, padding="causal")
    array([ 1., 10.])
    """
    return _grad_weight(
        1,
        x,
        grad_out,
        weight_shape,
        method,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        padding_mode=padding_mode,
        data_format=data_format,
        flip=flip,
    )


def conv3d_grad_weight(
    x: Any,
    grad_out: Any,
    weight_shape: Any,
    *,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    data_format: str = "NCDHW",
    flip: bool = False,
    method: str = "auto",
) -> np.ndarray:
    """Gradient of ``conv3d(x, w, ...)`` with respect to ``w``.

    Like ``torch.nn.grad.conv3d_weight``, for every :func:`dilconv.conv3d` option:
    per depth tap, :func:`dilconv.conv2d_grad_weight` of the planes that tap read
    with the output-gradient planes they made.

    Parameters
    ----------
    x : array_like
        The input given to ``conv3d``.
    grad_out : array_like
        Gradient of the loss with respect to ``conv3d``'s result.
    weight_shape : tuple of int
        Shape of ``w``.
    stride, padding, dilation, groups, padding_mode, data_format, flip
        As for :func:`dilconv.conv3d`.
    method : str
        As for :func:`dilconv.conv2d_grad_weight`.

    Returns
    -------
    numpy.ndarray
        Of shape ``weight_shape``, dtype ``numpy.result_type(x, grad_out)``.

    Examples
    --------
    >>> import numpy as np
    >>> conv3d_grad_weight(np.ones((4, 4, 4)), np.ones((2, 2, 2)), (2, 2, 2), dilation=2)[0, 0]
    array([8., 8.])
    """
    return _grad_weight(
        3,
        x,
        grad_out,
        weight_shape,
        method,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        padding_mode=padding_mode,
        data_format=data_format,
        flip=flip,
    )


def _grad_bias(rank: int, grad_out: Any, data_format: Any) -> np.ndarray:
    ga = as_array("grad_out", grad_out)
    data_format = as_choice("data_format", data_format, FORMATS[rank])
    if ga.ndim == rank:
        axes: tuple[int, ...] = tuple(range(rank))
    elif ga.ndim in (rank + 1, rank + 2):
        channel = (ga.ndim - rank - 1) if data_format.startswith("NC") else ga.ndim - 1
        axes = tuple(a for a in range(ga.ndim) if a != channel)
    else:
        raise ValueError(
            f"grad_out must be {rank}-D, {rank + 1}-D or {rank + 2}-D ({data_format}), "
            f"got {ga.ndim}-D shape {ga.shape}"
        )
    accumulate, result = compute_dtypes(ga.dtype)
    total = ga.sum(axis=axes, dtype=accumulate).astype(result)
    return total.reshape(1) if ga.ndim == rank else total


def conv1d_grad_bias(grad_out: Any, *, data_format: str = "NCW") -> np.ndarray:
    """Gradient of ``conv1d(x, w, bias, ...)`` with respect to ``bias``.

    The sum of ``grad_out`` over every axis but the channels (a plain signal has
    one channel: shape ``(1,)``).

    Examples
    --------
    >>> import numpy as np
    >>> conv1d_grad_bias(np.ones((2, 3, 5)))
    array([10., 10., 10.])
    >>> conv1d_grad_bias(np.ones((5, 3), dtype=np.int32), data_format="NWC")
    array([5, 5, 5])
    """
    return _grad_bias(1, grad_out, data_format)


def conv3d_grad_bias(grad_out: Any, *, data_format: str = "NCDHW") -> np.ndarray:
    """Gradient of ``conv3d(x, w, bias, ...)`` with respect to ``bias``.

    The sum of ``grad_out`` over every axis but the channels.

    Examples
    --------
    >>> import numpy as np
    >>> conv3d_grad_bias(np.ones((2, 4, 3, 3, 3)))
    array([54., 54., 54., 54.])
    """
    return _grad_bias(3, grad_out, data_format)

"""Gradients of ``conv2d``: each one is itself a convolution.

* ``conv2d_grad_input`` is the transposed convolution: it runs the very code of
  :func:`dilconv.conv2d_transpose` (:func:`dilconv._transpose.run_conv_transpose`),
  then folds the gradient of padded pixels back into their sources for non-zero
  padding modes.
* ``conv2d_grad_weight`` is a correlation of the input with the output gradient,
  stride and dilation swapped, run by the forward engine (:func:`dilconv.conv.run_conv`);
  with stride 1, ``"auto"`` computes that correlation as one long matrix product per
  kernel tap on column windows of the input (:mod:`dilconv._grad_weight`).
* ``conv2d_grad_bias`` is a sum over every axis but the channels.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from dilconv import _exact, _grad_weight, _select, _shapes
from dilconv._layout import to_canonical, weight_from_canonical
from dilconv._padding import pad_spatial
from dilconv._spec import (
    DATA_FORMATS,
    MAX_OPTION,
    ConvSpec,
    as_array,
    as_choice,
    check_result,
    compute_dtypes,
    make_spec,
)
from dilconv._spec import (
    input_shape as _input_shape,
)
from dilconv._transpose import resolve_transpose_method, run_conv_transpose
from dilconv._transpose.spec import as_shape
from dilconv.conv import run_conv


def _check_grad_out(grad_out: np.ndarray, spec: ConvSpec, names: str) -> None:
    if grad_out.shape != spec.out_shape:
        raise ValueError(
            f"grad_out must have the shape conv2d returns for {names}, {spec.out_shape}, "
            f"got {grad_out.shape}"
        )


def conv2d_grad_input(
    grad_out: Any,
    w: Any,
    input_shape: Any,
    *,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    data_format: str = "NCHW",
    flip: bool = False,
    method: str = "auto",
) -> np.ndarray:
    """Gradient of ``conv2d(x, w, ...)`` with respect to ``x``.

    Like ``torch.nn.grad.conv2d_input``, for every :func:`dilconv.conv2d` option.
    It is computed as the transposed convolution of ``grad_out`` with ``w``: the
    same code as :func:`dilconv.conv2d_transpose`, with the ``output_padding`` that
    restores ``input_shape`` (the rows the forward stride never reached get zero).
    For a non-zero ``padding_mode`` the gradient of each padded pixel is then added
    into the pixel it was copied from (reflected, replicated or wrapped).

    Parameters
    ----------
    grad_out : array_like
        Gradient of the loss with respect to ``conv2d``'s result; its shape.
    w : array_like
        The weights given to ``conv2d``.
    input_shape : tuple of int
        Shape of ``x``.
    stride, padding, dilation, groups, padding_mode, data_format, flip
        As for :func:`dilconv.conv2d`.
    method : str
        ``"auto"`` or a transposed-convolution algorithm: ``"scatter"`` (per-tap
        scatter-add, any stride), ``"correlate"`` (stride 1: the correlation with
        the reversed kernel on the forward engine) or ``"direct"`` (the loop oracle).

    Returns
    -------
    numpy.ndarray
        Of shape ``input_shape``, dtype ``numpy.result_type(grad_out, w)``
        (float16 accumulated in float32, integers exact as int64).

    Examples
    --------
    >>> import numpy as np
    >>> g = np.ones((1, 1, 2, 2))
    >>> conv2d_grad_input(g, np.ones((1, 1, 2, 2)), (1, 1, 4, 4), dilation=2)[0, 0]
    array([[1., 1., 1., 1.],
           [1., 1., 1., 1.],
           [1., 1., 1., 1.],
           [1., 1., 1., 1.]])
    >>> conv2d_grad_input(np.ones((2, 2)), np.ones((1, 1)), (3, 3), stride=2)
    array([[1., 0., 1.],
           [0., 0., 0.],
           [1., 0., 1.]])
    """
    ga, wa = as_array("grad_out", grad_out), as_array("w", w)
    spec = make_spec(
        as_shape("input_shape", input_shape),
        wa.shape,
        dtypes=[ga.dtype, wa.dtype],
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        padding_mode=padding_mode,
        data_format=data_format,
        flip=flip,
    )
    _check_grad_out(ga, spec, f"input_shape {tuple(input_shape)} and w {wa.shape}")
    check_result("input gradient", _input_shape(spec), spec.dtype.itemsize)
    return run_conv_transpose(ga, wa, None, spec, resolve_transpose_method(method, spec))


def _grouped(a: np.ndarray, spec: ConvSpec, channels: int) -> np.ndarray:
    """Activations in the caller's layout and rank as a view ``(N, groups, C/groups, H, W)``."""
    if spec.x_ndim == 2:
        return a[None, None, None]
    if spec.x_ndim == 3:
        a = a[None]
    n, per = a.shape[0], channels // spec.groups
    if spec.data_format == "NCHW":
        return a.reshape(n, spec.groups, per, *a.shape[2:])
    return a.reshape(*a.shape[:3], spec.groups, per).transpose(0, 3, 4, 1, 2)


def _swapped(
    x: np.ndarray, g: np.ndarray, spec: ConvSpec
) -> tuple[np.ndarray, np.ndarray, ConvSpec]:
    """The weight gradient as a forward problem: arrays and spec.

    ``x`` (in the caller's layout) becomes an input ``(C/groups, H, W, groups * N)``
    whose batch is the channel within a group and whose channels are ``(group,
    image)``, padded by ``padding_mode`` when that is not zeros; ``g`` becomes a
    kernel ``(Ho, Wo, N, O)`` with dilation = stride, run with stride = dilation and
    ``groups`` groups. Rows past the last one the forward stride reads are cut off,
    so the result is exactly ``(C/groups, kh, kw, O)``. For NCHW with one image no
    copy of ``x`` is made.
    """
    xs = _grouped(x, spec, spec.in_channels).transpose(2, 3, 4, 1, 0)  # (cg, H, W, G, N)
    if spec.padding_mode != "zeros":
        xs = pad_spatial(xs.astype(spec.dtype, copy=False), spec.pad, spec.padding_mode)
    lowered = spec.lowered()
    pads, keep = [], []
    for axis in range(2):
        size, (lo, hi) = lowered.in_hw[axis], lowered.pad[axis]
        k, s, d = spec.kernel_hw[axis], spec.stride[axis], spec.dilation[axis]
        tail = _shapes.unreached_tail(size, k, s, d, lo, hi)
        pads.append((lo, hi - min(hi, tail)))
        keep.append(size - max(tail - hi, 0))
    if min(keep) < 1:  # the padding alone covers every read: x gets no gradient
        return xs[:0], g[:0], spec
    cg, rows = spec.in_per_group, xs.shape[3] * xs.shape[4]
    xs = np.ascontiguousarray(xs[:, : keep[0], : keep[1]], dtype=spec.dtype)
    xs = xs.reshape(cg, keep[0], keep[1], rows)
    ks = _grouped(g, spec, spec.out_channels).transpose(3, 4, 0, 1, 2)  # (Ho, Wo, N, G, og)
    ks = np.ascontiguousarray(ks, dtype=spec.dtype).reshape(*ks.shape[:3], spec.out_channels)
    swapped = make_spec(
        xs.shape,
        ks.shape,
        dtypes=[spec.dtype],
        stride=spec.dilation,
        padding=(pads[0], pads[1]),
        dilation=spec.stride,
        groups=spec.groups,
        data_format="NHWC",
    )
    return xs, ks, swapped


def conv2d_grad_weight(
    x: Any,
    grad_out: Any,
    weight_shape: Any,
    *,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    data_format: str = "NCHW",
    flip: bool = False,
    method: str = "auto",
) -> np.ndarray:
    """Gradient of ``conv2d(x, w, ...)`` with respect to ``w``.

    Like ``torch.nn.grad.conv2d_weight``, for every :func:`dilconv.conv2d` option.
    It is computed as a correlation of the (padded) input with the output gradient,
    stride and dilation swapped: the input, its batch and channel axes exchanged,
    is correlated with ``grad_out`` used as a ``(Ho, Wo)`` kernel of
    ``dilation=stride`` at ``stride=dilation``, one channel group per weight
    group, by the forward engine (``method`` picks its algorithm). With
    ``flip=True`` the gradient of the reversed kernel is reversed back.

    Parameters
    ----------
    x : array_like
        The input given to ``conv2d``.
    grad_out : array_like
        Gradient of the loss with respect to ``conv2d``'s result.
    weight_shape : tuple of int
        Shape of ``w``.
    stride, padding, dilation, groups, padding_mode, data_format, flip
        As for :func:`dilconv.conv2d`.
    method : str
        A forward algorithm (:data:`dilconv.METHODS`) for the swapped correlation;
        ``"auto"``: for float input, per-tap sums with nothing gathered (the
        register-blocked tiles, or with stride 1 and one group one matrix product
        per tap, whichever the cost model prefers), otherwise ``"im2col"`` on the
        swapped problem.

    Returns
    -------
    numpy.ndarray
        Of shape ``weight_shape``, dtype ``numpy.result_type(x, grad_out)``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(16.0).reshape(4, 4)
    >>> conv2d_grad_weight(x, np.ones((2, 2)), (2, 2), dilation=2)  # sums of 2x2 blocks
    array([[10., 18.],
           [42., 50.]])
    """
    xa, ga = as_array("x", x), as_array("grad_out", grad_out)
    spec = make_spec(
        xa.shape,
        as_shape("weight_shape", weight_shape),
        dtypes=[xa.dtype, ga.dtype],
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        padding_mode=padding_mode,
        data_format=data_format,
        flip=flip,
    )
    _check_grad_out(ga, spec, f"x {xa.shape} and weight_shape {tuple(weight_shape)}")
    check_result("weight gradient", tuple(weight_shape), spec.dtype.itemsize)
    exact = _exact.overflows(spec, xa, ga, spec.batch * spec.out_hw[0] * spec.out_hw[1])
    if exact:  # sums that could leave int64: Python integers, then int64 or OverflowError
        spec = _exact.exact_spec(spec)
    lowered = spec.lowered()
    if method == "auto" and not exact and _grad_weight.applies(lowered):
        xc = to_canonical(xa, spec)
        if spec.padding_mode != "zeros":
            xc = pad_spatial(xc, spec.pad, spec.padding_mode)
        dw = _grad_weight.grad_weight(xc, to_canonical(ga, spec), lowered)
        return weight_from_canonical(dw, spec)
    kh, kw = spec.kernel_hw
    shape = (kh, kw, spec.in_per_group, spec.out_channels)
    grad: np.ndarray | None = None
    live, spec_live = _live_taps(spec)
    if spec_live is not None:
        xs, ks, swapped = _swapped(xa, ga, spec_live)
        if xs.size:
            grad = _swapped_grad_weight(xs, ks, swapped, method, exact)
            if spec_live is not spec:  # the cut-off taps get zeros
                part, grad = grad, np.zeros(shape, dtype=grad.dtype)
                grad[live] = part
    if grad is None:
        grad = np.zeros(shape, dtype=spec.dtype)
    return _exact.to_int64(weight_from_canonical(grad, spec), "conv2d_grad_weight")


def _swapped_grad_weight(
    xs: np.ndarray,
    ks: np.ndarray,
    swapped: ConvSpec,
    method: str,
    exact: bool,
) -> np.ndarray:
    """The canonical weight gradient ``(kh, kw, C/groups, O)`` of the swapped problem."""
    # The swapped problem has a (Ho, Wo) kernel and a (kh, kw) output: im2col
    # gathers each output tap's window once and makes it one matrix product
    # with the whole output gradient. The cost model agrees, but its per-tap
    # estimates take time proportional to Ho * Wo, more than the product itself.
    preferred = method
    if exact:
        name = "exact"
    else:
        if method == "auto":  # im2col where it fits the workspace, else the model's
            fits = "im2col" in _select.candidates(swapped.lowered())
            preferred = "im2col" if fits else "auto"
        name = _select.resolve_method(preferred, swapped, (xs, ks))
    return run_conv(xs, ks, None, swapped, name).transpose(1, 2, 0, 3)


def _live_taps(spec: ConvSpec) -> tuple[tuple[slice, slice], ConvSpec | None]:
    """The kernel taps that read real input, per axis, and the spec of only those.

    Pads past :data:`~dilconv._spec.MAX_OPTION` ("same" or "full" at dilations near
    2**31, where few taps if any read the image) cannot be given to the swapped
    problem; there the taps that read only padding, which get no gradient, are cut
    off with the pads they spanned, so the rest has the same output size and small
    pads. The spec is ``None`` where no tap reads real input; elsewhere, or where
    cutting would not give a valid spec, the taps and the spec are all of ``spec``.
    """
    whole = (slice(0, spec.kernel_hw[0]), slice(0, spec.kernel_hw[1]))
    if spec.padding_mode != "zeros" or max(max(p) for p in spec.pad) <= MAX_OPTION:
        return whole, spec
    cuts, kernel, pads = [], [], []
    for axis in range(2):
        live = [i for i, (a, b) in enumerate(spec.tap_output_ranges(axis)) if a < b]
        if not live:
            return whole, None
        first, last = live[0], live[-1]
        d, k, (lo, hi) = spec.dilation[axis], spec.kernel_hw[axis], spec.pad[axis]
        cuts.append(slice(first, last + 1))
        kernel.append(last - first + 1)
        pads.append((lo - first * d, hi - (k - 1 - last) * d))
    if not all(0 <= p <= MAX_OPTION for pair in pads for p in pair):
        return whole, spec
    cut = dataclasses.replace(spec, kernel_hw=(kernel[0], kernel[1]), pad=(pads[0], pads[1]))
    if cut.out_hw != spec.out_hw:
        return whole, spec
    return (cuts[0], cuts[1]), cut


def conv2d_grad_bias(grad_out: Any, *, data_format: str = "NCHW") -> np.ndarray:
    """Gradient of ``conv2d(x, w, bias, ...)`` with respect to ``bias``.

    The sum of ``grad_out`` over every axis but the channels (a 2-D image has one
    channel, so the result has shape ``(1,)``).

    Examples
    --------
    >>> import numpy as np
    >>> conv2d_grad_bias(np.ones((2, 3, 4, 5)))
    array([40., 40., 40.])
    >>> conv2d_grad_bias(np.ones((4, 5, 3), dtype=np.int32), data_format="NHWC")
    array([20, 20, 20])
    """
    ga = as_array("grad_out", grad_out)
    data_format = as_choice("data_format", data_format, DATA_FORMATS)
    axes = {
        (2, "NCHW"): (0, 1),
        (2, "NHWC"): (0, 1),
        (3, "NCHW"): (1, 2),
        (3, "NHWC"): (0, 1),
        (4, "NCHW"): (0, 2, 3),
        (4, "NHWC"): (0, 1, 2),
    }.get((ga.ndim, data_format))
    if axes is None:
        raise ValueError(
            f"grad_out must be 2-D, 3-D or 4-D ({data_format}), got {ga.ndim}-D shape {ga.shape}"
        )
    accumulate, result = compute_dtypes(ga.dtype)
    if result.kind == "i" and _exact.largest(ga) * ga.size > _exact.INT64_MAX:
        exact = ga.astype(object).sum(axis=axes)
        total = _exact.to_int64(np.asarray(exact, dtype=object), "conv2d_grad_bias")
    else:
        total = ga.sum(axis=axes, dtype=accumulate).astype(result)
    return total.reshape(1) if ga.ndim == 2 else total

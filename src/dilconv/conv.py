"""The public forward operation and its shape helpers: arguments -> spec -> method -> result."""

from __future__ import annotations

from typing import Any

import numpy as np

from dilconv import _exact, _first_calls, _select, _shapes
from dilconv._layout import from_canonical, to_canonical, weight_to_canonical
from dilconv._methods import METHODS, _blocked_planar, _winograd_nchw, agree
from dilconv._padding import pad_spatial
from dilconv._spec import ConvSpec, as_array, as_choice, as_int, as_pair, make_spec
from dilconv._spec_nd import rank_of_format, same_padding_nd, sequence_rank


def _array_spec(
    x: Any, w: Any, bias: Any, **options: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, ConvSpec]:
    xa, wa = as_array("x", x), as_array("w", w)
    ba = None if bias is None else as_array("bias", bias)
    dtypes = [xa.dtype, wa.dtype] + ([] if ba is None else [ba.dtype])
    spec = make_spec(
        xa.shape, wa.shape, bias_shape=None if ba is None else ba.shape, dtypes=dtypes, **options
    )
    return xa, wa, ba, spec


#: The methods that read the caller's NCHW input and write NCHW, neither moved whole,
#: by the module whose ``conv_channels_first(x, w, lowered spec)`` does so (given
#: the batched input and HWIO weights).
IN_PLACE = {"blocked": _blocked_planar, "winograd": _winograd_nchw}
#: The methods that pack the weights themselves, reading an HWIO view as it is
#: (``weight_to_canonical(..., strided=True)``).
PACKED = frozenset({"blocked", "winograd"})
#: The methods that take NCHW weights as the caller's array itself, an HWIO view of
#: it (``weight_to_canonical(..., as_given=True)``): Winograd's weight transform moves
#: them a block of input channels at a time into its thread's cache.
AS_GIVEN = frozenset({"winograd"})


def _reads_channels_first(x: np.ndarray, spec: ConvSpec) -> bool:
    """Whether the :data:`IN_PLACE` methods read the caller's NCHW (or CHW) ``x`` as it
    is and write NCHW: zero padding, few enough channels
    (:func:`dilconv._select.reads_in_place`), the computing dtype, C-contiguous."""
    return _select.reads_in_place(spec) and x.dtype == spec.dtype and x.flags.c_contiguous


def run_conv(
    x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, spec: ConvSpec, method: str
) -> np.ndarray:
    """Run a resolved method on validated arrays; the shared path of every forward call.

    Integer calls whose sums could leave int64 run on Python integers instead
    (:mod:`dilconv._exact`) and give int64 or an OverflowError; ``method="exact"``
    (a caller's object-dtype spec) returns the Python integers for the caller to check.
    """
    keep_object = method == "exact"
    terms = spec.kernel_hw[0] * spec.kernel_hw[1] * spec.in_per_group
    if method == "exact" or _exact.overflows(spec, x, w, terms, bias):
        spec, method = _exact.exact_spec(spec), "exact"
    if method in IN_PLACE and _reads_channels_first(x, spec):
        batched, hwio, lowered = (
            x if spec.x_ndim == 4 else x[None],
            weight_to_canonical(w, spec, strided=method in PACKED, as_given=method in AS_GIVEN),
            spec.lowered(),
        )
        agree(batched, hwio, lowered, channels_first=True)
        y = IN_PLACE[method].conv_channels_first(batched, hwio, lowered)
        _first_calls.settle()
        if bias is not None:
            y += bias.astype(spec.dtype)[:, None, None]
        return np.ascontiguousarray(y if spec.x_ndim == 4 else y[0], dtype=spec.out_dtype)
    xc = to_canonical(x, spec)
    if spec.padding_mode != "zeros":
        xc = pad_spatial(xc, spec.pad, spec.padding_mode)
    run = _exact.conv if method == "exact" else METHODS[method].conv
    wc = weight_to_canonical(w, spec, strided=method in PACKED, as_given=method in AS_GIVEN)
    y = run(xc, wc, spec.lowered())
    _first_calls.settle()  # a stand-in's measured time counts towards loading the choice
    if bias is not None:
        y += bias.astype(spec.dtype)
    y = from_canonical(y, spec)
    return y if keep_object else _exact.to_int64(y, "conv2d")


def conv2d(
    x: Any,
    w: Any,
    bias: Any = None,
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
    """Dilated 2-D convolution (cross-correlation unless ``flip=True``).

    Parameters
    ----------
    x : array_like
        Input: ``(N, C, H, W)`` or ``(C, H, W)`` for ``data_format="NCHW"``;
        ``(N, H, W, C)`` or ``(H, W, C)`` for ``"NHWC"``; or a plain ``(H, W)``
        image with a ``(kh, kw)`` kernel.
    w : array_like
        Weights: PyTorch's ``(O, C/groups, kh, kw)`` for NCHW, TensorFlow's
        ``(kh, kw, C/groups, O)`` for NHWC, ``(kh, kw)`` for a 2-D image.
    bias : array_like, optional
        ``(O,)``, added to every output pixel.
    stride, dilation : int or (int, int)
        Step between output pixels, and between kernel taps; each >= 1.
        ``dilation=1`` is ordinary convolution.
    padding : int, (int, int), ((int, int), (int, int)) or str
        Explicit ``((top, bottom), (left, right))`` or symmetric pads, or
        ``"valid"`` (none), ``"same"`` (TensorFlow's SAME: output
        ``ceil(in / stride)``, the odd pixel at the bottom/right) or ``"full"``
        (every partial overlap).
    groups : int
        Channel groups; ``groups == C == O`` is depthwise.
    padding_mode : {"zeros", "reflect", "replicate", "circular", "symmetric"}
        How padded pixels are filled.
    data_format : {"NCHW", "NHWC"}
        Layout of ``x``, ``w`` and the result.
    flip : bool
        False: cross-correlation (PyTorch, TensorFlow). True: true convolution,
        the kernel reversed (``scipy.signal.convolve2d``).
    method : str
        ``"auto"`` (the cost model of :func:`choose_method`) or one of
        ``"direct"``, ``"dilated_kernel"``, ``"shift_add"``, ``"compiled"``,
        ``"blocked"``, ``"winograd"``, ``"tap_gemm"``, ``"im2col"``, ``"space_to_batch"``,
        ``"fft"``
        (:data:`dilconv.METHODS`);
        all give the same answer within rounding, each output's error
        depending only on the input values it reads, except ``"fft"``, whose
        rounding error, NaN and Inf spread over the whole output, and which
        ``"auto"`` never picks unless the FFT is allowed (see
        :func:`choose_method`). Where ``x``, ``w`` or ``bias`` hold NaN or Inf,
        ``"auto"`` keeps to the methods that put them exactly where
        ``"direct"`` does.

    Returns
    -------
    numpy.ndarray
        The result in the input's layout and rank. Its dtype is
        ``numpy.result_type`` of the inputs; float16 is accumulated in float32;
        integer input is exact, accumulated and returned as int64.

    Notes
    -----
    Along each axis, with input size ``i``, pads ``lo`` and ``hi``, ``k`` taps,
    dilation ``d`` and stride ``s``, the output size is
    ``floor((i + lo + hi - d * (k - 1) - 1) / s) + 1`` and output ``o`` reads
    padded input ``o * s + t * d`` for tap ``t``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(25).reshape(5, 5)
    >>> conv2d(x, np.ones((2, 2), dtype=int), dilation=2)
    array([[24, 28, 32],
           [44, 48, 52],
           [64, 68, 72]])
    >>> conv2d(np.ones((1, 3, 8, 8)), np.ones((4, 3, 3, 3)), padding="same", dilation=2).shape
    (1, 4, 8, 8)
    """
    xa, wa, ba, spec = _array_spec(
        x,
        w,
        bias,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        padding_mode=padding_mode,
        data_format=data_format,
        flip=flip,
    )
    arrays = (xa, wa) if ba is None else (xa, wa, ba)
    return _select.run_resolved(method, spec, arrays, lambda name: run_conv(xa, wa, ba, spec, name))


def choose_method(
    x: Any,
    w: Any,
    bias: Any = None,
    *,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    data_format: str = "NCHW",
    flip: bool = False,
    measure: bool = False,
    explain: bool = False,
) -> str | tuple[str, dict[str, float]] | tuple[str, dict[str, str]]:
    """The algorithm ``conv2d(method="auto")`` uses for these arguments.

    Algorithms that refuse the call (``"fft"`` on integers) or whose workspace
    exceeds :func:`get_workspace_limit` are left out; the oracle ``"direct"`` is
    never chosen, nor ``"fft"`` unless it is allowed (``set_config(allow_fft=True)``,
    off by default: its error at one output depends on every input value). With
    NaN or Inf in the arrays, ``"winograd"`` and ``"dilated_kernel"`` are left out
    (they would turn an Inf into NaN, or spread a NaN, where ``"direct"`` does not).
    The rest are ranked by a cost model (seconds estimated from the
    sizes, with rates fitted by ``benchmarks/fit_cost_model.py``).

    Parameters
    ----------
    x, w, bias, stride, padding, dilation, groups, padding_mode, data_format, flip
        As for :func:`conv2d`.
    measure : bool
        If True, time every candidate on these very arrays (best of 3, the
        candidates taking turns, with no pause between them) and return the
        fastest with the times, as
        :func:`scipy.signal.choose_conv_method` does.
    explain : bool
        If True, return the name with ``{name: text}``: each algorithm's estimated
        time or why it is left out, and how it runs here where that matters (for
        example ``compiled`` compiled in memory in every process, where Numba
        cannot cache on disk). Not together with ``measure``.

    Returns
    -------
    str or (str, dict)
        The method name; with ``measure=True``, the name and ``{name: seconds}``;
        with ``explain=True``, the name and ``{name: text}``.

    Examples
    --------
    >>> import numpy as np
    >>> choose_method(np.ones((512, 512), np.float32), np.ones((3, 3), np.float32), dilation=4)
    'compiled'
    >>> name, why = choose_method(np.ones((8, 8)), np.ones((3, 3)), explain=True)
    >>> why["direct"]
    'the loop oracle, never chosen'
    """
    options = {
        "stride": stride,
        "padding": padding,
        "dilation": dilation,
        "groups": groups,
        "padding_mode": padding_mode,
        "data_format": data_format,
        "flip": flip,
    }
    xa, wa, ba, spec = _array_spec(x, w, bias, **options)
    if not isinstance(measure, (bool, np.bool_)):
        raise TypeError(f"measure must be a bool, got {measure!r}")
    if not isinstance(explain, (bool, np.bool_)):
        raise TypeError(f"explain must be a bool, got {explain!r}")
    if measure and explain:
        raise ValueError("measure and explain cannot both be True; ask for one at a time")
    arrays = (xa, wa) if ba is None else (xa, wa, ba)
    best = _select.resolve_method("auto", spec, arrays, first_call=False)
    if explain:
        return best, _select.explain(spec.lowered())
    if not measure:
        return best
    finite = _select.all_finite(arrays)
    times = _select.measure(
        lambda name: run_conv(xa, wa, ba, spec, name),
        _select.candidates(spec.lowered(), finite=finite),
    )
    return min(times, key=times.__getitem__), times


def output_shape(
    x_shape: Any,
    w_shape: Any,
    *,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    data_format: str = "NCHW",
) -> tuple[int, ...]:
    """The shape :func:`conv2d` returns for inputs of these shapes.

    Raises the same ValueError or TypeError that :func:`conv2d` would. A 1-D or
    3-D ``data_format`` (``"NCW"``, ``"NWC"``, ``"NCDHW"``, ``"NDHWC"``) gives the
    shape :func:`conv1d` or :func:`conv3d` returns (``padding="causal"`` in 1-D).

    Examples
    --------
    >>> output_shape((1, 3, 32, 32), (8, 3, 3, 3), dilation=4)
    (1, 8, 24, 24)
    >>> output_shape((32, 32, 3), (3, 3, 3, 8), stride=2, padding="same", data_format="NHWC")
    (16, 16, 8)
    >>> output_shape((1, 64, 1000), (64, 64, 2), dilation=16, stride=3, padding="causal",
    ...              data_format="NCW")
    (1, 64, 334)
    >>> output_shape((1, 32, 64, 64, 64), (32, 32, 3, 3, 3), dilation=2, data_format="NCDHW")
    (1, 32, 60, 60, 60)
    """
    shapes = []
    for name, shape in (("x_shape", x_shape), ("w_shape", w_shape)):
        if not isinstance(shape, (tuple, list)):
            raise TypeError(f"{name} must be a tuple of ints, got {shape!r}")
        shapes.append(tuple(as_int(f"{name}[{i}]", v, minimum=0) for i, v in enumerate(shape)))
    rank = rank_of_format(data_format)
    if rank in (1, 3):
        from dilconv.convnd import output_shape_nd

        return output_shape_nd(
            rank,
            shapes[0],
            shapes[1],
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            data_format=data_format,
        )
    spec = make_spec(
        shapes[0],
        shapes[1],
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        data_format=data_format,
    )
    return spec.out_shape


def same_padding(
    in_hw: Any, kernel_hw: Any, *, stride: Any = 1, dilation: Any = 1
) -> tuple[tuple[int, int], ...]:
    """The ``((top, bottom), (left, right))`` pads that ``padding="same"`` uses.

    TensorFlow's rule: the output has ``ceil(in / stride)`` pixels and the odd
    pixel of padding goes to the bottom/right. Sizes given per axis for one or
    three axes give one ``(before, after)`` pair per axis (for ``conv1d`` and
    ``conv3d``).

    Examples
    --------
    >>> same_padding(10, 3, dilation=4)
    ((4, 4), (4, 4))
    >>> same_padding((11, 9), (2, 3), stride=2)
    ((0, 1), (1, 1))
    >>> same_padding((100,), 2, dilation=5)
    ((2, 3),)
    >>> same_padding((8, 16, 16), 3, stride=(1, 2, 2))
    ((1, 1), (0, 1), (0, 1))
    """
    rank = sequence_rank(in_hw, kernel_hw, stride, dilation)
    if rank in (1, 3):
        return same_padding_nd(rank, in_hw, kernel_hw, stride, dilation)
    (h, w), (kh, kw) = (
        as_pair("in_hw", in_hw, minimum=1),
        as_pair("kernel_hw", kernel_hw, minimum=1),
    )
    (sh, sw), (dh, dw) = (
        as_pair("stride", stride, minimum=1),
        as_pair("dilation", dilation, minimum=1),
    )
    return _shapes.same_pads(h, kh, sh, dh), _shapes.same_pads(w, kw, sw, dw)


def atrous_conv2d(value: Any, filters: Any, rate: int, padding: str) -> np.ndarray:
    """A drop-in for ``tf.nn.atrous_conv2d``: NHWC input, HWIO filters, cross-correlation.

    Parameters
    ----------
    value : array_like
        ``(N, H, W, C)``.
    filters : array_like
        ``(kh, kw, C, O)``.
    rate : int
        The dilation, >= 1.
    padding : {"SAME", "VALID"}
        TensorFlow's padding keyword.

    Examples
    --------
    >>> import numpy as np
    >>> float(atrous_conv2d(np.ones((1, 9, 9, 2)), np.ones((3, 3, 2, 1)), 2, "SAME")[0, 4, 4, 0])
    18.0
    """
    rate = as_int("rate", rate, minimum=1)
    if not isinstance(padding, str) or padding.upper() not in ("SAME", "VALID"):
        raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
    value_arr = as_array("value", value)
    if value_arr.ndim != 4:
        raise ValueError(f"value must be 4-D (N, H, W, C), got shape {value_arr.shape}")
    return conv2d(
        value_arr,
        filters,
        dilation=rate,
        padding=as_choice("padding", padding.lower(), ("same", "valid")),
        data_format="NHWC",
    )

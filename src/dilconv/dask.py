"""Dilated convolution of Dask arrays larger than memory, equal to the in-memory calls.

Each output chunk is one in-memory call (:func:`dilconv.conv1d`, :func:`dilconv.conv2d`
or :func:`dilconv.conv3d`) on one input chunk
and the halo the dilated kernel needs, so a worker holds a few chunks at a time
and the answer is the in-memory one (the same algorithm on the same numbers).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable
from typing import Any

import dask.array as da
import numpy as np

from dilconv import _dask_zarr, _shapes
from dilconv._dask_halo import pad_axis
from dilconv._dask_zarr import conv1d_zarr, conv2d_zarr, conv3d_zarr, zarr_source
from dilconv._select import resolve_method
from dilconv._spec import ConvSpec, as_array, make_spec, output_limit_bytes, size_text
from dilconv.conv import conv2d as _conv2d

__all__ = [
    "conv1d",
    "conv1d_zarr",
    "conv2d",
    "conv2d_zarr",
    "conv3d",
    "conv3d_zarr",
    "spatial_axes",
]


def spatial_axes(spec: ConvSpec) -> tuple[int, int, int | None]:
    """``(h_axis, w_axis, channel_axis)`` of the caller's array (channel ``None`` in 2-D).

    Examples
    --------
    >>> from dilconv._spec import make_spec
    >>> spatial_axes(make_spec((2, 3, 8, 8), (4, 3, 3, 3)))
    (2, 3, 1)
    >>> spatial_axes(make_spec((8, 8, 3), (3, 3, 3, 4), data_format="NHWC"))
    (0, 1, 2)
    """
    if spec.x_ndim == 2:
        return 0, 1, None
    lead = spec.x_ndim - 3  # 1 with a batch axis, 0 without
    if spec.data_format == "NCHW":
        return lead + 1, lead + 2, lead
    return lead, lead + 1, lead + 2


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What the lazy builders need of a validated call of any rank, per spatial axis."""

    axes: tuple[int, ...]
    c_axis: int | None
    batched: bool
    in_size: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pad: tuple[tuple[int, int], ...]
    out_size: tuple[int, ...]
    in_channels: int
    out_channels: int
    padding_mode: str
    dtype: np.dtype
    out_dtype: np.dtype
    conv: Callable[..., Any]  # the in-memory call of this rank
    check: Callable[[tuple[int, ...], Any], None]  # refuses a window the method cannot take


def _block_conv(
    block: np.ndarray,
    w: np.ndarray,
    bias: Any,
    options: dict[str, Any],
    plan: _Plan,
    block_info: dict[Any, Any] | None = None,
) -> Any:
    """One output chunk: the in-memory call, unpadded, on a chunk and its halo.

    The block starts at the first padded row its outputs read; rows past the
    last one they read (a halo of zero on that side) are cut off first.
    """
    if block_info is None:
        raise TypeError("_block_conv runs under dask's map_overlap, which passes block_info")
    out_shape = block_info[None]["chunk-shape"]
    where: list[slice] = [slice(None)] * block.ndim
    for i, axis in enumerate(plan.axes):
        k, s, d = plan.kernel[i], plan.stride[i], plan.dilation[i]
        where[axis] = slice(0, _shapes.input_span(out_shape[axis], k, s, d))
    return plan.conv(block[tuple(where)], w, bias, padding=0, padding_mode="zeros", **options)


def _window_conv(
    block: np.ndarray,
    w: np.ndarray,
    bias: Any,
    pads: tuple[Any, ...],
    options: dict[str, Any],
    conv: Callable[..., Any],
) -> Any:
    """One output chunk of a zero-padded call: the real input it reads, and the
    zero padding around it given as pads, never built."""
    return conv(block, w, bias, padding=pads, **options)


def _window(out0: int, out1: int, n: int, lo: int, k: int, s: int, d: int) -> tuple[int, ...]:
    """Input rows ``[a, b)`` that outputs ``[out0, out1)`` read, and the zeros
    ``(before, after)`` around them: padded rows ``out0 * s`` to ``(out1 - 1) * s + k_eff``.
    ``a == b``: these outputs read padding only."""
    first = out0 * s - lo
    stop = first + _shapes.input_span(out1 - out0, k, s, d)
    a, b = min(max(first, 0), n), max(min(stop, n), 0)
    if a >= b:
        return 0, 0, 0, 0
    return a, b, a - first, stop - b


def _join(grid: np.ndarray, axes: tuple[int, ...]) -> da.Array:
    """Concatenate a grid of blocks (one grid axis per spatial axis) into one array."""
    if grid.ndim == 1:
        return da.concatenate(list(grid), axis=axes[0])
    return da.concatenate([_join(grid[i], axes[1:]) for i in range(grid.shape[0])], axis=axes[0])


def _zero_padded(
    xd: da.Array, wa: np.ndarray, ba: Any, plan: _Plan, options: dict[str, Any]
) -> da.Array:
    """The zero-padded call as a grid of output chunks, each from its real input only.

    Output chunks have ``ceil(c / stride)`` outputs for input chunks of ``c``; each is
    one in-memory call of the input it reads (at most its halo,
    ``(b - 1) * s + k_eff``, and never more than the input) with the zero padding
    passed as pads, so no padding is ever materialised.
    """
    axes, c_axis = plan.axes, plan.c_axis
    if c_axis is not None:
        xd = xd.rechunk({c_axis: -1})
    plans = []
    for i, axis in enumerate(axes):
        out = plan.out_size[i]
        block = max(1, min(out, -(-xd.chunks[axis][0] // plan.stride[i])))
        edges = [*range(0, out, block), out]
        k, s, d, lo = plan.kernel[i], plan.stride[i], plan.dilation[i], plan.pad[i][0]
        plans.append(
            [
                (o1 - o0, _window(o0, o1, plan.in_size[i], lo, k, s, d))
                for o0, o1 in zip(edges[:-1], edges[1:], strict=True)
            ]
        )
    item = np.dtype(plan.dtype).itemsize
    lead = math.prod(max(c) for a, c in enumerate(xd.chunks) if a not in axes)
    spans = [max(b - a for _, (a, b, _, _) in p) for p in plans]
    need = lead * math.prod(spans) * item
    if need > output_limit_bytes():
        raise ValueError(
            f"each output chunk would read a {'x'.join(map(str, spans))} window of the input "
            f"({size_text(need)} with its other axes), more than the output limit of "
            f"{size_text(output_limit_bytes())} (dilconv._spec.OUTPUT_LIMIT_BYTES); "
            "use smaller input chunks"
        )
    checked = False
    grid = np.empty(tuple(len(p) for p in plans), dtype=object)
    for index in itertools.product(*(range(len(p)) for p in plans)):
        cells = [plans[i][j] for i, j in enumerate(index)]
        where: list[Any] = [slice(None)] * xd.ndim
        shape = list(xd.shape)
        for axis, (b, (a0, a1, _, _)) in zip(axes, cells, strict=True):
            where[axis], shape[axis] = slice(a0, a1), b
        if c_axis is not None:
            shape[c_axis] = plan.out_channels
        if any(a0 == a1 for _, (a0, a1, _, _) in cells):  # reads padding only: the bias
            grid[index] = _bias_only(tuple(shape), ba, plan, xd.chunks[0])
            continue
        piece = xd[tuple(where)].rechunk(dict.fromkeys(axes, -1))
        pads = tuple((t, bt) for _, (_, _, t, bt) in cells)
        if not checked:  # the method must accept a chunk (the in-memory error if not)
            plan.check(piece.shape, pads)
            checked = True
        chunks = list(piece.chunks)
        for axis, (b, _) in zip(axes, cells, strict=True):
            chunks[axis] = (b,)
        if c_axis is not None:
            chunks[c_axis] = (plan.out_channels,)
        grid[index] = piece.map_blocks(
            _window_conv,
            w=wa,
            bias=ba,
            pads=pads,
            options=options,
            conv=plan.conv,
            chunks=tuple(chunks),
            dtype=plan.out_dtype,
            meta=np.empty((0,) * xd.ndim, dtype=plan.out_dtype),
        )
    return _join(grid, axes)


def _bias_only(shape: tuple[int, ...], bias: Any, plan: _Plan, lead: Any) -> da.Array:
    """An output chunk whose every tap reads zero padding: zeros plus the bias."""
    chunks = tuple((n,) for n in shape)
    if plan.batched:
        chunks = (lead, *chunks[1:])
    zeros = da.zeros(shape, dtype=plan.out_dtype, chunks=chunks)
    if bias is None:
        return zeros
    where = [1] * len(shape)
    if plan.c_axis is not None:
        where[plan.c_axis] = -1
    return zeros + np.reshape(bias.astype(plan.out_dtype), where)


def _overlapped(
    xd: da.Array, wa: np.ndarray, ba: Any, plan: _Plan, options: dict[str, Any]
) -> da.Array:
    """Any other padding mode: the border built lazily, then ``map_overlap`` (see conv2d)."""
    c_axis = plan.c_axis
    in_chunks: dict[int, Any] = {} if c_axis is None else {c_axis: -1}
    out_chunks = list(xd.chunks)
    if c_axis is not None:
        out_chunks[c_axis] = (plan.out_channels,)
    depth: dict[int, int | tuple[int, int]] = dict.fromkeys(range(xd.ndim), 0)
    first_block = list(xd.shape)
    for i, axis in enumerate(plan.axes):
        k, s, d = plan.kernel[i], plan.stride[i], plan.dilation[i]
        out, (lo, hi) = plan.out_size[i], plan.pad[i]
        out_chunks[axis], in_chunks[axis], depth[axis] = _shapes.choose_block_plan(
            xd.chunks[axis][0], out, lo, k, s, d
        )
        first_block[axis] = _shapes.input_span(out_chunks[axis][0], k, s, d)
        xd = pad_axis(xd, axis, lo, hi, plan.padding_mode, _shapes.input_span(out, k, s, d))
    if c_axis is not None:
        first_block[c_axis] = plan.in_channels
    # The method must accept a chunk (the same error as the in-memory call's if not).
    plan.check(tuple(first_block), 0)
    xd = xd.rechunk(in_chunks)
    return da.map_overlap(
        functools.partial(_block_conv, w=wa, bias=ba, options=options, plan=plan),
        xd,
        depth=depth,
        boundary="none",
        trim=False,
        allow_rechunk=False,
        chunks=tuple(out_chunks),
        dtype=plan.out_dtype,
        meta=np.empty((0,) * xd.ndim, dtype=plan.out_dtype),
    )


def _small(name: str, value: Any) -> np.ndarray:
    """Weights or bias as a NumPy array (a Dask one is small: computed here)."""
    if isinstance(value, da.Array):
        value = value.compute()
    return as_array(name, value)


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
) -> da.Array:
    """Lazy dilated 2-D convolution of a Dask array: :func:`dilconv.conv2d`, chunk by chunk.

    Parameters
    ----------
    x : dask.array.Array or array_like
        ``(H, W)``, ``(C, H, W)``, ``(N, C, H, W)`` (NCHW) or ``(H, W, C)``,
        ``(N, H, W, C)`` (NHWC). Any chunking; the channel axis is rechunked to
        one chunk, the batch axis keeps its chunks.
    w, bias : array_like
        As for :func:`dilconv.conv2d` (small: a Dask array is computed first).
    stride, padding, dilation, groups, padding_mode, data_format, flip, method
        As for :func:`dilconv.conv2d`, validated by the same code, so a bad
        argument raises the same error; ``method`` runs on every chunk.

    Returns
    -------
    dask.array.Array
        The result in the input's layout, rank and dtype rule. Along each spatial
        axis its chunks are regular: ``ceil(c / stride)`` outputs, for input chunks
        of ``c`` rows, raised where the halo needs it (see Notes); channels in one
        chunk.

    Notes
    -----
    With ``padding_mode="zeros"`` no padding is ever built: output chunks of
    ``ceil(c / stride)`` outputs (for input chunks of ``c``) are each one
    :func:`dilconv.conv2d` of the input rows and columns they read, at most their
    halo ``(b - 1) * s + k_eff`` and never more than the input, with the zeros
    around them passed as explicit pads (a chunk that reads padding only is the
    bias). A window larger than the output limit
    (:func:`dilconv._spec.output_limit_bytes`) is refused when the graph is built.
    The other padding modes are built on ``dask.array.map_overlap`` with
    asymmetric halos and ``boundary="none"``. Per spatial axis, with input size
    ``i``, pads ``lo`` and ``hi``, ``k`` taps, dilation ``d``, stride ``s`` and
    ``k_eff = d * (k - 1) + 1``:

    1. The outer border is added lazily in ``padding_mode`` with the index map
       that :func:`dilconv.conv2d` pads with (so every mode fills it as the
       in-memory call does), and the rows no output reads are dropped: the axis
       keeps ``(o - 1) * s + k_eff`` rows for ``o`` outputs.
    2. Output block ``j`` (``b`` outputs) reads padded rows from ``j * b * s``.
       When the stride divides the input's chunks ``c``, ``b = c / s`` and the
       padded axis is cut at ``lo + j * c``: the input's own chunk boundaries,
       so only the first and last chunks change (they take in the border).
       Each chunk then gets the halo ``(lo, k_eff - s - lo)``: asymmetric where
       the padding is, none after when that is negative (the unread rows are cut
       off). Otherwise (a stride that does not divide the chunks, or chunks
       smaller than that halo) the axis is rechunked at ``j * b * s`` with
       ``b >= ceil((k_eff - s) / s)`` and the halo is ``(0, k_eff - s)``: the
       chunks are realigned to the stride, never refused, and a halo longer
       than the input's chunks or than the whole axis still comes from one
       neighbouring chunk.
    3. Each output chunk is :func:`dilconv.conv2d`, unpadded, of its chunk and
       halo; output chunks are regular, ``b`` along each axis, the last smaller.

    An array exactly as ``dask.array.from_zarr`` returned it is convolved by
    :func:`conv2d_zarr` instead, each output chunk reading its own window from
    the store (chunks of ``ceil(c / s)`` outputs, never raised); see
    :func:`dilconv._dask_zarr.zarr_source` for what is recognised.

    Output ``o`` reads padded row ``o * s + t * d`` for tap ``t``, as in
    :func:`dilconv.conv2d`. With ``method="auto"`` each chunk picks its own
    algorithm for its size, so floating-point results may differ from the
    in-memory call within rounding (integer input is exact); a named
    ``method`` runs the same algorithm as the in-memory call.

    Examples
    --------
    >>> import numpy as np, dask.array as da, dilconv
    >>> x = np.arange(100).reshape(10, 10)
    >>> w = np.ones((2, 2), dtype=int)
    >>> options = dict(dilation=3, padding="same", stride=2)
    >>> y = conv2d(da.from_array(x, chunks=3), w, **options)
    >>> y.chunks
    ((2, 2, 1), (2, 2, 1))
    >>> bool(np.array_equal(y.compute(), dilconv.conv2d(x, w, **options)))
    True
    """
    source = zarr_source(x)
    if source is not None:
        kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        kwargs.update(padding_mode=padding_mode, data_format=data_format, flip=flip)
        return _dask_zarr.as_dask(
            _dask_zarr.plan_zarr(source, w, bias, {**kwargs, "method": method}, in_chunks=x.chunks)
        )
    xd = x if isinstance(x, da.Array) else da.asarray(as_array("x", x))
    as_array("x", np.empty(0, dtype=xd.dtype))  # the dtype checks of conv2d
    wa, ba = _small("w", w), None if bias is None else _small("bias", bias)
    dtypes = [xd.dtype, wa.dtype] + ([] if ba is None else [ba.dtype])
    options = {"stride": stride, "dilation": dilation, "groups": groups}
    options.update(data_format=data_format, flip=flip)
    spec = make_spec(
        xd.shape,
        wa.shape,
        bias_shape=None if ba is None else ba.shape,
        dtypes=dtypes,
        padding=padding,
        padding_mode=padding_mode,
        memory_check=False,
        **options,
    )
    h_axis, w_axis, c_axis = spatial_axes(spec)

    def check(shape: tuple[int, ...], pads: Any) -> None:
        window = make_spec(
            shape, wa.shape, dtypes=dtypes, padding=pads, memory_check=False, **options
        )
        resolve_method(method, window, first_call=False)

    plan = _Plan(
        axes=(h_axis, w_axis),
        c_axis=c_axis,
        batched=spec.x_ndim == 4,
        in_size=spec.in_hw,
        kernel=spec.kernel_hw,
        stride=spec.stride,
        dilation=spec.dilation,
        pad=spec.pad,
        out_size=spec.out_hw,
        in_channels=spec.in_channels,
        out_channels=spec.out_channels,
        padding_mode=spec.padding_mode,
        dtype=spec.dtype,
        out_dtype=spec.out_dtype,
        conv=_conv2d,
        check=check,
    )
    build = _zero_padded if spec.padding_mode == "zeros" else _overlapped
    return build(xd, wa, ba, plan, {**options, "method": method})


def _conv_nd(rank: int, x: Any, w: Any, bias: Any, options: dict[str, Any]) -> da.Array:
    """:func:`conv2d`'s two routes for a 1-D or 3-D call, validated as the in-memory one."""
    from dilconv import convnd
    from dilconv._engine_nd import check_method
    from dilconv._spec_nd import make_spec_nd

    method = options.pop("method")
    source = zarr_source(x)
    if source is not None:
        return _dask_zarr.conv_nd_zarr(
            rank, source, w, bias, in_chunks=x.chunks, method=method, **options
        )
    xd = x if isinstance(x, da.Array) else da.asarray(as_array("x", x))
    as_array("x", np.empty(0, dtype=xd.dtype))  # the dtype checks of the in-memory call
    wa, ba = _small("w", w), None if bias is None else _small("bias", bias)
    dtypes = [xd.dtype, wa.dtype] + ([] if ba is None else [ba.dtype])
    spec = make_spec_nd(
        rank,
        xd.shape,
        wa.shape,
        bias_shape=None if ba is None else ba.shape,
        dtypes=dtypes,
        memory_check=False,
        **options,
    )
    check_method(method)
    kept = {k: v for k, v in options.items() if k not in ("padding", "padding_mode")}
    kept["data_format"] = spec.data_format

    def check(shape: tuple[int, ...], pads: Any) -> None:
        make_spec_nd(rank, shape, wa.shape, dtypes=dtypes, padding=pads, memory_check=False, **kept)

    axes, c_axis = _dask_zarr.spatial_axes_nd(rank, spec.x_ndim, spec.channels_first)
    plan = _Plan(
        axes=tuple(axes),
        c_axis=c_axis,
        batched=spec.x_ndim == rank + 2,
        in_size=spec.in_size,
        kernel=spec.kernel,
        stride=spec.stride,
        dilation=spec.dilation,
        pad=spec.pad,
        out_size=spec.out_size,
        in_channels=spec.in_channels,
        out_channels=spec.out_channels,
        padding_mode=spec.padding_mode,
        dtype=spec.dtype,
        out_dtype=spec.out_dtype,
        conv=convnd.conv1d if rank == 1 else convnd.conv3d,
        check=check,
    )
    build = _zero_padded if spec.padding_mode == "zeros" else _overlapped
    return build(xd, wa, ba, plan, {**kept, "method": method})


def conv1d(
    x: Any,
    w: Any,
    bias: Any = None,
    *,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    data_format: str = "NCW",
    flip: bool = False,
    method: str = "auto",
) -> da.Array:
    """Lazy dilated 1-D convolution of a Dask array: :func:`dilconv.conv1d`, chunk by chunk.

    ``x`` is ``(L,)``, ``(C, L)``, ``(N, C, L)`` (NCW) or ``(L, C)``, ``(N, L, C)``
    (NWC); the options, ``padding="causal"`` included, are :func:`dilconv.conv1d`'s,
    validated by the same code. The routes, chunking, memory limit and the hand-off
    of an array from ``dask.array.from_zarr`` to :func:`conv1d_zarr` are
    :func:`conv2d`'s, along the one spatial axis.

    Examples
    --------
    >>> import numpy as np, dask.array as da, dilconv
    >>> x = np.arange(20)
    >>> w, options = np.array([1, 2]), dict(dilation=4, padding="causal")
    >>> y = conv1d(da.from_array(x, chunks=3), w, **options)
    >>> y.chunks
    ((3, 3, 3, 3, 3, 3, 2),)
    >>> bool(np.array_equal(y.compute(), dilconv.conv1d(x, w, **options)))
    True
    """
    options = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    options.update(padding_mode=padding_mode, data_format=data_format, flip=flip, method=method)
    return _conv_nd(1, x, w, bias, options)


def conv3d(
    x: Any,
    w: Any,
    bias: Any = None,
    *,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    data_format: str = "NCDHW",
    flip: bool = False,
    method: str = "auto",
) -> da.Array:
    """Lazy dilated 3-D convolution of a Dask array: :func:`dilconv.conv3d`, chunk by chunk.

    ``x`` is ``(D, H, W)``, ``(C, D, H, W)``, ``(N, C, D, H, W)`` (NCDHW) or
    ``(D, H, W, C)``, ``(N, D, H, W, C)`` (NDHWC); the options are
    :func:`dilconv.conv3d`'s, validated by the same code. The routes, chunking,
    memory limit and the hand-off of an array from ``dask.array.from_zarr`` to
    :func:`conv3d_zarr` are :func:`conv2d`'s, along each of the three spatial axes.

    Examples
    --------
    >>> import numpy as np, dask.array as da, dilconv
    >>> x = np.arange(6 * 7 * 8).reshape(6, 7, 8) % 5
    >>> w = np.ones((2, 2, 2), dtype=int)
    >>> options = dict(dilation=2, padding="same", padding_mode="reflect")
    >>> y = conv3d(da.from_array(x, chunks=4), w, **options)
    >>> bool(np.array_equal(y.compute(), dilconv.conv3d(x, w, **options)))
    True
    """
    options = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    options.update(padding_mode=padding_mode, data_format=data_format, flip=flip, method=method)
    return _conv_nd(3, x, w, bias, options)

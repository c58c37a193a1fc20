"""Dilated convolution of Dask arrays larger than memory, equal to :func:`dilconv.conv2d`.

Each output chunk is one in-memory :func:`dilconv.conv2d` call on one input chunk
and the halo the dilated kernel needs, so a worker holds a few chunks at a time
and the answer is the in-memory one (the same algorithm on the same numbers).
"""

from __future__ import annotations

import functools
from typing import Any

import dask.array as da
import numpy as np

from dilconv import _shapes
from dilconv._dask_halo import pad_axis
from dilconv._select import resolve_method
from dilconv._spec import ConvSpec, as_array, make_spec
from dilconv.conv import conv2d as _conv2d

__all__ = ["conv2d", "spatial_axes"]


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


def _block_conv(
    block: np.ndarray,
    w: np.ndarray,
    bias: Any,
    options: dict[str, Any],
    axes: tuple[int, int],
    taps: tuple[tuple[int, int, int], ...],
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
    for axis, (k, s, d) in zip(axes, taps, strict=True):
        where[axis] = slice(0, _shapes.input_span(out_shape[axis], k, s, d))
    return _conv2d(block[tuple(where)], w, bias, padding=0, padding_mode="zeros", **options)


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
    Built on ``dask.array.map_overlap`` with asymmetric halos and
    ``boundary="none"``. Per spatial axis, with input size ``i``, pads ``lo`` and
    ``hi``, ``k`` taps, dilation ``d``, stride ``s`` and ``k_eff = d * (k - 1) + 1``:

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
    in_chunks: dict[int, Any] = {} if c_axis is None else {c_axis: -1}
    out_chunks = list(xd.chunks)
    if c_axis is not None:
        out_chunks[c_axis] = (spec.out_channels,)
    depth: dict[int, int | tuple[int, int]] = dict.fromkeys(range(xd.ndim), 0)
    first_block = list(xd.shape)
    for i, axis in enumerate((h_axis, w_axis)):
        k, s, d = spec.kernel_hw[i], spec.stride[i], spec.dilation[i]
        out, (lo, hi) = spec.out_hw[i], spec.pad[i]
        out_chunks[axis], in_chunks[axis], depth[axis] = _shapes.choose_block_plan(
            xd.chunks[axis][0], out, lo, k, s, d
        )
        first_block[axis] = _shapes.input_span(out_chunks[axis][0], k, s, d)
        xd = pad_axis(xd, axis, lo, hi, spec.padding_mode, _shapes.input_span(out, k, s, d))
    if c_axis is not None:
        first_block[c_axis] = spec.in_channels
    # The method must accept a chunk (the same error as conv2d's if it cannot).
    block_spec = make_spec(tuple(first_block), wa.shape, dtypes=dtypes, **options)
    resolve_method(method, block_spec)
    xd = xd.rechunk(in_chunks)
    options["method"] = method
    return da.map_overlap(
        functools.partial(
            _block_conv,
            w=wa,
            bias=ba,
            options=options,
            axes=(h_axis, w_axis),
            taps=tuple(zip(spec.kernel_hw, spec.stride, spec.dilation, strict=True)),
        ),
        xd,
        depth=depth,
        boundary="none",
        trim=False,
        allow_rechunk=False,
        chunks=tuple(out_chunks),
        dtype=spec.out_dtype,
        meta=np.empty((0,) * xd.ndim, dtype=spec.out_dtype),
    )

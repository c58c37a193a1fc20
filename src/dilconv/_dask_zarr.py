"""Convolution of a Zarr array where each output chunk's task reads its own input window.

:func:`dilconv.dask.conv2d` cuts the input into chunks and lets Dask's
``map_overlap`` copy every halo from the neighbouring chunks' tasks: about a dozen
tasks per output chunk, and halos travelling between workers. When the input is a
Zarr array there is a shorter way. Output chunk ``j`` along a spatial axis, of ``b``
outputs at stride ``s``, reads the padded rows from ``j * b * s`` on,
:func:`dilconv._shapes.input_span` of them; padded row ``p`` is source row
``source_index(...)[p]`` (the map ``conv2d`` pads with, ``-1`` a zero). So one task
per output chunk reads exactly those rows from the store, padding and all, and runs
the in-memory convolution on them unpadded. Nothing travels between tasks, and a
halo of any length (a large dilation) is one more read.

The plan is rank-generic: any number of spatial axes, each an :class:`AxisPlan`,
and a batch axis keeping the store's chunks; the channel axis is read whole.
"""

from __future__ import annotations

import functools
import itertools
import os
import uuid
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

from dilconv import _shapes
from dilconv._padding import source_index
from dilconv._select import resolve_method
from dilconv._spec import as_array, make_spec
from dilconv._zarr_edges import EdgeReader
from dilconv.conv import conv2d as _conv2d

__all__ = ["AxisPlan", "ZarrConv", "compute_chunk", "conv2d_zarr", "read_window", "zarr_source"]


@dataclass(frozen=True)
class AxisPlan:
    """One spatial axis: input size, pads, taps, and ``block`` outputs per output chunk.

    Examples
    --------
    >>> a = AxisPlan(axis=0, size=10, pad=(2, 2), kernel=3, stride=1, dilation=2, out=10, block=4)
    >>> a.chunks
    (4, 4, 2)
    >>> a.window(0).tolist()  # two zero rows of padding, then the first six rows
    [-1, -1, 0, 1, 2, 3, 4, 5]
    >>> a.window(2).tolist()
    [6, 7, 8, 9, -1, -1]
    """

    axis: int
    size: int
    pad: tuple[int, int]
    kernel: int
    stride: int
    dilation: int
    out: int
    block: int
    mode: str = "zeros"

    @property
    def chunks(self) -> tuple[int, ...]:
        """Output chunks: ``block`` each, the last one shorter."""
        full, rest = divmod(self.out, self.block)
        return (self.block,) * full + ((rest,) if rest else ())

    def window(self, j: int) -> np.ndarray:
        """Source row of each padded row that output chunk ``j`` reads (``-1``: a zero)."""
        count = min(self.block, self.out - j * self.block)
        start = j * self.block * self.stride
        stop = start + _shapes.input_span(count, self.kernel, self.stride, self.dilation)
        lo, hi = self.pad
        if lo <= start and stop <= lo + self.size:  # inside the image: no padding
            return np.arange(start - lo, stop - lo, dtype=np.intp)
        return source_index(self.size, lo, hi, self.mode)[start:stop]


def _pieces(runs: list[tuple[int, int]], chunk: int) -> list[tuple[int, int, int]]:
    """``(start, stop, offset)``: the runs, one after another, cut where a store chunk ends."""
    pieces, offset = [], 0
    for start, stop in runs:
        while start < stop:
            end = min(stop, (start // chunk + 1) * chunk)
            pieces.append((start, end, offset))
            offset, start = offset + end - start, end
    return pieces


def _framed_run(item: np.ndarray) -> tuple[int, int, int] | None:
    """``(zero rows before, first row, rows)`` where ``item`` is a run of consecutive
    rows with only zero rows (``-1``) before and after it; else None.

    Examples
    --------
    >>> _framed_run(np.array([-1, -1, 4, 5, 6, -1]))
    (2, 4, 3)
    >>> _framed_run(np.array([3, 4])), _framed_run(np.array([1, 0, 1]))
    ((0, 3, 2), None)
    """
    inside = np.flatnonzero(item >= 0)
    if not len(inside):
        return None
    lead, count = int(inside[0]), len(inside)
    first = int(item[lead])
    if inside[-1] - lead + 1 != count or not np.array_equal(
        item[lead : lead + count], np.arange(first, first + count)
    ):
        return None
    return lead, first, count


def read_window(
    source: Any,
    where: Sequence[slice | np.ndarray],
    read: Callable[[Any, tuple[slice, ...]], np.ndarray] | None = None,
) -> np.ndarray:
    """``source`` read at ``where``: a slice, or an index array (``-1``: a zero) per axis.

    An index array that is a run of consecutive rows is read as a slice. Otherwise
    the distinct rows it names are read, run by run (a reflected or wrapped border
    reads a few rows twice at most, never the rows between), into one compact array
    that is then gathered along that axis. The reads go one store chunk at a time,
    so no more than one chunk is decoded at once besides the window, each by
    ``read(source, slices)`` (default: ``source[slices]``).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(12).reshape(3, 4)
    >>> read_window(x, [np.array([-1, 0, 1, 2, 1]), slice(1, 3)]).tolist()
    [[0, 0], [1, 2], [5, 6], [9, 10], [5, 6]]
    """
    store_chunks = getattr(source, "chunks", None) or source.shape
    pieces: list[list[tuple[int, int, int]]] = []
    gathers: list[np.ndarray | None] = []
    shape: list[int] = []
    zero = False  # some axis reads a zero row (the compact array's last, or its ends)
    for axis, item in enumerate(where):
        lead = 0
        if isinstance(item, slice):
            start, stop, _ = item.indices(source.shape[axis])
            runs, gather, size = [(start, stop)], None, stop - start
        elif (framed := _framed_run(item)) is not None:
            # one run of rows between zero rows (zero padding at the image's border):
            # read into place, the zeros around it left as they are, nothing gathered
            lead, first, count = framed
            runs, gather, size = [(first, first + count)], None, len(item)
            zero = zero or count < len(item)
        else:
            rows = np.unique(item[item >= 0])
            cuts = np.flatnonzero(np.diff(rows) != 1) + 1
            runs = [(int(r[0]), int(r[-1]) + 1) for r in np.split(rows, cuts) if len(r)]
            gather = np.searchsorted(rows, item)
            gather[item < 0] = len(rows)
            pads = bool((item < 0).any())
            zero = zero or pads
            size = len(rows) + int(pads)  # the compact rows, then a zero row
        pieces.append([(a, b, o + lead) for a, b, o in _pieces(runs, max(1, store_chunks[axis]))])
        gathers.append(gather)
        shape.append(size)
    compact = (np.zeros if zero else np.empty)(shape, dtype=source.dtype)
    for piece in itertools.product(*pieces):
        src = tuple(slice(a, b) for a, b, _ in piece)
        dst = tuple(slice(o, o + b - a) for a, b, o in piece)
        compact[dst] = source[src] if read is None else read(source, src)
    for axis, gather in enumerate(gathers):
        if gather is not None:
            compact = np.take(compact, gather, axis=axis)
    return compact


@dataclass(frozen=True, eq=False)
class ZarrConv:
    """Everything one output chunk's task needs: the store, the weights, the plan."""

    source: Any  # a zarr.Array (or any array with shape, dtype and basic indexing)
    w: np.ndarray
    bias: np.ndarray | None
    options: dict[str, Any]  # the convolution's options but padding, run on each window
    spatial: tuple[AxisPlan, ...]
    batch_chunks: dict[int, tuple[int, ...]]  # the other axes that are cut: their chunks
    out_chunks: tuple[tuple[int, ...], ...]
    out_dtype: np.dtype
    edges: EdgeReader | None = None  # reads through this process's cache of chunk edges
    conv: Callable[..., np.ndarray] = _conv2d

    def where(self, index: Sequence[int]) -> list[slice | np.ndarray]:
        """What output chunk ``index`` reads along each axis of the source."""
        where: list[slice | np.ndarray] = [slice(None)] * len(self.source.shape)
        for axis, chunks in self.batch_chunks.items():
            start = sum(chunks[: index[axis]])
            where[axis] = slice(start, start + chunks[index[axis]])
        for a in self.spatial:
            where[a.axis] = a.window(index[a.axis])
        return where

    def warm_up(self) -> None:
        """Convolve zeros shaped as the first window: what a process compiles first."""
        shape = [c[0] for c in self.out_chunks]
        for a in self.spatial:
            shape[a.axis] = _shapes.input_span(a.chunks[0], a.kernel, a.stride, a.dilation)
        for axis, n in enumerate(self.source.shape):
            if axis not in self.batch_chunks and all(a.axis != axis for a in self.spatial):
                shape[axis] = n  # the channels, read whole
        x = np.zeros(shape, dtype=self.source.dtype)
        self.conv(x, self.w, self.bias, padding=0, padding_mode="zeros", **self.options)

    def graph(self, name: str) -> tuple[dict[Any, Any], list[tuple[Any, ...]]]:
        """One task per output chunk, and a key holding this plan, which they all read."""
        plan_key = f"plan-{name}"
        # A task (not a literal) so that every scheduler runs and counts it.
        dsk: dict[Any, Any] = {plan_key: _task(plan_key, _given, self)}
        keys = []
        for index in itertools.product(*(range(len(c)) for c in self.out_chunks)):
            key = (name, *index)
            dsk[key] = _task(key, compute_chunk, _ref(plan_key), index)
            keys.append(key)
        return dsk, keys


def _write_one(plan: ZarrConv, index: tuple[int, ...], write: Callable[..., Any]) -> Any:
    """Output chunk ``index`` computed and handed to ``write`` as ``map_blocks`` would."""
    location = []
    for chunks, j in zip(plan.out_chunks, index, strict=True):
        start = sum(chunks[:j])
        location.append((start, start + chunks[j]))
    return write(compute_chunk(plan, index), block_info={0: {"array-location": location}})


def write_chunks(y: da.Array, write: Callable[..., Any], **kwargs: Any) -> da.Array:
    """``y.map_blocks(write, **kwargs)`` returning a one-element int8 marker per chunk.

    ``write(block, **kwargs, block_info=...)`` gets ``block_info[0]["array-location"]``
    as under ``map_blocks``. When ``y`` comes from :func:`conv2d_zarr` each chunk is
    computed and written in one task (the graph built directly: ``map_blocks``
    and Dask's fusing take seconds for 16,384 chunks).
    """
    marker = dict(dtype=np.int8, chunks=(1,) * y.ndim)
    plan_key = f"plan-{y.name}"
    layer = y.dask.layers.get(y.name)
    if not y.name.startswith("conv-zarr-") or layer is None or plan_key not in layer:
        return y.map_blocks(write, **marker, **kwargs)  # type: ignore[arg-type]
    name = f"written-{tokenize(y.name, write, kwargs)}"
    task = functools.partial(write, **kwargs)
    dsk: dict[Any, Any] = {plan_key: layer[plan_key]}
    for index in itertools.product(*(range(n) for n in y.numblocks)):
        key = (name, *index)
        dsk[key] = _task(key, _write_one, _ref(plan_key), index, task)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
    chunks = tuple((1,) * n for n in y.numblocks)
    return da.Array(graph, name, chunks=chunks, meta=np.empty((0,) * y.ndim, dtype=np.int8))


try:  # Dask's own task objects: a graph of tuples is converted to them, 1-2 s per 16k
    from dask._task_spec import Task, TaskRef

    def _task(key: Any, func: Callable[..., Any], *args: Any) -> Any:
        return Task(key, func, *args)

    def _ref(key: Any) -> Any:
        return TaskRef(key)

except ImportError:  # an older Dask: the tuple spec

    def _task(key: Any, func: Callable[..., Any], *args: Any) -> Any:
        return (func, *args)

    def _ref(key: Any) -> Any:
        return key


def _given(plan: ZarrConv) -> ZarrConv:
    return plan


def compute_chunk(plan: ZarrConv, index: Sequence[int]) -> np.ndarray:
    """Output chunk ``index``: its window read from the store, convolved unpadded."""
    read = None if plan.edges is None else plan.edges.read
    window = read_window(plan.source, plan.where(index), read)
    return plan.conv(window, plan.w, plan.bias, padding=0, padding_mode="zeros", **plan.options)


def _open(x: Any) -> Any:
    import zarr

    if isinstance(x, zarr.Array):
        return x
    if not isinstance(x, str | os.PathLike):
        raise TypeError(
            f"path_or_array must be a zarr.Array or the path of one, got {type(x).__name__}"
        )
    try:
        node = zarr.open(store=os.fspath(x), mode="r")
    except Exception as err:  # zarr raises several kinds for "not a Zarr store"
        raise ValueError(f"path_or_array {os.fspath(x)!r} is not a Zarr array: {err}") from err
    if not isinstance(node, zarr.Array):
        raise ValueError(f"path_or_array {os.fspath(x)!r} is a Zarr group; expected a Zarr array")
    return node


def zarr_source(x: Any) -> Any:
    """The ``zarr.Array`` that ``dask.array.from_zarr`` read ``x`` from, else ``None``.

    Recognised only when ``x`` is exactly what ``from_zarr`` returned (two graph
    layers: the array, and the chunk reads from it, with ``inline_array=False``),
    the array's shape and dtype are ``x``'s, and ``x``'s chunks are regular. Any
    other array (sliced, rechunked, a later dask's different graph) gives
    ``None``, never a wrong source.
    """
    import zarr

    if not isinstance(x, da.Array) or not x.name.startswith("from-zarr-"):
        return None
    layers = x.dask.layers
    if set(layers) != {x.name, f"original-{x.name}"}:
        return None
    original = layers[f"original-{x.name}"]
    if not isinstance(original, MaterializedLayer) or len(original) != 1:
        return None
    source = next(iter(dict(original).values()))
    if not isinstance(source, zarr.Array) or source.shape != x.shape or source.dtype != x.dtype:
        return None
    if any(len(set(c[:-1])) > 1 or c[-1] > c[0] for c in x.chunks):
        return None
    return source


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _blocks(chunks: Any, strides: Sequence[int], in_chunks: Sequence[int]) -> list[int]:
    """Outputs per chunk along each spatial axis: ``chunks``, else input chunk / stride."""
    if chunks is None:
        return [max(1, -(-c // s)) for c, s in zip(in_chunks, strides, strict=True)]
    values = (chunks,) * len(strides) if _is_int(chunks) else chunks
    if not isinstance(values, tuple | list) or not all(_is_int(v) for v in values):
        raise TypeError(
            f"chunks must be an int or a tuple of {len(strides)} ints (outputs per chunk "
            f"along each spatial axis), got {chunks!r}"
        )
    if len(values) != len(strides) or min(values) < 1:
        raise ValueError(
            f"chunks must be a positive int or {len(strides)} of them (outputs per chunk "
            f"along each spatial axis), got {chunks!r}"
        )
    return [int(v) for v in values]


def plan_zarr(
    source: Any,
    w: Any,
    bias: Any,
    options: dict[str, Any],
    *,
    chunks: Any = None,
    in_chunks: Sequence[Sequence[int]] | None = None,
) -> ZarrConv:
    """Validate the call as ``conv2d`` does and plan its output chunks over ``source``."""
    from dilconv.dask import spatial_axes

    as_array("x", np.empty(0, dtype=source.dtype))  # the dtype checks of conv2d
    wa = as_array("w", w.compute() if isinstance(w, da.Array) else w)
    ba = (
        None
        if bias is None
        else as_array("bias", bias.compute() if isinstance(bias, da.Array) else bias)
    )
    dtypes = [np.dtype(source.dtype), wa.dtype] + ([] if ba is None else [ba.dtype])
    conv_options = {
        k: v for k, v in options.items() if k not in ("padding", "padding_mode", "method")
    }
    spec = make_spec(
        tuple(source.shape),
        wa.shape,
        bias_shape=None if ba is None else ba.shape,
        dtypes=dtypes,
        padding=options.get("padding", 0),
        padding_mode=options.get("padding_mode", "zeros"),
        memory_check=False,
        **conv_options,
    )
    h_axis, w_axis, c_axis = spatial_axes(spec)
    axes = (h_axis, w_axis)
    stored = tuple(in_chunks) if in_chunks is not None else tuple((c,) for c in source.chunks)
    blocks = _blocks(chunks, spec.stride, [stored[a][0] for a in axes])
    spatial = tuple(
        AxisPlan(
            axis=axis,
            size=spec.in_hw[i],
            pad=spec.pad[i],
            kernel=spec.kernel_hw[i],
            stride=spec.stride[i],
            dilation=spec.dilation[i],
            out=spec.out_hw[i],
            block=min(blocks[i], spec.out_hw[i]),
            mode=spec.padding_mode,
        )
        for i, axis in enumerate(axes)
    )
    out_shape = spec.out_shape
    out_chunks: list[tuple[int, ...]] = [(n,) for n in out_shape]
    batch_chunks: dict[int, tuple[int, ...]] = {}
    for axis in range(len(out_shape)):
        if axis not in axes and axis != c_axis:
            n, c = out_shape[axis], stored[axis][0]
            batch_chunks[axis] = (c,) * (n // c) + ((n % c,) if n % c else ())
            out_chunks[axis] = batch_chunks[axis]
    for a in spatial:
        out_chunks[a.axis] = a.chunks
    # The method must accept a window (the same error as conv2d's if it cannot).
    first = [c[0] for c in out_chunks]
    for a in spatial:
        first[a.axis] = _shapes.input_span(a.chunks[0], a.kernel, a.stride, a.dilation)
    if c_axis is not None:
        first[c_axis] = spec.in_channels
    resolve_method(
        options.get("method", "auto"),
        make_spec(tuple(first), wa.shape, dtypes=dtypes, **conv_options),
        first_call=False,
    )
    return ZarrConv(
        source=source,
        w=wa,
        bias=ba,
        options={**conv_options, "method": options.get("method", "auto")},
        spatial=spatial,
        batch_chunks=batch_chunks,
        out_chunks=tuple(out_chunks),
        out_dtype=spec.out_dtype,
        edges=_edge_reader(source, spatial),
    )


def _edge_reader(source: Any, spatial: Sequence[AxisPlan]) -> EdgeReader | None:
    """Keep edges as deep as a neighbouring window reaches: ``k_eff - 1`` rows."""
    if not hasattr(source, "chunks"):
        return None
    widths = [0] * len(source.shape)
    for a in spatial:
        widths[a.axis] = _shapes.effective_size(a.kernel, a.dilation) - 1
    return EdgeReader(token=uuid.uuid4().hex, widths=tuple(widths))


_PLANS: weakref.WeakValueDictionary[str, ZarrConv] = weakref.WeakValueDictionary()


def plan_of(y: da.Array) -> ZarrConv | None:
    """The plan of an array :func:`conv2d_zarr` returned (while its graph lives), else None."""
    return _PLANS.get(y.name)


def as_dask(plan: ZarrConv) -> da.Array:
    """The lazy result of ``plan``: one task per output chunk."""
    token = tokenize(
        str(getattr(plan.source, "store_path", id(plan.source))),
        plan.source.shape,
        str(plan.source.dtype),
        plan.w,
        plan.bias,
        sorted(plan.options.items()),
        plan.spatial,
        plan.out_chunks,
    )
    name = f"conv-zarr-{token}"
    _PLANS[name] = plan
    dsk, _ = plan.graph(name)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
    meta = np.empty((0,) * len(plan.out_chunks), dtype=plan.out_dtype)
    return da.Array(graph, name, chunks=plan.out_chunks, meta=meta)


def conv2d_zarr(
    path_or_array: Any,
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
    chunks: Any = None,
) -> da.Array:
    """Lazy dilated 2-D convolution of a Zarr array, each output chunk reading its own window.

    Parameters
    ----------
    path_or_array : zarr.Array, str or os.PathLike
        A Zarr array (or its path) in any layout :func:`dilconv.conv2d` takes:
        ``(H, W)``, ``(C, H, W)``, ``(N, C, H, W)`` (NCHW), ``(H, W, C)``,
        ``(N, H, W, C)`` (NHWC).
    w, bias : array_like
        As for :func:`dilconv.conv2d` (small: a Dask array is computed first).
    stride, padding, dilation, groups, padding_mode, data_format, flip, method
        As for :func:`dilconv.conv2d`, validated by the same code, so a bad
        argument raises the same error; ``method`` runs on every chunk.
    chunks : int or (int, int), optional
        Outputs per chunk along each spatial axis (the last chunk smaller).
        Default: the store's chunk along that axis divided by the stride,
        rounded up.

    Returns
    -------
    dask.array.Array
        The result in the input's layout, rank and dtype rule, in regular chunks;
        the batch axis keeps the store's chunks, channels are one chunk. Its graph
        has one task per output chunk and one more holding the plan.

    Notes
    -----
    Per spatial axis, with pads ``lo`` and ``hi``, ``k`` taps, dilation ``d``,
    stride ``s``, ``k_eff = d * (k - 1) + 1`` and ``b`` outputs per chunk, output
    chunk ``j`` reads the padded rows ``[j * b * s, j * b * s + (b - 1) * s +
    k_eff)``. Each of them is read straight from the store: padded row ``p`` is
    source row ``source_index(n, lo, hi, padding_mode)[p]``, the map
    :func:`dilconv.conv2d` pads with, so every padding mode fills the border as
    the in-memory call does, and a halo longer than a store chunk, or than the
    image, is just a longer read. The task then runs :func:`dilconv.conv2d`,
    unpadded, on that window. No data passes between tasks; a task holds its
    window, a compact copy of the rows it names when the window crosses the
    border, and its output.

    With ``method="auto"`` each chunk picks its own algorithm for its size, so
    floating-point results may differ from the in-memory call within rounding
    (integer input is exact); a named ``method`` runs the same algorithm.

    :func:`dilconv.dask.conv2d` takes this route by itself for an array exactly
    as ``dask.array.from_zarr`` made it (see :func:`zarr_source`); after any
    other Dask operation (a slice, a rechunk) the array's source is no longer
    known, and this function is the way to name it.

    Examples
    --------
    >>> import numpy as np, zarr, dilconv
    >>> z = zarr.create_array(store={}, shape=(10, 10), chunks=(4, 4), dtype="int64")
    >>> z[:] = np.arange(100).reshape(10, 10)
    >>> w = np.ones((2, 2), dtype=int)
    >>> options = dict(dilation=3, padding="same", padding_mode="reflect", stride=2)
    >>> y = conv2d_zarr(z, w, **options)
    >>> y.chunks
    ((2, 2, 1), (2, 2, 1))
    >>> bool(np.array_equal(y.compute(), dilconv.conv2d(z[:], w, **options)))
    True
    """
    source = _open(path_or_array)
    options = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    options.update(padding_mode=padding_mode, data_format=data_format, flip=flip, method=method)
    return as_dask(plan_zarr(source, w, bias, options, chunks=chunks))


def spatial_axes_nd(rank: int, x_ndim: int, channels_first: bool) -> tuple[list[int], int | None]:
    """Spatial axes and channel axis of a ``rank``-D call's array of ``x_ndim`` axes."""
    if x_ndim == rank:
        return list(range(rank)), None
    lead = x_ndim - rank - 1  # 1 with a batch axis, 0 without
    if channels_first:
        return list(range(lead + 1, lead + 1 + rank)), lead
    return list(range(lead, lead + rank)), lead + rank


def conv_nd_zarr(
    rank: int,
    path_or_array: Any,
    w: Any,
    bias: Any = None,
    *,
    chunks: Any = None,
    in_chunks: Sequence[Sequence[int]] | None = None,
    **options: Any,
) -> da.Array:
    """:func:`conv2d_zarr` for :func:`dilconv.conv1d` (``rank=1``) or :func:`dilconv.conv3d`.

        The same window reads, one task per output chunk; ``options`` are those of
        the in-memory call of that rank, validated by the same code. ``chunks``: outputs
        per chunk along each spatial axis (default: the store's chunk, or ``in_chunks``'
    first along that axis, over the stride).

        Examples
        --------
        >>> import numpy as np, zarr, dilconv
        >>> z = zarr.create_array(store={}, shape=(2, 9, 8, 10), chunks=(1, 4, 4, 4), dtype="int64")
        >>> z[:] = np.arange(z.size).reshape(z.shape) % 7
        >>> w = np.ones((3, 2, 2, 3, 2), dtype=int)
        >>> options = dict(dilation=2, padding="same", padding_mode="reflect")
        >>> y = conv_nd_zarr(3, z, w, **options)
        >>> bool(np.array_equal(y.compute(), dilconv.conv3d(z[:], w, **options)))
        True
    """
    from dilconv import convnd
    from dilconv._spec_nd import make_spec_nd

    source = _open(path_or_array)
    as_array("x", np.empty(0, dtype=source.dtype))
    wa = as_array("w", w.compute() if isinstance(w, da.Array) else w)
    ba = None if bias is None else as_array("bias", bias)
    dtypes = [np.dtype(source.dtype), wa.dtype] + ([] if ba is None else [ba.dtype])
    method = options.pop("method", "auto")
    spec = make_spec_nd(
        rank,
        tuple(source.shape),
        wa.shape,
        bias_shape=None if ba is None else ba.shape,
        dtypes=dtypes,
        memory_check=False,
        **options,
    )
    axes, c_axis = spatial_axes_nd(rank, spec.x_ndim, spec.channels_first)
    firsts = [source.chunks[a] if in_chunks is None else in_chunks[a][0] for a in axes]
    blocks = _blocks(chunks, spec.stride, firsts)
    spatial = tuple(
        AxisPlan(
            axis=axis,
            size=spec.in_size[i],
            pad=spec.pad[i],
            kernel=spec.kernel[i],
            stride=spec.stride[i],
            dilation=spec.dilation[i],
            out=spec.out_size[i],
            block=min(blocks[i], spec.out_size[i]),
            mode=spec.padding_mode,
        )
        for i, axis in enumerate(axes)
    )
    out_shape = spec.out_shape
    out_chunks: list[tuple[int, ...]] = [(n,) for n in out_shape]
    batch_chunks: dict[int, tuple[int, ...]] = {}
    for axis in range(len(out_shape)):
        if axis not in axes and axis != c_axis:
            n, c = out_shape[axis], source.chunks[axis]
            batch_chunks[axis] = (c,) * (n // c) + ((n % c,) if n % c else ())
            out_chunks[axis] = batch_chunks[axis]
    for a in spatial:
        out_chunks[a.axis] = a.chunks
    kept = {k: v for k, v in options.items() if k not in ("padding", "padding_mode")}
    plan = ZarrConv(
        source=source,
        w=wa,
        bias=ba,
        options={**kept, "method": method},
        spatial=spatial,
        batch_chunks=batch_chunks,
        out_chunks=tuple(out_chunks),
        out_dtype=spec.out_dtype,
        edges=_edge_reader(source, spatial),
        conv=convnd.conv1d if rank == 1 else convnd.conv3d,
    )
    return as_dask(plan)


def conv1d_zarr(path_or_array: Any, w: Any, bias: Any = None, **options: Any) -> da.Array:
    """:func:`dilconv.conv1d` of a Zarr array, each output chunk reading its own window.

    The options are :func:`dilconv.conv1d`'s, and ``chunks``; see :func:`conv2d_zarr`.
    """
    return conv_nd_zarr(1, path_or_array, w, bias, **options)


def conv3d_zarr(path_or_array: Any, w: Any, bias: Any = None, **options: Any) -> da.Array:
    """:func:`dilconv.conv3d` of a Zarr volume, each output chunk reading its own window.

    The options are :func:`dilconv.conv3d`'s, and ``chunks``; see :func:`conv2d_zarr`.
    """
    return conv_nd_zarr(3, path_or_array, w, bias, **options)

"""dilconv.dask.conv2d_zarr: each output chunk reads its own window from the store.

Compared with the in-memory conv2d for random store and output chunkings, every
padding mode and stride, halos longer than a chunk and than the image; the graph's
size is counted (one task per output chunk, plus the plan), never timed.
"""

from __future__ import annotations

import dataclasses
import pickle
import tracemalloc
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from hypothesis import given
from hypothesis import strategies as st

import dilconv
import dilconv.dask
from dilconv._dask_zarr import (
    AxisPlan,
    compute_chunk,
    plan_of,
    plan_zarr,
    read_window,
    write_chunks,
    zarr_source,
)
from dilconv._padding import source_index
from dilconv._spec import PADDING_MODES
from dilconv._zarr_edges import CACHE
from dilconv.cli.apply import create_output, write_block
from tests.strategies import Case, conv_cases
from tests.tolerance import assert_close


def to_zarr(x: np.ndarray, chunks: tuple[int, ...]) -> Any:
    """``x`` in an in-memory Zarr array of ``chunks``."""
    z = zarr.create_array(store={}, shape=x.shape, chunks=chunks, dtype=x.dtype)
    z[...] = x
    return z


def task_count(y: da.Array) -> int:
    """Tasks in ``y``'s optimised graph (counted, nothing computed)."""
    (optimised,) = dask.optimize(y)
    return len(dict(optimised.__dask_graph__()))


def _outcome(run: Any) -> Any:
    """``run()``, or the ValueError it raised."""
    try:
        return run()
    except ValueError as err:
        return err


@given(
    data=st.data(),
    case=conv_cases(dtypes=(np.float64, np.int64), max_hw=14),
    method=st.sampled_from(("auto", "shift_add", "compiled", "im2col")),
)
def test_matches_conv2d_for_random_chunkings(data: st.DataObject, case: Case, method: str) -> None:
    store_chunks = tuple(data.draw(st.integers(1, n), label="store chunk") for n in case.x.shape)
    out_chunks = data.draw(st.none() | st.integers(1, 9), label="output chunks")
    expected = _outcome(
        lambda: dilconv.conv2d(case.x, case.w, case.bias, method=method, **case.options)
    )
    y = _outcome(
        lambda: dilconv.dask.conv2d_zarr(
            to_zarr(case.x, store_chunks),
            case.w,
            case.bias,
            method=method,
            chunks=out_chunks,
            **case.options,
        )
    )
    if isinstance(expected, ValueError):  # the same refusal, with the same message
        assert isinstance(y, ValueError), f"{case}: {expected}"
        assert str(y) == str(expected)
        return
    assert isinstance(y, da.Array), f"{y} for {case}"
    assert all(c[:-1] == (c[0],) * (len(c) - 1) and c[-1] <= c[0] for c in y.chunks)
    chunk_count = int(np.prod([len(c) for c in y.chunks]))
    assert task_count(y) <= chunk_count + 1
    actual = y.compute(scheduler="sync")
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    if case.x.dtype.kind == "f":
        assert_close(actual, expected, context=f"{case} chunks={store_chunks}, {out_chunks}")
    else:
        np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("mode", PADDING_MODES)
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("padding", ["same", "full", ((3, 0), (0, 2)), ((0, 4), (1, 1))])
def test_padding_modes_and_strides_with_small_chunks(mode: str, stride: int, padding: Any) -> None:
    """Store chunks of 2x3 pixels, smaller than the 5x4 dilated kernel's halo."""
    rng = np.random.default_rng(7)
    x = rng.integers(-9, 10, size=(2, 3, 11, 9))
    w = rng.integers(-3, 4, size=(4, 3, 3, 2))
    options = dict(stride=stride, dilation=(2, 3), padding=padding, padding_mode=mode)
    y = dilconv.dask.conv2d_zarr(to_zarr(x, (1, 3, 2, 3)), w, **options)
    np.testing.assert_array_equal(y.compute(scheduler="sync"), dilconv.conv2d(x, w, **options))


@pytest.mark.parametrize("mode", PADDING_MODES)
def test_halo_longer_than_the_chunks_and_the_image(mode: str) -> None:
    """A 5x4 image in chunks of 1, a 9x9 dilated kernel: the border wraps more than once."""
    x = np.arange(20).reshape(5, 4)
    w = np.arange(9).reshape(3, 3)
    # "full" pads 4 and 6: more than the image; the other modes take at most n - 1.
    pads = "full" if mode in ("zeros", "replicate") else ((4, 4), (3, 3))
    options = dict(dilation=(2, 3), padding=pads, padding_mode=mode)
    expected = dilconv.conv2d(x, w, **options)
    for chunks in (None, 1, 2):
        y = dilconv.dask.conv2d_zarr(to_zarr(x, (1, 1)), w, chunks=chunks, **options)
        np.testing.assert_array_equal(y.compute(scheduler="sync"), expected)


@pytest.mark.parametrize("data_format", ["NCHW", "NHWC"])
def test_layouts_batch_and_bias(data_format: str) -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(-5, 6, size=(3, 2, 13, 11) if data_format == "NCHW" else (3, 13, 11, 2))
    w = rng.integers(-2, 3, size=(4, 1, 3, 3) if data_format == "NCHW" else (3, 3, 1, 4))
    bias = np.arange(4)
    options = dict(dilation=2, stride=(2, 1), padding="same", padding_mode="symmetric")
    options.update(data_format=data_format, groups=2, flip=True)
    store = to_zarr(x, (2, 1, 4, 4) if data_format == "NCHW" else (2, 4, 4, 1))
    y = dilconv.dask.conv2d_zarr(store, w, bias, **options)
    assert y.chunks[0] == (2, 1)  # the batch axis keeps the store's chunks
    assert y.chunks[1 if data_format == "NCHW" else 3] == (4,)  # channels: one chunk
    np.testing.assert_array_equal(
        y.compute(scheduler="sync"), dilconv.conv2d(x, w, bias, **options)
    )


def test_path_and_output_chunks(tmp_path: Any) -> None:
    """A path opens the store; output chunks regular, aligned with the stride."""
    x = np.arange(23 * 31).reshape(23, 31)
    zarr.create_array(store=str(tmp_path / "x.zarr"), data=x, chunks=(5, 5))
    w = np.ones((3, 3), dtype=np.int64)
    y = dilconv.dask.conv2d_zarr(tmp_path / "x.zarr", w, stride=2, dilation=2, padding="same")
    assert y.chunks == ((3,) * 4, (3,) * 5 + (1,))  # ceil(5 / 2) outputs per chunk
    expected = dilconv.conv2d(x, w, stride=2, dilation=2, padding="same")
    np.testing.assert_array_equal(y.compute(scheduler="sync"), expected)
    y = dilconv.dask.conv2d_zarr(str(tmp_path / "x.zarr"), w, stride=2, chunks=(4, 7))
    assert y.chunks == ((4, 4, 3), (7, 7, 1))
    np.testing.assert_array_equal(y.compute(), dilconv.conv2d(x, w, stride=2))


def test_graph_size_of_a_large_image() -> None:
    """65,536^2 float32 in 512^2 chunks (16 GiB, never written): one task per chunk + 1."""
    z = zarr.create_array(store={}, shape=(65536, 65536), chunks=(512, 512), dtype="float32")
    w = np.ones((3, 3), dtype=np.float32)
    y = dilconv.dask.conv2d_zarr(z, w, dilation=4, padding="same", padding_mode="reflect")
    assert y.numblocks == (128, 128)
    assert task_count(y) == 128 * 128 + 1 <= 2 * 128 * 128


def test_graph_size_of_apply_on_a_large_image(tmp_path: Any) -> None:
    """``dilconv apply``'s graph of the same: each chunk computed and written in one task."""
    z = zarr.create_array(store={}, shape=(65536, 65536), chunks=(512, 512), dtype="float32")
    y = dilconv.dask.conv2d_zarr(z, np.ones((3, 3), dtype=np.float32), dilation=4)
    marks = write_chunks(y, write_block, target=str(tmp_path / "never.zarr"), kind="zarr")
    assert marks.numblocks == (128, 128)
    assert task_count(marks) == 128 * 128 + 1


def test_write_chunks_writes_every_chunk(tmp_path: Any) -> None:
    x = np.arange(37 * 29).reshape(37, 29)
    w = np.ones((2, 3), dtype=np.int64)
    y = dilconv.dask.conv2d_zarr(to_zarr(x, (8, 8)), w, dilation=(3, 2), padding="full")
    create_output(tmp_path / "y.zarr", y.shape, y.chunksize, y.dtype, "none")
    marks = write_chunks(y, write_block, target=str(tmp_path / "y.zarr"), kind="zarr")
    assert marks.compute(scheduler="threads").sum() == y.npartitions
    expected = dilconv.conv2d(x, w, dilation=(3, 2), padding="full")
    np.testing.assert_array_equal(zarr.open_array(store=str(tmp_path / "y.zarr"))[:], expected)


@pytest.mark.parametrize("data_format", ["NCHW", "NHWC"])
def test_plan_of_and_warm_up(data_format: str) -> None:
    shape = (3, 2, 40, 30) if data_format == "NCHW" else (3, 40, 30, 2)
    w = np.ones((4, 2, 3, 3) if data_format == "NCHW" else (3, 3, 2, 4))
    z = to_zarr(np.ones(shape), (2, 2, 16, 16))
    y = dilconv.dask.conv2d_zarr(z, w, dilation=3, data_format=data_format)
    plan = plan_of(y)
    assert plan is not None
    assert plan.out_chunks == y.chunks
    plan.warm_up()  # a window of zeros of the first chunk's shape: accepted by conv2d
    assert plan_of(dilconv.dask.conv2d(da.ones((8, 8), chunks=4), np.ones((3, 3)))) is None


def test_graph_size_against_map_overlap() -> None:
    """The same chunks by map_overlap: several tasks per chunk, by the window read: one."""
    z = to_zarr(np.zeros((64, 64), dtype=np.float32), (8, 8))
    w = np.ones((3, 3), dtype=np.float32)
    halo = dilconv.dask.conv2d(da.from_array(z[:], chunks=8), w, dilation=4, padding="same")
    window = dilconv.dask.conv2d_zarr(z, w, dilation=4, padding="same")
    assert window.numblocks == halo.numblocks == (8, 8)
    assert task_count(window) == 65 < 4 * 64 <= task_count(halo)


def test_from_zarr_is_recognised(tmp_path: Any) -> None:
    x = np.arange(30 * 20).reshape(30, 20)
    z = zarr.create_array(store=str(tmp_path / "x.zarr"), data=x, chunks=(7, 6))
    w = np.ones((3, 3), dtype=np.int64)
    for xd in (da.from_zarr(z), da.from_zarr(str(tmp_path / "x.zarr"))):
        assert zarr_source(xd) is not None
        y = dilconv.dask.conv2d(xd, w, dilation=5, padding="same", padding_mode="circular")
        assert task_count(y) == y.npartitions + 1
        expected = dilconv.conv2d(x, w, dilation=5, padding="same", padding_mode="circular")
        np.testing.assert_array_equal(y.compute(scheduler="sync"), expected)
    for other in (da.from_zarr(z)[1:], da.from_zarr(z).rechunk(5), da.from_array(x), x):
        assert zarr_source(other) is None


def test_read_window_matches_the_padded_image() -> None:
    """Every mode, windows at and past the borders, against np.take of the index map."""
    x = np.arange(7 * 6).reshape(7, 6) + 1
    z = to_zarr(x, (3, 4))
    for mode in PADDING_MODES:
        rows, cols = source_index(7, 9, 9, mode), source_index(6, 2, 3, mode)
        for r0, c0, r1, c1 in [(0, 0, 25, 11), (8, 1, 14, 9), (14, 5, 25, 11), (2, 0, 4, 2)]:
            expected = np.where(
                (rows[r0:r1, None] >= 0) & (cols[None, c0:c1] >= 0),
                x[np.ix_(rows[r0:r1], cols[c0:c1])],
                0,
            )
            actual = read_window(z, [rows[r0:r1], cols[c0:c1]])
            np.testing.assert_array_equal(actual, expected, err_msg=f"{mode} {r0, c0, r1, c1}")


def test_axis_plan_reads_only_its_window() -> None:
    a = AxisPlan(axis=0, size=100, pad=(8, 8), kernel=3, stride=2, dilation=8, out=50, block=7)
    assert a.chunks == (7,) * 7 + (1,)
    for j in range(len(a.chunks)):
        window = a.window(j)
        assert len(window) == (a.chunks[j] - 1) * 2 + 17
        np.testing.assert_array_equal(
            window, source_index(100, 8, 8, "zeros")[j * 14 :][: len(window)]
        )


def test_peak_memory_of_one_task() -> None:
    """A task holds at most 3x (its input window + its output chunk), border chunks too.

    Besides the edges it leaves in its process's cache (bounded for the process).
    """
    x = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    z = to_zarr(x, (256, 256))
    w = np.ones((3, 3), dtype=np.float32)
    for mode in ("zeros", "reflect", "circular"):
        y = dilconv.dask.conv2d_zarr(z, w, dilation=16, padding="same", padding_mode=mode)
        plan = plan_zarr(z, w, None, dict(dilation=16, padding="same", padding_mode=mode))
        plan = pickle.loads(pickle.dumps(plan))  # as a worker gets it
        for index in [(0, 0), (1, 2), (3, 3)]:
            window = [len(a.window(index[a.axis])) for a in plan.spatial]
            allowed = 3 * 4 * (window[0] * window[1] + 256 * 256)
            compute_chunk(plan, index)  # compiled and warmed, outside the measure
            CACHE.clear()  # every neighbouring chunk decoded whole again
            tracemalloc.start()
            try:
                out = compute_chunk(plan, index)
                peak = tracemalloc.get_traced_memory()[1] - CACHE.nbytes  # less edges kept
            finally:
                tracemalloc.stop()
            assert peak <= allowed, f"{mode} {index}: {peak} > {allowed} bytes"
            np.testing.assert_array_equal(out, y.blocks[index].compute(scheduler="sync"))


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (np.ones((4, 4)), TypeError, "path_or_array must be a zarr.Array or the path of one"),
        ("/nonexistent/x.zarr", ValueError, "is not a Zarr array"),
    ],
)
def test_bad_sources(value: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        dilconv.dask.conv2d_zarr(value, np.ones((3, 3)))


@pytest.mark.parametrize(
    ("chunks", "error", "match"),
    [
        (0, ValueError, "chunks must be a positive int or 2 of them"),
        ((3,), ValueError, "chunks must be a positive int or 2 of them"),
        ((2, -1), ValueError, r"along each spatial axis\), got \(2, -1\)"),
        (2.5, TypeError, "chunks must be an int or a tuple of 2 ints"),
        ((2, True), TypeError, r"got \(2, True\)"),
    ],
)
def test_bad_chunks(chunks: Any, error: type[Exception], match: str) -> None:
    z = to_zarr(np.ones((8, 8)), (4, 4))
    with pytest.raises(error, match=match):
        dilconv.dask.conv2d_zarr(z, np.ones((3, 3)), chunks=chunks)


def test_group_is_refused(tmp_path: Any) -> None:
    zarr.create_group(store=str(tmp_path / "g.zarr"))
    with pytest.raises(ValueError, match="is a Zarr group; expected a Zarr array"):
        dilconv.dask.conv2d_zarr(tmp_path / "g.zarr", np.ones((3, 3)))


class CountingStore:
    """An array read like a Zarr store: counts the store chunks each read decodes."""

    def __init__(self, x: np.ndarray, chunks: tuple[int, ...]) -> None:
        self.x, self.chunks, self.shape, self.dtype = x, chunks, x.shape, x.dtype
        self.decoded = 0

    def __getitem__(self, where: tuple[slice, ...]) -> np.ndarray:
        spans = [
            (s.stop - 1) // c - s.start // c + 1 for s, c in zip(where, self.chunks, strict=True)
        ]
        self.decoded += int(np.prod(spans))
        return self.x[where].copy()


@pytest.mark.parametrize("order", ["rows", "columns"])
def test_edges_spare_decoding_the_neighbours(order: str) -> None:
    """Windows one after another decode each store chunk about once, not up to nine times."""
    x = np.random.default_rng(1).integers(-9, 10, size=(96, 128))
    w = np.arange(9).reshape(3, 3)
    options = dict(dilation=2, padding="same", padding_mode="reflect")
    expected = dilconv.conv2d(x, w, **options)
    decoded = {}
    for edges in (True, False):
        store = CountingStore(x, (32, 32))  # 3 x 4 chunks
        plan = plan_zarr(store, w, None, options)
        plan = plan if edges else dataclasses.replace(plan, edges=None)
        rows, cols = (len(c) for c in plan.out_chunks)
        blocks = [(i, j) for i in range(rows) for j in range(cols)]
        if order == "columns":
            blocks = [(i, j) for j in range(cols) for i in range(rows)]
        CACHE.clear()
        results = {index: compute_chunk(plan, index) for index in blocks}
        y = np.block([[results[(i, j)] for j in range(cols)] for i in range(rows)])
        np.testing.assert_array_equal(y, expected)
        decoded[edges] = store.decoded
    assert decoded[True] <= 2 * 12 < 4 * 12 <= decoded[False]


@pytest.mark.parametrize("mode", PADDING_MODES)
@pytest.mark.parametrize("stride", [1, 2])
def test_conv1d_and_conv3d(mode: str, stride: int) -> None:
    """Rank 1 and 3: chunks smaller than the halo, every padding mode, against conv1d/3d."""
    rng = np.random.default_rng(11)
    x1 = rng.integers(-9, 10, size=(2, 3, 23))
    w1 = rng.integers(-3, 4, size=(4, 3, 3))
    options = dict(stride=stride, dilation=3, padding="same", padding_mode=mode)
    y1 = dilconv.dask.conv1d_zarr(to_zarr(x1, (1, 2, 4)), w1, **options)
    assert task_count(y1) == y1.npartitions + 1
    np.testing.assert_array_equal(y1.compute(scheduler="sync"), dilconv.conv1d(x1, w1, **options))
    x3 = rng.integers(-9, 10, size=(2, 7, 9, 8))
    w3 = rng.integers(-3, 4, size=(3, 2, 2, 3, 2))
    options3 = dict(stride=stride, dilation=(2, 2, 3), padding="same", padding_mode=mode)
    y3 = dilconv.dask.conv3d_zarr(to_zarr(x3, (1, 3, 2, 4)), w3, chunks=2, **options3)
    expected = dilconv.conv3d(x3, w3, **options3)
    np.testing.assert_array_equal(y3.compute(scheduler="sync"), expected)

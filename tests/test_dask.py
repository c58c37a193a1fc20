"""dilconv.dask.conv2d against the in-memory conv2d: chunkings, borders, strides, errors."""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import dilconv
import dilconv.dask
from dilconv._config import physical_memory_bytes
from dilconv._dask_halo import index_runs, pad_axis
from dilconv._padding import pad_spatial, source_index
from dilconv._spec import PADDING_MODES
from tests.strategies import Case, conv_cases
from tests.tolerance import assert_close

METHODS = (
    "auto",
    "shift_add",
    "compiled",
    "blocked",
    "im2col",
    "dilated_kernel",
    "space_to_batch",
    "fft",
)


@st.composite
def chunkings(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """Random, irregular chunks per axis (size-1 chunks included: smaller than any halo)."""
    chunks = []
    for n in shape:
        cuts = draw(st.sets(st.integers(1, n - 1), max_size=min(n - 1, 6))) if n > 1 else set()
        edges = [0, *sorted(cuts), n]
        chunks.append(tuple(b - a for a, b in zip(edges, edges[1:], strict=False)))
    return tuple(chunks)


def _magnitude(case: Case) -> np.ndarray:
    """The same call on absolute values: the scale of each output's rounding error."""
    bias = None if case.bias is None else np.abs(case.bias)
    return dilconv.conv2d(np.abs(case.x), np.abs(case.w), bias, **case.options)


def _both(case: Case, chunks: Any, method: str) -> tuple[Any, Any]:
    """``(in-memory result or error, dask result or error)`` for one case."""
    results = []
    for run in (
        lambda: dilconv.conv2d(case.x, case.w, case.bias, method=method, **case.options),
        lambda: dilconv.dask.conv2d(
            da.from_array(case.x, chunks=chunks), case.w, case.bias, method=method, **case.options
        ).compute(scheduler="sync"),
    ):
        try:
            results.append(run())
        except ValueError as err:
            results.append(err)
    return results[0], results[1]


@given(
    data=st.data(),
    case=conv_cases(dtypes=(np.float64, np.float32, np.int64), max_hw=14),
    method=st.sampled_from(METHODS),
)
def test_matches_conv2d_for_random_chunkings(data: st.DataObject, case: Case, method: str) -> None:
    chunks = data.draw(chunkings(case.x.shape), label="chunks")
    expected, actual = _both(case, chunks, method)
    if isinstance(expected, ValueError):  # e.g. fft on integers: the same refusal
        assert isinstance(actual, ValueError), f"{case} chunks={chunks}"
        assert str(actual) == str(expected)
        return
    assert not isinstance(actual, ValueError), f"{actual} for {case} chunks={chunks}"
    magnitude = _magnitude(case) if case.x.dtype.kind == "f" else None
    assert_close(actual, expected, magnitude=magnitude, context=f"{case} chunks={chunks}")


def _error(run: Any) -> Exception:
    """The ValueError or TypeError that ``run()`` raises (a test failure if none)."""
    try:
        run()
    except (ValueError, TypeError) as err:
        return err
    raise AssertionError(f"{run} raised nothing")


@pytest.mark.parametrize("mode", PADDING_MODES)
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("padding", ["same", "full", ((3, 0), (0, 2)), ((0, 4), (1, 1))])
def test_padding_modes_and_strides_with_small_chunks(mode: str, stride: int, padding: Any) -> None:
    """Chunks of 2x3 pixels, smaller than the 5x4 dilated kernel's halo."""
    rng = np.random.default_rng(7)
    x = rng.integers(-9, 10, size=(2, 3, 11, 9))
    w = rng.integers(-3, 4, size=(4, 3, 3, 2))
    options = dict(stride=stride, dilation=(2, 3), padding=padding, padding_mode=mode)
    xd = da.from_array(x, chunks=(1, 3, 2, 3))
    y = dilconv.dask.conv2d(xd, w, **options)
    np.testing.assert_array_equal(y.compute(scheduler="sync"), dilconv.conv2d(x, w, **options))


@pytest.mark.parametrize("data_format", ["NCHW", "NHWC"])
@pytest.mark.parametrize("rank", [2, 3, 4])
def test_layouts_and_ranks(data_format: str, rank: int) -> None:
    rng = np.random.default_rng(rank)
    shape = {"NCHW": (2, 3, 17, 13), "NHWC": (2, 17, 13, 3)}[data_format][4 - rank :]
    if rank == 2:
        shape, w = (17, 13), rng.standard_normal((3, 3))
    elif data_format == "NCHW":
        w = rng.standard_normal((6, 1, 3, 3))
    else:
        w = rng.standard_normal((3, 3, 1, 6))
    x = rng.standard_normal(shape)
    options = dict(dilation=3, stride=2, padding="same", padding_mode="reflect", flip=True)
    options.update(data_format=data_format, groups=1 if rank == 2 else 3)
    bias = None if rank == 2 else np.arange(6.0)
    y = dilconv.dask.conv2d(da.from_array(x, chunks=4), w, bias, method="shift_add", **options)
    expected = dilconv.conv2d(x, w, bias, method="shift_add", **options)
    assert_close(y.compute(scheduler="sync"), expected)


def test_output_chunks_are_aligned_to_the_stride() -> None:
    """Input chunks of 5 and a stride of 2 do not align: realigned, outputs regular."""
    x = np.arange(23 * 31).reshape(23, 31)  # integers: exact whatever "auto" picks
    w = np.ones((3, 3), dtype=np.int64)
    y = dilconv.dask.conv2d(da.from_array(x, chunks=5), w, stride=2, dilation=2, padding="same")
    assert y.chunks == ((3, 3, 3, 3), (3,) * 5 + (1,))
    expected = dilconv.conv2d(x, w, stride=2, dilation=2, padding="same")
    np.testing.assert_array_equal(y.compute(scheduler="sync"), expected)


def test_halo_longer_than_the_axis_and_the_chunks() -> None:
    """A 5x4 image, chunks of 1, a 9-pixel dilated kernel padded "full"."""
    x = np.arange(20).reshape(5, 4)
    w = np.arange(9).reshape(3, 3)
    y = dilconv.dask.conv2d(da.from_array(x, chunks=1), w, dilation=4, padding="full")
    np.testing.assert_array_equal(
        y.compute(scheduler="sync"), dilconv.conv2d(x, w, dilation=4, padding="full")
    )


def test_larger_than_memory_is_lazy() -> None:
    """An input twice this machine's memory: conv2d refuses it, the Dask graph is built."""
    side = int(np.sqrt(2 * physical_memory_bytes() / 4)) + 1
    w = np.ones((3, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="use dilconv.dask"):
        dilconv.conv2d(np.broadcast_to(np.float32(1), (side, side)), w, dilation=2)
    x = da.ones((side, side), dtype=np.float32, chunks=4096)
    y = dilconv.dask.conv2d(x, w, dilation=2, padding="same", method="shift_add")
    assert y.shape == x.shape
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y.blocks[1, 1].compute(), np.full((4096, 4096), 9, np.float32))


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "options"),
    [
        ((8, 8), (5, 5), {"dilation": 3}),  # dilated kernel larger than the image
        ((2, 3, 8, 8, 1), (4, 3, 3, 3), {}),  # 5-D
        ((3, 8, 8), (4, 2, 3, 3), {}),  # channels do not match
        ((8, 8), (3, 3), {"padding_mode": "mirror"}),
        ((8, 8), (3, 3), {"stride": 0}),
        ((8, 8), (3, 3), {"padding": 9, "padding_mode": "reflect"}),
        ((8, 8), (3, 3), {"method": "magic"}),
    ],
)
def test_errors_match_conv2d(
    x_shape: tuple[int, ...], w_shape: tuple[int, ...], options: dict[str, Any]
) -> None:
    x, w = np.ones(x_shape), np.ones(w_shape)
    expected = _error(lambda: dilconv.conv2d(x, w, **options))
    actual = _error(lambda: dilconv.dask.conv2d(da.from_array(x), w, **options))
    assert type(actual) is type(expected) is ValueError
    assert str(actual) == str(expected)


def test_dtype_errors_match_conv2d() -> None:
    x = np.ones((8, 8), dtype=np.complex128)
    expected = _error(lambda: dilconv.conv2d(x, np.ones((3, 3))))
    actual = _error(lambda: dilconv.dask.conv2d(da.from_array(x), np.ones((3, 3))))
    assert type(actual) is type(expected) is TypeError
    assert str(actual) == str(expected)


PAD_CASES = [
    (mode, n, lo, hi)
    for mode in PADDING_MODES
    for n, lo, hi in [(7, 3, 2), (4, 0, 4), (3, 2, 0), (1, 0, 0), (5, 5, 5)]
    if max(lo, hi) <= {"reflect": n - 1, "circular": n, "symmetric": n}.get(mode, 10**6)
]


@pytest.mark.parametrize(("mode", "n", "lo", "hi"), PAD_CASES)
def test_pad_axis_is_pad_spatial(mode: str, n: int, lo: int, hi: int) -> None:
    x = np.arange(2 * n * 3).reshape(2, n, 3)
    expected = pad_spatial(x[..., None], ((lo, hi), (0, 0)), mode)[..., 0]
    for chunk in (1, 2, n):
        padded = pad_axis(da.from_array(x, chunks=(1, chunk, 3)), 1, lo, hi, mode, lo + n + hi)
        np.testing.assert_array_equal(padded.compute(), expected)
        kept = pad_axis(da.from_array(x, chunks=(1, chunk, 3)), 1, lo, hi, mode, lo + n)
        np.testing.assert_array_equal(kept.compute(), expected[:, : lo + n])


@pytest.mark.parametrize("mode", PADDING_MODES)
def test_index_runs_rebuild_the_index(mode: str) -> None:
    index = source_index(6, 5, 5, mode)
    rebuilt: list[int] = []
    for kind, first, length in index_runs(index):
        step = {"zero": 0, "up": 1, "down": -1, "repeat": 0}[kind]
        rebuilt += [-1] * length if kind == "zero" else [first + i * step for i in range(length)]
    np.testing.assert_array_equal(rebuilt, index)

"""dilconv.dask.conv1d and conv3d against the in-memory conv1d and conv3d."""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

import dilconv
import dilconv.dask
from dilconv._dask_zarr import zarr_source
from dilconv._spec import PADDING_MODES
from tests.test_dask import chunkings

CONV = {1: dilconv.conv1d, 3: dilconv.conv3d}
LAZY = {1: dilconv.dask.conv1d, 3: dilconv.dask.conv3d}
FORMATS = {1: ("NCW", "NWC"), 3: ("NCDHW", "NDHWC")}


def _run(call: Any) -> Any:
    try:
        return call()
    except ValueError as err:
        return err


def _check(
    rank: int, x: np.ndarray, w: np.ndarray, chunks: Any, bias: Any = None, **options: Any
) -> None:
    """The lazy call on ``x`` in ``chunks`` equals the in-memory call, or fails as it does."""
    expected = _run(lambda: CONV[rank](x, w, bias, **options))
    actual = _run(
        lambda: LAZY[rank](da.from_array(x, chunks=chunks), w, bias, **options).compute(
            scheduler="sync"
        )
    )
    if isinstance(expected, ValueError):
        assert isinstance(actual, ValueError), f"{actual!r} for {options} chunks={chunks}"
        assert str(actual) == str(expected)
        return
    assert not isinstance(actual, ValueError), f"{actual} for {options} chunks={chunks}"
    np.testing.assert_array_equal(actual, expected)


@st.composite
def cases(draw: st.DrawFn, rank: int) -> tuple[np.ndarray, np.ndarray, Any, dict[str, Any]]:
    """Integer input (exact whatever each chunk's method), any layout, padding and stride."""
    data_format = draw(st.sampled_from(FORMATS[rank]))
    size = tuple(draw(st.integers(1, 13 if rank == 1 else 7)) for _ in range(rank))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    batch, c_in, c_out = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 3))
    x_shape = (batch, c_in, *size) if data_format.startswith("NC") else (batch, *size, c_in)
    w_shape = (c_out, c_in, *kernel) if data_format.startswith("NC") else (*kernel, c_in, c_out)
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    x = rng.integers(-9, 10, size=x_shape)
    w = rng.integers(-3, 4, size=w_shape)
    keywords = ["valid", "same", "full", *(["causal"] if rank == 1 else [])]
    padding = draw(
        st.sampled_from(keywords)
        | st.tuples(*[st.tuples(st.integers(0, 4), st.integers(0, 4))] * rank)
    )
    options = dict(
        stride=tuple(draw(st.integers(1, 3)) for _ in range(rank)),
        dilation=tuple(draw(st.integers(1, 4)) for _ in range(rank)),
        padding=padding,
        padding_mode=draw(st.sampled_from(PADDING_MODES)),
        data_format=data_format,
    )
    bias = rng.integers(-5, 6, size=c_out) if draw(st.booleans()) else None
    return x, w, bias, options


@settings(max_examples=40)
@given(data=st.data(), rank=st.sampled_from([1, 3]))
def test_matches_conv1d_and_conv3d_for_random_chunkings(data: st.DataObject, rank: int) -> None:
    x, w, bias, options = data.draw(cases(rank), label="case")
    chunks = data.draw(chunkings(x.shape), label="chunks")
    _check(rank, x, w, chunks, bias, **options)


@pytest.mark.parametrize("mode", PADDING_MODES)
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_padding_modes_and_strides_with_small_chunks(mode: str, stride: int) -> None:
    """Chunks of 1 to 3 samples, smaller than the dilated kernels' halos, in 1-D and 3-D."""
    rng = np.random.default_rng(stride)
    x1, w1 = rng.integers(-9, 10, size=(2, 3, 19)), rng.integers(-3, 4, size=(4, 3, 3))
    _check(1, x1, w1, (1, 3, 2), stride=stride, dilation=4, padding="same", padding_mode=mode)
    x3, w3 = rng.integers(-9, 10, size=(2, 6, 7, 5)), rng.integers(-3, 4, size=(3, 2, 2, 3, 2))
    options = dict(stride=stride, dilation=(2, 1, 3), padding="same", padding_mode=mode)
    _check(3, x3, w3, (1, 2, 3, 2), **options)
    _check(3, x3, w3, (1, 3, 2, 1), **{**options, "padding": ((2, 0), (0, 3), (1, 1))})


@pytest.mark.parametrize("stride", [1, 2])
def test_causal_padding(stride: int) -> None:
    """Keras's causal 1-D padding: the zeros before the signal, chunks of 2 samples."""
    x = np.arange(25) % 7
    w = np.array([1, -2, 3])
    _check(1, x, w, 2, stride=stride, dilation=5, padding="causal")
    _check(1, x[:, None], w[:, None, None], 2, dilation=5, padding="causal", data_format="NWC")


def test_layouts_ranks_groups_and_flip() -> None:
    rng = np.random.default_rng(3)
    options = dict(dilation=2, stride=2, padding="same", padding_mode="reflect", flip=True)
    volume = rng.standard_normal((9, 8, 7))
    w = rng.standard_normal((3, 3, 3))
    y = dilconv.dask.conv3d(da.from_array(volume, chunks=3), w, method="shift_add", **options)
    expected = dilconv.conv3d(volume, w, method="shift_add", **options)
    np.testing.assert_allclose(y.compute(scheduler="sync"), expected, rtol=1e-12, atol=1e-12)
    x = rng.integers(-9, 10, size=(9, 8, 7, 4))
    w4 = rng.integers(-3, 4, size=(3, 3, 3, 2, 6))
    _check(3, x, w4, 3, np.arange(6), groups=2, data_format="NDHWC", **options)
    _check(1, x[0, 0], rng.integers(-3, 4, size=(6, 2, 3)), 3, groups=2, **options)


def test_halo_longer_than_the_axis_and_the_chunks() -> None:
    x = np.arange(4 * 3 * 5).reshape(4, 3, 5)
    w = np.arange(27).reshape(3, 3, 3)
    _check(3, x, w, (1, 2, 2), dilation=4, padding="full")
    _check(3, x, w, (1, 2, 2), dilation=(2, 3, 4), padding="same", padding_mode="replicate")
    _check(1, np.arange(6), np.arange(4), 1, dilation=5, padding="full")


def test_window_larger_than_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("dilconv.dask.output_limit_bytes", lambda: 1000)
    x = da.ones((40, 40, 40), chunks=20)
    with pytest.raises(ValueError, match=r"would read a 21x21x21 window of the input"):
        dilconv.dask.conv3d(x, np.ones((3, 3, 3)), padding="same")
    assert dilconv.dask.conv3d(x, np.ones((3, 3, 3)), padding="same", stride=(20, 20, 20)).shape


def test_from_zarr_is_handed_to_the_window_reads(tmp_path: Any) -> None:
    x = np.arange(9 * 10 * 8).reshape(9, 10, 8) % 11
    z = zarr.create_array(store=str(tmp_path / "v.zarr"), data=x, chunks=(4, 3, 5))
    w = np.ones((3, 2, 3), dtype=np.int64)
    options = dict(dilation=3, padding="same", padding_mode="circular")
    xd = da.from_zarr(z)
    assert zarr_source(xd) is not None
    y = dilconv.dask.conv3d(xd, w, **options)
    assert len(y.dask) == y.npartitions + 1  # one task per chunk and the store
    np.testing.assert_array_equal(y.compute(scheduler="sync"), dilconv.conv3d(x, w, **options))
    signal = zarr.create_array(store={}, data=np.arange(30), chunks=(7,))
    y1 = dilconv.dask.conv1d(da.from_zarr(signal), np.array([1, 1]), dilation=4, padding="causal")
    assert len(y1.dask) == y1.npartitions + 1
    expected = dilconv.conv1d(np.arange(30), np.array([1, 1]), dilation=4, padding="causal")
    np.testing.assert_array_equal(y1.compute(scheduler="sync"), expected)


@pytest.mark.parametrize(
    ("rank", "x_shape", "w_shape", "options"),
    [
        (1, (8,), (3,), {"padding": "causal", "padding_mode": "reflect", "dilation": 9}),
        (3, (8, 8, 8), (3, 3, 3), {"padding": "causal"}),
        (3, (8, 8, 8), (3, 3), {}),
        (3, (8, 8, 8), (3, 3, 3), {"stride": (1, 0, 1)}),
        (1, (8,), (3,), {"method": "magic"}),
        (1, (8,), (3,), {"data_format": "NCHW"}),
    ],
)
def test_errors_match_the_in_memory_calls(
    rank: int, x_shape: tuple[int, ...], w_shape: tuple[int, ...], options: dict[str, Any]
) -> None:
    x, w = np.ones(x_shape), np.ones(w_shape)
    expected = _run(lambda: CONV[rank](x, w, **options))
    actual = _run(lambda: LAZY[rank](da.from_array(x), w, **options))
    assert isinstance(expected, ValueError)
    assert type(actual) is type(expected)
    assert str(actual) == str(expected)

"""The compiled NCHW <-> NHWC move (``dilconv._native.channels``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dilconv
from dilconv._methods import _blocked_folded
from dilconv._native import calls, channels, kernels
from tests.harness import conv2d_through_nhwc, in_threads

pytest.importorskip("llvmlite.binding")  # the move runs once LLVM is loaded


@pytest.fixture
def small_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channels, "MIN_ELEMENTS", 1)
    monkeypatch.setattr(channels, "SWAP_MIN_ELEMENTS", 1)
    return


SHAPES = [(2, 5, 19, 23), (1, 3, 255, 257), (3, 16, 8, 8), (1, 17, 33, 1)]


@pytest.mark.parametrize("shape", SHAPES + [(2, 32, 16, 16), (1, 48, 8, 32)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("stream", [False, True])
def test_both_ways_equal_numpy_exactly(
    shape: tuple[int, ...],
    dtype: type,
    threads: int,
    stream: bool,
    small_threshold: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whole tiles, last rows and columns, one row; one thread or two;
    stores through the caches or past them (aligned rows of 16, 32 or 48 channels, or
    256 pixels, and the others, which fall back to plain stores)."""
    monkeypatch.setattr(channels, "streams", lambda nbytes: stream)
    a = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    with dilconv.config_context(threads=threads), calls.checked():
        last = channels.move_channels(a, last=True)
        assert last is not None
        assert last.flags.c_contiguous
        np.testing.assert_array_equal(last, a.transpose(0, 2, 3, 1))
        back = channels.move_channels(last, last=False)
        assert back is not None
        np.testing.assert_array_equal(back, a)


@pytest.mark.parametrize("shape", [(2, 5, 19, 23), (1, 16, 300, 7), (3, 33, 1000)])
@pytest.mark.parametrize("threads", [1, 2])
def test_moves_back_in_runs_of_pixels_equal_numpy_exactly(
    shape: tuple[int, ...], threads: int, small_threshold: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Back to channels first, each thread's pixels in runs of 64 (RUN_BYTES small),
    the last run shorter, several images: every element where NumPy puts it."""
    monkeypatch.setattr(channels, "RUN_BYTES", 1)
    a = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    last = np.ascontiguousarray(np.moveaxis(a, 1, -1))
    with dilconv.config_context(threads=threads), calls.checked():
        back = channels.move_channels(last, last=False)
    assert back is not None
    np.testing.assert_array_equal(back, a)


def test_volumes_and_signals_move_too(small_threshold: None) -> None:
    for shape in [(2, 3, 4, 5, 6), (2, 7, 300)]:
        a = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
        last = channels.move_channels(a, last=True)
        assert last is not None
        np.testing.assert_array_equal(last, np.moveaxis(a, 1, -1))
        np.testing.assert_array_equal(channels.move_channels(last, last=False), a)


@pytest.mark.parametrize(
    "a",
    [
        np.ones((1, 4, 8, 8), np.int64),  # not a dtype it moves
        np.ones((1, 8, 8, 4), np.float32).transpose(0, 3, 1, 2),  # not C-contiguous
        np.ones((8, 8), np.float32),  # no channel axis
    ],
)
def test_it_declines_what_numpy_should_move(a: np.ndarray, small_threshold: None) -> None:
    assert channels.move_channels(a, last=True) is None


@pytest.mark.parametrize("shape", [(1, 1, 300), (3, 1, 17, 19), (2, 1, 2, 3, 40), (4, 9, 1, 1)])
def test_one_channel_or_one_pixel_is_a_reshape_not_a_copy(
    shape: tuple[int, ...], small_threshold: None
) -> None:
    """Declined, so NumPy's transposed view, already C-contiguous, is used as it is."""
    a = np.ones(shape, np.float32)
    assert channels.move_channels(a, last=True) is None
    assert channels.move_channels(np.moveaxis(a, 1, -1).copy(), last=False) is None


def test_one_channel_signals_and_images_reach_the_engine_without_a_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """NCW and NCHW arrays of one channel (above the move's threshold) pass to the
    engine as the caller's array itself, and come back as the NHWC call's values."""
    import importlib

    from dilconv import _engine_nd

    rng = np.random.default_rng(0)
    seen: list[np.ndarray] = []
    for module, name in [
        (_engine_nd, "to_channels_last"),
        (importlib.import_module("dilconv.conv"), "to_canonical"),
    ]:
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda a, s, f=original: seen.append(f(a, s)) or seen[-1])
    x = rng.standard_normal((1, 1, 2**16)).astype(np.float32)
    y = dilconv.conv1d(x, np.ones((1, 1, 3), np.float32), dilation=4, padding="same")
    assert np.shares_memory(seen[-1], x)
    nwc = dilconv.conv1d(x.reshape(1, -1, 1), np.ones((3, 1, 1), np.float32), dilation=4,
                         padding="same", data_format="NWC")  # fmt: skip
    np.testing.assert_array_equal(y.reshape(-1), nwc.reshape(-1))
    image = rng.standard_normal((2, 1, 256, 300)).astype(np.float32)
    y2 = dilconv.conv2d(image, np.ones((1, 1, 3, 3), np.float32), dilation=2, padding="same")
    assert np.shares_memory(seen[-1], image)
    nhwc = dilconv.conv2d(image.transpose(0, 2, 3, 1), np.ones((3, 3, 1, 1), np.float32),
                          dilation=2, padding="same", data_format="NHWC")  # fmt: skip
    np.testing.assert_array_equal(y2, nhwc.transpose(0, 3, 1, 2))


def test_small_arrays_stay_with_numpy() -> None:
    assert channels.move_channels(np.ones((1, 2, 8, 8), np.float32), last=True) is None


def test_read_only_input(small_threshold: None) -> None:
    a = np.random.default_rng(1).standard_normal((1, 6, 20, 20)).astype(np.float32)
    a.flags.writeable = False
    np.testing.assert_array_equal(channels.move_channels(a, last=True), a.transpose(0, 2, 3, 1))


def transpose_checked(source: np.ndarray, target: np.ndarray, stream: bool, *sizes: int) -> None:
    """The compiled transpose of ``rows, columns, source_row, target_row`` (``sizes``)
    from ``source`` into ``target`` (first filled with -7), in checked mode."""
    rows, columns, source_row, target_row = sizes
    target.fill(-7.0)
    move = kernels.transpose(source.dtype, stream).call(
        source=calls.Slot("source"),
        target=calls.Slot("target"),
        rows=rows,
        columns=columns,
        source_row=source_row,
        target_row=target_row,
    )
    with calls.checked():
        calls.Binding(source=source, target=target).run([move])


@settings(max_examples=60)
@given(
    rows=st.integers(0, 70),
    columns=st.integers(0, 70),
    source_pad=st.integers(0, 40),
    target_pad=st.integers(0, 40),
    target_shift=st.integers(0, 16),
    dtype=st.sampled_from([np.float32, np.float64]),
    stream=st.booleans(),
)
def test_the_kernel_transposes_any_block_at_any_pitch(
    rows: int,
    columns: int,
    source_pad: int,
    target_pad: int,
    target_shift: int,
    dtype: type,
    stream: bool,
) -> None:
    """Whole tiles, the last rows and columns, either row pitch the longer (the two
    loop orders), nothing written outside the block; stores past the caches where the
    target and its row pitch are whole vectors, plain stores where they are not (a
    target a few elements past a cache line)."""
    source_row, target_row = columns + source_pad, rows + target_pad
    rng = np.random.default_rng(rows * 71 + columns)
    source = rng.standard_normal(max(1, rows * source_row)).astype(dtype)
    size = max(1, columns * target_row)
    target = calls.aligned_empty(size + target_shift, np.dtype(dtype))[target_shift:]
    transpose_checked(source, target, stream, rows, columns, source_row, target_row)
    expected = np.full_like(target, -7.0)
    if rows and columns:
        block = source[: rows * source_row].reshape(rows, source_row)[:, :columns]
        view = expected[: columns * target_row].reshape(columns, target_row)
        view[:, :rows] = block.T
    np.testing.assert_array_equal(target, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("rows", "columns"), [(16, 16), (48, 37), (50, 70), (3, 40)])
def test_stores_past_the_caches_on_aligned_rows(rows: int, columns: int, dtype: type) -> None:
    """A target on a cache line with rows of whole lines: every whole tile is stored
    past the caches, the rest as usual; the same values either way."""
    source_row, target_row = columns + 5, 64
    source = np.random.default_rng(rows).standard_normal(rows * source_row).astype(dtype)
    results = []
    for stream in (False, True):
        target = calls.aligned_empty(columns * target_row, np.dtype(dtype))
        transpose_checked(source, target, stream, rows, columns, source_row, target_row)
        results.append(target.reshape(columns, target_row))
    np.testing.assert_array_equal(results[1], results[0])
    np.testing.assert_array_equal(
        results[1][:, :rows], source.reshape(rows, source_row)[:, :columns].T
    )
    assert (results[1][:, rows:] == -7.0).all()


def test_large_moves_store_past_the_caches_small_ones_do_not() -> None:
    from dilconv._native import last_level_cache

    assert channels.streams(last_level_cache.size())
    assert not channels.streams(2**20)


def test_checked_mode_refuses_a_call_past_its_arrays() -> None:
    kernel = kernels.transpose(np.dtype(np.float32))
    source, target = np.ones(64, np.float32), np.empty(64, np.float32)
    bad = kernel.call(
        source=calls.Slot("source"),
        target=calls.Slot("target"),
        rows=8,
        columns=9,  # 72 elements of 64
        source_row=9,
        target_row=8,
    )
    with calls.checked(), pytest.raises(RuntimeError, match="transpose"):
        calls.Binding(source=source, target=target).run([bad])


def test_nchw_calls_agree_with_nhwc_from_many_threads() -> None:
    """conv2d on NCHW arrays (through the move, both ways) from 6 threads at once."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 16, 64, 64)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    want = dilconv.conv2d(
        np.ascontiguousarray(x.transpose(0, 2, 3, 1)),
        np.ascontiguousarray(w.transpose(2, 3, 1, 0)),
        padding="same",
        dilation=2,
        data_format="NHWC",
        method="blocked",
    ).transpose(0, 3, 1, 2)
    errors: list[str] = []

    def work() -> None:
        for _ in range(10):
            got = dilconv.conv2d(x, w, padding="same", dilation=2, method="blocked")
            if not np.array_equal(got, want):
                errors.append("differs")

    in_threads(work, 6)
    assert not errors


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("shape", [(7, 5, 3, 2), (16, 3, 1, 1), (4, 6, 3, 3)])
def test_pytorch_weights_to_hwio_exactly(
    shape: tuple[int, ...], flip: bool, small_threshold: None
) -> None:
    """OIHW weights, moved by the compiled transpose as one matrix, are the HWIO
    array NumPy's transposed copy gives (flipped for the transposed convolution)."""
    from dilconv._layout import weight_to_canonical
    from dilconv._spec import make_spec

    w = np.random.default_rng(2).standard_normal(shape)
    spec = make_spec((1, shape[1], 9, 9), shape, dtypes=[np.float64])
    if flip:
        spec = dataclasses.replace(spec, flip=True)
    want = w.transpose(2, 3, 1, 0)
    want = want[::-1, ::-1] if flip else want
    got = weight_to_canonical(w, spec)
    np.testing.assert_array_equal(got, want)
    assert got.flags.c_contiguous


@pytest.mark.parametrize("flip", [False, True])
def test_packing_methods_take_the_moved_weights_as_a_view(
    flip: bool, small_threshold: None
) -> None:
    """``strided=True``: the moved OIHW weights come back as an HWIO view of the
    transpose's ``(C, kh, kw, O)`` array (flipped: a contiguous copy), equal to the
    contiguous HWIO."""
    from dilconv._layout import channel_major, weight_to_canonical
    from dilconv._spec import make_spec

    w = np.random.default_rng(3).standard_normal((6, 4, 3, 3))
    spec = make_spec((1, 4, 9, 9), w.shape, dtypes=[np.float64], flip=flip)
    got = weight_to_canonical(w, spec, strided=True)
    np.testing.assert_array_equal(got, weight_to_canonical(w, spec))
    assert channel_major(got) is not flip
    assert got.flags.c_contiguous is flip


@pytest.mark.parametrize("method", ["blocked", "winograd"])
@pytest.mark.parametrize("channels_in", [8, 600])  # read in place, and moved (512 or more)
def test_packing_from_the_weight_view_matches_nhwc_bit_for_bit(
    method: str, channels_in: int, small_threshold: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NCHW calls pack the weights from the transpose's view (``blocked``'s packing,
    Winograd's transform with the view's strides): the NHWC call's answer exactly
    (``blocked``'s row tiles: its 20 outputs are not folded here, see
    :mod:`dilconv._methods._blocked_folded`, whose sums come in another order)."""
    monkeypatch.setattr(_blocked_folded, "pays", lambda spec: False)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, channels_in, 11, 13)).astype(np.float32)
    w = rng.standard_normal((20, channels_in, 3, 3)).astype(np.float32)
    for options in ({"padding": "same", "dilation": 2}, {"padding": 1, "dilation": 1}):
        got = dilconv.conv2d(x, w, method=method, **options)
        np.testing.assert_array_equal(got, conv2d_through_nhwc(x, w, method=method, **options))


@pytest.mark.parametrize("shape", [(9, 2048, 256), (9, 37, 300), (1, 5, 3), (4, 200, 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_swapping_the_last_axes_equals_numpy_exactly(
    shape: tuple[int, ...], dtype: type, reverse: bool, threads: int, small_threshold: None
) -> None:
    """Runs of rows, the blocks in order or reversed (a transposed kernel's taps)."""
    a = np.random.default_rng(2).standard_normal(shape).astype(dtype)
    with dilconv.config_context(threads=threads), calls.checked():
        got = channels.swap_last_axes(a, reverse_first=reverse)
    if min(shape[1:]) == 1:
        assert got is None  # a reshape
        return
    assert got is not None
    assert got.flags.c_contiguous
    np.testing.assert_array_equal(got, (a[::-1] if reverse else a).transpose(0, 2, 1))


def test_the_transposed_kernel_by_the_compiled_move_equals_numpy_exactly() -> None:
    """``conv2d_grad_input``'s kernel of ``aspp`` (19 MiB): taps reversed, each transposed."""
    from dilconv._transpose.correlate import transposed_weight

    w = np.random.default_rng(3).standard_normal((3, 3, 2048, 256)).astype(np.float32)
    got = transposed_weight(w, 1)
    np.testing.assert_array_equal(got, w[::-1, ::-1].transpose(0, 1, 3, 2))
    grouped = transposed_weight(w[:, :, :, :8], 2)  # two groups: NumPy's copy
    assert grouped.shape == (3, 3, 4, 4096)

"""``blocked`` on the caller's NCHW arrays in place (dilconv._methods._blocked_planar)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import dilconv
from dilconv import _select
from dilconv._methods import _blocked_bands, _blocked_planar, _winograd_nchw, blocked
from dilconv._spec import make_spec
from tests.harness import conv2d_through_nhwc, count_calls
from tests.tolerance import assert_close

pytestmark = pytest.mark.skipif(
    blocked.refusal(make_spec((1, 1, 4, 4), (1, 1, 1, 1), dtypes=[np.float32]).lowered())
    is not None,
    reason="llvmlite cannot compile here",
)


@pytest.fixture
def planar_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the calls that took the in-place NCHW route."""
    return count_calls(monkeypatch, _blocked_planar, "conv_channels_first")


@pytest.fixture
def small_weight_blocks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Blocks of 64 KiB of weights; nothing planned with them outlives the test."""
    cached = (blocked.plan, blocked.tile_calls, _blocked_bands.band_calls)
    for fn in cached:
        fn.cache_clear()
    monkeypatch.setattr(blocked, "WEIGHT_BLOCK_BYTES", 2**16)
    yield
    for fn in cached:
        fn.cache_clear()


@st.composite
def nchw_calls(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, Any]]:
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    c = groups * draw(st.integers(1, 12))
    o = groups * draw(st.one_of(st.integers(1, 16), st.integers(17, 70)))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    h = draw(st.integers(1, 14)) + dh * (kh - 1)
    w = draw(st.integers(1, 70)) + dw * (kw - 1)
    padding = draw(
        st.one_of(
            st.sampled_from(["valid", "same"]),
            st.integers(0, 6),
            st.tuples(
                st.tuples(st.integers(0, 5), st.integers(0, 5)),
                st.tuples(st.integers(0, 9), st.integers(0, 9)),
            ),
        )
    )
    stride_h = 1 if padding == "same" else draw(st.integers(1, 3))
    stride_w = 1 if padding == "same" else draw(st.sampled_from([1, 1, 2, 3]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    batch = draw(st.sampled_from([None, 1, 2]))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((c, h, w) if batch is None else (batch, c, h, w)).astype(dtype)
    wt = rng.standard_normal((o, c // groups, kh, kw)).astype(dtype)
    bias = rng.standard_normal(o).astype(dtype) if draw(st.booleans()) else None
    options = {
        "stride": (stride_h, stride_w),
        "dilation": (dh, dw),
        "padding": padding,
        "groups": groups,
    }
    return x, wt, bias, options


@given(nchw_calls(), st.booleans())
def test_in_place_nchw_against_the_oracle(
    call: tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, Any]], tiles_only: bool
) -> None:
    """Any shape, group count, dilation, padding and stride, batched or not, with or
    without bias, against the loop oracle; the route runs (it is not bypassed). With
    ``tiles_only`` the tile loop runs by bands even where the planar loop would."""
    x, w, bias, options = call
    runs: list[int] = []
    real, fits = _blocked_planar.conv_channels_first, _blocked_planar.planar_fits
    _blocked_planar.conv_channels_first = lambda *a: (runs.append(1), real(*a))[1]  # type: ignore[assignment]
    if tiles_only:
        _blocked_planar.planar_fits = lambda spec: False  # type: ignore[assignment]
    try:
        got = dilconv.conv2d(x, w, bias, method="blocked", **options)
    finally:
        _blocked_planar.conv_channels_first = real  # type: ignore[assignment]
        _blocked_planar.planar_fits = fits  # type: ignore[assignment]
    want = dilconv.conv2d(x, w, bias, method="direct", **options)
    assert got.shape == want.shape
    assert got.dtype == want.dtype
    assert got.flags.c_contiguous
    scale = dilconv.conv2d(  # the rounding errors' scale: the sums of magnitudes
        np.abs(x), np.abs(w), None if bias is None else np.abs(bias), method="direct", **options
    )
    assert_close(got, want, magnitude=scale, context=f"{x.shape} {w.shape} {options}")
    assert runs == [1]


def test_integer_values_are_exact(planar_runs: list[int]) -> None:
    """Small integers sum exactly in float32: the result equals the oracle bit for bit,
    tiles of whole vectors, masked tails and edge runs alike."""
    rng = np.random.default_rng(2)
    x = rng.integers(-3, 4, (2, 21, 37, 75)).astype(np.float32)
    w = rng.integers(-3, 4, (21, 21, 3, 3)).astype(np.float32)
    for d in (1, 2, 16):
        got = dilconv.conv2d(x, w, padding="same", dilation=d, method="blocked")
        np.testing.assert_array_equal(got, dilconv.conv2d(x, w, padding="same", dilation=d,
                                                          method="direct"))  # fmt: skip
    assert len(planar_runs) == 3


@pytest.mark.parametrize(
    ("channels", "outs", "options"),
    [
        (64, 64, {"padding": "same", "dilation": 3}),  # more outputs than one planar pass
        (21, 21, {"stride": 2, "dilation": 2}),  # strided rows: not contiguous runs
        (240, 64, {"padding": 1}),  # blocks of input channels: later ones add
    ],
)
def test_the_tile_loop_writes_nchw_by_bands_exactly(
    planar_runs: list[int],
    channels: int,
    outs: int,
    options: dict,
    small_weight_blocks: None,
) -> None:
    """Where the planar loop does not run, ``blocked``'s tile loop reads the NCHW input
    in place and writes the result band by band (a later block of input channels
    adding to the band): small integers sum exactly, so bit for bit. Blocks of 64 KiB
    of weights, so that 240 channels take several at any vector width (576-2304 bytes
    a channel)."""
    rng = np.random.default_rng(5)
    x = rng.integers(-3, 4, (2, channels, 9, 29)).astype(np.float32)
    w = rng.integers(-3, 4, (outs, channels, 3, 3)).astype(np.float32)
    lowered = make_spec(x.shape, w.shape, dtypes=[np.float32], **options).lowered()
    assert not _blocked_planar.planar_fits(lowered)
    if channels == 240:  # later blocks of input channels add to the band
        assert len(blocked.plan(lowered).in_blocks) >= 2
    got = dilconv.conv2d(x, w, method="blocked", **options)
    np.testing.assert_array_equal(got, dilconv.conv2d(x, w, method="direct", **options))
    assert planar_runs == [1]


def test_many_bands_cover_every_row_of_every_image(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bands of a few rows (the last one shorter), taken by two threads from one queue,
    over a batch of three images: every output written once, exactly."""
    monkeypatch.setattr(_blocked_bands, "BAND_BYTES", 3 * 31 * 40 * 8)
    _blocked_bands.band_calls.cache_clear()
    rng = np.random.default_rng(6)
    x = rng.integers(-3, 4, (3, 7, 17, 31)).astype(np.float64)
    w = rng.integers(-3, 4, (40, 7, 3, 2)).astype(np.float64)
    options = {"padding": ((2, 1), (0, 3)), "dilation": (2, 3)}
    lowered = make_spec(x.shape, w.shape, dtypes=[np.float64], **options).lowered()
    try:
        assert _blocked_bands.band_rows(lowered) == 3
        assert len(_blocked_bands.band_calls(lowered).steps) == 6  # 16 rows: 5 bands of 3, one of 1
        with dilconv.config_context(threads=2):
            got = dilconv.conv2d(x, w, method="blocked", **options)
    finally:
        _blocked_bands.band_calls.cache_clear()
    np.testing.assert_array_equal(got, dilconv.conv2d(x, w, method="direct", **options))


@pytest.mark.parametrize(
    ("x_of", "options"),
    [
        (lambda x: x[:, :, :, ::-1], {}),  # not C-contiguous
        (lambda x: x, {"padding": 2, "padding_mode": "reflect"}),  # padded by copying
        (lambda x: x.astype(np.float16), {}),  # computed in another dtype
    ],
)
def test_other_calls_move_the_layout(planar_runs: list[int], x_of: Any, options: dict) -> None:
    rng = np.random.default_rng(3)
    x = x_of(rng.standard_normal((1, 4, 12, 20)).astype(np.float32))
    w = rng.standard_normal((5, 4, 3, 3)).astype(np.float32)
    got = dilconv.conv2d(x, w, method="blocked", **options)
    scale = dilconv.conv2d(np.abs(x), np.abs(w), method="direct", **options)
    assert_close(got, dilconv.conv2d(x, w, method="direct", **options), magnitude=scale)
    assert planar_runs == []


@pytest.mark.parametrize("method", ["blocked", "winograd"])
def test_many_input_channels_move_the_layout(
    monkeypatch: pytest.MonkeyPatch, planar_runs: list[int], method: str
) -> None:
    """From IN_PLACE_CHANNELS input channels per group, the in-place routes step aside:
    the arrays move to NHWC and back, with the NHWC call's answer bit for bit."""
    winograd_runs = count_calls(monkeypatch, _winograd_nchw, "conv_channels_first")
    rng = np.random.default_rng(8)
    many = _select.IN_PLACE_CHANNELS
    for c, in_place in ((many - 1, True), (many, False)):
        x = rng.standard_normal((1, c, 6, 7)).astype(np.float32)
        w = rng.standard_normal((5, c, 3, 3)).astype(np.float32)
        options = {"padding": "same", "dilation": 2}
        spec = make_spec(x.shape, w.shape, dtypes=[np.float32], **options)
        assert _select.reads_in_place(spec) is in_place
        runs = planar_runs if method == "blocked" else winograd_runs
        before = len(runs)
        got = dilconv.conv2d(x, w, method=method, **options)
        assert len(runs) - before == int(in_place)
        np.testing.assert_array_equal(got, conv2d_through_nhwc(x, w, method=method, **options))
    # groups: the channels one output reads count, not the whole input's
    grouped = make_spec((1, 2 * many - 2, 6, 7), (4, many - 1, 3, 3), groups=2,
                        dtypes=[np.float32])  # fmt: skip
    assert _select.reads_in_place(grouped)


def test_with_many_input_channels_the_model_charges_every_method_the_moves() -> None:
    spec = make_spec((1, 2048, 65, 65), (256, 2048, 3, 3), padding="same", dilation=12,
                     dtypes=[np.float32])  # fmt: skip
    assert not _select.reads_in_place(spec)
    lowered = spec.lowered()
    moves = _select.layout_seconds(spec)

    def modelled(name: str) -> float:
        return _select.estimate_seconds(name, lowered) + moves

    chosen = _select.cheapest_for_caller(spec)
    assert chosen == min(_select.candidates(lowered), key=modelled)


def test_auto_weighs_the_layout_moves() -> None:
    """In NCHW the model charges every algorithm the two moves but blocked's in-place
    routes (nothing) and winograd's staging (a share); one channel moves for free;
    NHWC and 2-D calls are untouched."""
    nchw = make_spec((1, 21, 256, 256), (21, 21, 3, 3), padding="same", dtypes=[np.float32])
    nhwc = make_spec((1, 256, 256, 21), (3, 3, 21, 21), padding="same", data_format="NHWC",
                     dtypes=[np.float32])  # fmt: skip
    one = make_spec((1, 1, 256, 256), (1, 1, 3, 3), padding="same", dtypes=[np.float32])
    assert _select.moves_layout(nchw)
    assert not _select.moves_layout(nhwc)
    assert _select.layout_seconds(one) == 0.0
    moved = 2 * 21 * 256 * 256 * 4 / _select.COST["layout"]
    assert _select.layout_seconds(nchw) == pytest.approx(moved)
    lowered = nchw.lowered()
    names = _select.candidates(lowered)
    chosen = _select.cheapest_for_caller(nchw)

    def modelled(name: str) -> float:
        moves = _select.layout_seconds(nchw)
        extra = {"blocked": 0.0, "winograd": _select.STAGED_SHARE * moves}.get(name, moves)
        return _select.estimate_seconds(name, lowered) + extra

    assert chosen == min(names, key=modelled)
    assert _select.cheapest_for_caller(nhwc) == _select.cheapest(lowered)


def test_threads_share_the_rows_and_one_row_by_its_tiles() -> None:
    """Shares cut the rows, or a single row's tiles (a 1-row image), and cover them all."""
    spec = make_spec((1, 8, 1, 4000), (8, 8, 1, 3), padding="same", dtypes=[np.float32])
    shares = _blocked_planar.tile_calls(spec.lowered(), 2)
    assert len(shares) == 2
    assert all(shares)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 8, 1, 4000)).astype(np.float32)
    w = rng.standard_normal((8, 8, 1, 3)).astype(np.float32)
    with dilconv.config_context(threads=2):
        got = dilconv.conv2d(x, w, padding="same", method="blocked")
    scale = dilconv.conv2d(np.abs(x), np.abs(w), padding="same", method="direct")
    assert_close(got, dilconv.conv2d(x, w, padding="same", method="direct"), magnitude=scale)

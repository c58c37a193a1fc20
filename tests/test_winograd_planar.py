"""``winograd`` on the caller's NCHW arrays with vectors of tiles (_winograd_planar)."""

from __future__ import annotations

import tracemalloc
from typing import Any

import numpy as np
import pytest
from hypothesis import given

import dilconv
from dilconv import _select
from dilconv._methods import _winograd_nchw, _winograd_planar, winograd
from dilconv._native import calls, last_level_cache, winograd_planar
from dilconv._spec import make_spec
from tests.harness import (
    assert_nchw_winograd_exact,
    count_calls,
    in_threads,
    square_layer,
    winograd_both_layouts,
)
from tests.strategies import Case, winograd_nchw_cases

pytestmark = pytest.mark.skipif(
    winograd.refusal(make_spec((1, 1, 4, 4), (1, 1, 3, 3), dtypes=[np.float32]).lowered())
    is not None,
    reason="llvmlite cannot compile here",
)


@pytest.fixture
def planar_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every NCHW Winograd call runs vectors of tiles; counts them."""
    monkeypatch.setattr(_winograd_planar, "pays", lambda spec: True)
    return count_calls(monkeypatch, _winograd_planar, "conv_channels_first")


def lowered(x: np.ndarray, o: int, **options: Any) -> Any:
    """The lowered spec of an NCHW call of ``x`` with ``o`` output channels."""
    w_shape = (o, x.shape[-3], 3, 3)
    return make_spec(x.shape, w_shape, dtypes=[x.dtype], **options).lowered()


@given(case=winograd_nchw_cases(channels=12, outputs=30, width=90, column_dilation=20))
def test_vectors_of_tiles_equal_the_nhwc_route_bit_for_bit_and_the_oracle(case: Case) -> None:
    """The same transforms, products and direct tiles on the same values, in another
    order of lanes: the result is the NHWC route's exactly, and within tolerance of
    the oracle; in checked mode every call stays inside its arrays."""
    runs: list[int] = []
    with pytest.MonkeyPatch.context() as patch, calls.checked():
        patch.setattr(_winograd_planar, "pays", lambda spec: runs.append(1) or True)
        assert_nchw_winograd_exact(case.x, case.w, **case.options)
    assert runs  # the route was taken


@pytest.mark.parametrize("d", [1, 2, 3, 5, 7, 8, 12, 15, 16, 17, 33])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_tile_is_in_one_lane_and_every_output_stored_once(d: int, dtype: type) -> None:
    """The vectors of a row hold each whole pair once; the lanes stored cover exactly
    the pairs' outputs, each once; the input lanes read lie inside the row."""
    x = np.zeros((1, 3, 9, 150), dtype=dtype)
    spec = lowered(x, 4, dilation=(1, d), padding="same")
    lanes = _winograd_planar.lanes(spec)
    spread = _winograd_planar.spread(spec)
    xs, _ = winograd.whole_pairs(spec.out_hw[1], d)
    offsets = np.array(winograd_planar.lane_offsets(lanes, spread))
    sources = np.array(winograd_planar.output_sources(lanes, spread) if spread else [])
    tiles: list[int] = []
    stored: list[int] = []
    k = np.arange(lanes)
    for entry in _winograd_planar.row_vectors(spec):
        in_col, x0, _, held = (int(v) for v in entry[:4])
        held_lanes = k[(held >> k) & 1 == 1]
        tiles.extend((x0 + offsets[held_lanes]).tolist())
        if spread:
            for half, bits in enumerate(entry[12:14]):
                m = k[(int(bits) >> k) & 1 == 1] + half * lanes
                assert set((sources[m] % lanes).tolist()) <= set(held_lanes.tolist())
                stored.extend((x0 + m).tolist())
        else:
            stored.extend((x0 + held_lanes).tolist())
            stored.extend((x0 + d + held_lanes).tolist())
        for b in range(4):
            lo = int(entry[4 + b])
            on = in_col + d * b + k[(lo >> k) & 1 == 1]
            assert ((on >= 0) & (on < spec.in_hw[1])).all()
    assert sorted(tiles) == xs.tolist()
    assert sorted(stored) == sorted(xs.tolist() + (xs + d).tolist())


def test_a_huge_dilation_plans_in_little_memory() -> None:
    """Planning a row whose dilation dwarfs it allocates nothing of the dilation's size
    (auto asks every algorithm's workspace, this one's bands included)."""
    spec = lowered(np.zeros((1, 4, 16, 40), np.float32), 4, dilation=(1, 10**9), padding="same")
    _winograd_planar.row_vectors.cache_clear()
    tracemalloc.start()
    try:
        vectors = _winograd_planar.row_vectors(spec)
        need = winograd.workspace_bytes(spec)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(vectors) == 0  # no whole pair in 40 columns
    assert not _winograd_planar.pays(spec)
    assert peak < 2**20
    assert need < 2**24


def test_lane_tables() -> None:
    assert winograd_planar.lane_offsets(16, 1) == tuple(range(0, 32, 2))
    assert winograd_planar.lane_offsets(16, 4)[:8] == (0, 1, 2, 3, 8, 9, 10, 11)
    assert winograd_planar.output_sources(8, 2) == (0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13,
                                                    6, 7, 14, 15)  # fmt: skip
    with pytest.raises(ValueError, match="spread must be in"):
        winograd_planar.planar_transform(np.dtype(np.float32), 16, 16, "input")
    with pytest.raises(ValueError, match="only the output transform"):
        winograd_planar.planar_transform(np.dtype(np.float32), 16, 0, "input", stream=True)


@pytest.mark.parametrize(
    ("shape", "d", "dtype"),
    [
        ((2, 16, 20, 256), 2, np.float32),  # whole rows of whole vectors
        ((1, 8, 24, 100), 3, np.float32),  # rows off the vectors: masked stores
        ((1, 8, 19, 70), 16, np.float32),  # a vector within a group
        ((1, 12, 30, 64), 1, np.float64),
    ],
)
def test_outputs_stored_past_the_caches_equal_the_nhwc_route(
    shape: tuple[int, ...],
    d: int,
    dtype: type,
    planar_runs: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Large calls store whole, aligned output vectors past the caches (small ones
    here, made to); the others as before."""
    monkeypatch.setattr(_winograd_planar, "streams", lambda spec: True)
    _winograd_planar.plan.cache_clear()
    try:
        x, w = square_layer(shape, dtype, seed=2)
        with calls.checked():
            nchw, nhwc = winograd_both_layouts(x, w, dilation=d, padding="same")
        np.testing.assert_array_equal(nchw, nhwc)
        assert planar_runs == [1]
        last = _winograd_planar.plan(lowered(x, shape[1], dilation=d, padding="same")).steps[0][-1]
        assert "stream=True" in last.kernel.label
    finally:
        _winograd_planar.plan.cache_clear()


def test_an_output_row_off_the_vectors_is_stored_in_place() -> None:
    """A result one element past a vector's start: the stream variant checks each
    store's alignment and stores those that are off as before."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 8, 20, 64)).astype(np.float32)
    w = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
    spec = lowered(x, 8, padding="same")
    planned = _winograd_planar.plan(spec)
    out = calls.aligned_empty(8 * 20 * 64 + 1, np.float32)[1:]
    u, _ = _winograd_planar.planar_weights(w, spec, taps=False)
    cb, width = 8, _winograd_planar.lanes(spec)
    stream = winograd_planar.planar_transform(np.dtype(np.float32), width, 1, "output", True)
    assert stream is not None
    bound = calls.Binding(
        x=x[0],
        y=out,
        U=u,
        V=calls.aligned_empty(16 * _winograd_planar.position(spec, cb, planned.plane), np.float32),
        M=calls.aligned_empty(16 * _winograd_planar.position(spec, 8, planned.plane), np.float32),
        flags=np.zeros(width, np.float32),
    )
    for step in planned.steps:
        bound.run(step)
    want = dilconv.conv2d(x, w.transpose(3, 2, 0, 1), padding="same", method="winograd")
    np.testing.assert_array_equal(out.reshape(8, 20, 64), want[0])


def test_bands_of_part_rows(planar_runs: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    """A row of tiles longer than a band is cut between vectors."""
    monkeypatch.setattr(_winograd_planar, "band_tiles", lambda spec: 16)
    _winograd_planar.plan.cache_clear()
    try:
        rng = np.random.default_rng(5)
        x = rng.standard_normal((2, 17, 11, 161)).astype(np.float32)
        w = rng.standard_normal((17, 17, 3, 3)).astype(np.float32)
        for d in ((2, 3), (1, 1), (3, 17)):
            nchw, nhwc = winograd_both_layouts(x, w, dilation=d, padding="same")
            np.testing.assert_array_equal(nchw, nhwc)
            bands = _winograd_planar.bands(lowered(x, 17, dilation=d, padding="same"))
            assert any(band.v0 > 0 for band in bands)
    finally:
        _winograd_planar.plan.cache_clear()


def test_bands_fit_a_core_or_hold_many_channels(monkeypatch: pytest.MonkeyPatch) -> None:
    """A band's V, M, input rows and output rows fit 90% of a core's cache beside
    U where that holds CORE_TILES tiles, else bands are as long as on the NHWC route
    (with 128 channels and more, measured faster: NOTES)."""
    spec = lowered(np.zeros((1, 64, 256, 256), np.float32), 64, padding="same")
    monkeypatch.setattr(last_level_cache, "core_size", lambda: 2 * 2**20)
    per_tile = (16 * 128 + 8 * 64 + 4 * 64) * 4
    assert _winograd_planar.band_tiles(spec) == int(0.9 * 2**21 - 16 * 64 * 64 * 4) // per_tile
    assert _winograd_planar.band_tiles(spec) == 144
    monkeypatch.setattr(last_level_cache, "core_size", lambda: 2**20)  # 60 tiles would fit
    assert _winograd_planar.band_tiles(spec) == winograd.BAND_BYTES // (16 * 128 * 4)


def test_vectors_of_tiles_pay_where_few_lanes_idle() -> None:
    """Full vectors: up to MOST_OUTPUTS outputs; a row of 20 tiles in 32 lanes: with
    few channels only."""
    wide = lowered(np.zeros((1, 64, 32, 256), np.float32), 64, padding="same")
    assert _winograd_planar.lane_share(wide) == 1.0
    assert _winograd_planar.pays(wide)
    narrow = lowered(np.zeros((1, 500, 32, 40), np.float32), 64, padding="same")
    assert _winograd_planar.lane_share(narrow) == pytest.approx(20 / 32)
    assert not _winograd_planar.pays(narrow)
    assert _winograd_planar.pays(lowered(np.zeros((1, 8, 32, 40), np.float32), 8))
    many = np.zeros((1, 64, 32, 64), np.float32)  # every lane used, too many outputs
    assert _winograd_planar.lane_share(lowered(many, 256, padding="same")) == 1.0
    assert _winograd_planar.pays(lowered(many, _winograd_planar.MOST_OUTPUTS))
    assert not _winograd_planar.pays(lowered(many, _winograd_planar.MOST_OUTPUTS + 1))
    none = lowered(np.zeros((1, 8, 9, 40), np.float32), 8, dilation=12, padding="same")
    assert _winograd_planar.lane_share(none) == 0.0
    assert not _winograd_planar.pays(none)


def test_nchw_calls_take_the_route_that_pays(monkeypatch: pytest.MonkeyPatch) -> None:
    planar = count_calls(monkeypatch, _winograd_planar, "conv_channels_first")
    staged = count_calls(monkeypatch, _winograd_nchw, "conv_staged")
    rng = np.random.default_rng(6)
    for c, width, want in ((16, 64, (1, 0)), (200, 40, (1, 1))):
        x = rng.standard_normal((1, c, 10, width)).astype(np.float32)
        w = rng.standard_normal((c, c, 3, 3)).astype(np.float32)
        nchw, nhwc = winograd_both_layouts(x, w, padding="same")
        np.testing.assert_array_equal(nchw, nhwc)
        assert (len(planar), len(staged)) == want
    # auto counts no layout cost for the route of vectors of tiles
    spec = make_spec((1, 64, 256, 256), (64, 64, 3, 3), padding="same", dtypes=[np.float32])
    assert _select.cheapest_for_caller(spec) == "winograd"


def test_a_nan_in_the_input_is_flagged(planar_runs: list[int]) -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 16, 30, 100)).astype(np.float32)
    x[0, 5, 20, 99] = np.nan  # the last column: read by the last tiles of a row
    w = rng.standard_normal((3, 3, 16, 16)).astype(np.float32)
    spec = lowered(x, 16, dilation=2, padding="same")
    with winograd.finite_guard(), pytest.raises(winograd.NonFiniteInput):
        _winograd_nchw.conv_channels_first(x, w, spec)
    clean = x.copy()
    clean[0, 5, 20, 99] = 0.0
    with winograd.finite_guard():  # no NaN: no alarm from lanes that hold no tile
        _winograd_nchw.conv_channels_first(clean, w, spec)


def test_threads_share_the_bands(planar_runs: list[int]) -> None:
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 16, 33, 70)).astype(np.float64)
    w = rng.standard_normal((24, 16, 3, 3)).astype(np.float64)
    with dilconv.config_context(threads=1):
        one = dilconv.conv2d(x, w, dilation=(3, 2), padding="same", method="winograd")
    errors: list[str] = []

    def work() -> None:
        for threads in (2, 3):
            with dilconv.config_context(threads=threads):
                got = dilconv.conv2d(x, w, dilation=(3, 2), padding="same", method="winograd")
            if not np.array_equal(one, got):
                errors.append(f"differs on {threads} threads")

    in_threads(work, 4)
    assert not errors
    assert len(planar_runs) == 1 + 4 * 2

"""``winograd`` on the caller's NCHW arrays, staged band by band (_winograd_nchw).

Vectors of tiles, the other NCHW route, are tested in test_winograd_planar.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

import dilconv
from dilconv import _select
from dilconv._methods import _winograd_nchw, _winograd_planar, _winograd_products, winograd
from dilconv._native import calls, last_level_cache
from dilconv._spec import make_spec
from tests.harness import (
    assert_nchw_winograd_exact,
    benchmark_script,
    count_calls,
    in_threads,
    square_layer,
    winograd_both_layouts,
)
from tests.strategies import Case, winograd_nchw_cases
from tests.tolerance import assert_close

pytestmark = pytest.mark.skipif(
    winograd.refusal(make_spec((1, 1, 4, 4), (1, 1, 3, 3), dtypes=[np.float32]).lowered())
    is not None,
    reason="llvmlite cannot compile here",
)


@pytest.fixture(autouse=True)
def staged_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every NCHW call here stages rows, even where vectors of tiles would pay
    (those are tested in test_winograd_planar.py)."""
    monkeypatch.setattr(_winograd_planar, "pays", lambda spec: False)


@pytest.fixture
def staged_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the calls that took the staged NCHW route."""
    return count_calls(monkeypatch, _winograd_nchw, "conv_staged")


@given(case=winograd_nchw_cases(channels=20, outputs=40, width=40, column_dilation=6))
def test_staged_equals_the_nhwc_route_bit_for_bit_and_the_oracle(case: Case) -> None:
    """The same transforms, products and direct tiles on the same values: the NCHW
    route's result is the NHWC route's exactly, and within tolerance of the oracle."""
    assert_nchw_winograd_exact(case.x, case.w, **case.options)


@pytest.mark.parametrize(
    ("shape", "d"),
    [
        ((2, 64, 64, 256), 2),  # bands of whole rows of tiles: chains of shared rows
        ((1, 64, 70, 256), 3),
        ((1, 64, 64, 256), 1),
        ((1, 8, 9, 40), 12),  # no whole row of tiles: every output direct
    ],
)
def test_rings_of_rows_and_all_direct(
    shape: tuple[int, ...], d: int, staged_runs: list[int]
) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((shape[1], shape[1], 3, 3)).astype(np.float32)
    nchw, nhwc = winograd_both_layouts(x, w, dilation=d, padding="same")
    np.testing.assert_array_equal(nchw, nhwc)
    assert staged_runs == [1]
    spec = make_spec(x.shape, w.shape, dilation=d, padding="same", dtypes=[np.float32]).lowered()
    ys, _ = winograd.whole_pairs(spec.out_hw[0], d)
    groups = _winograd_nchw._segments(spec, _winograd_nchw.bands(spec), ys, 2)
    if shape[-1] == 256:
        assert max(len(g) for g in groups) > 1  # rows kept from band to band
    else:
        assert groups == []
        assert _winograd_nchw.direct_calls(spec, 1) is not None


@pytest.mark.parametrize(
    ("shape", "d", "dtype"),
    [
        ((2, 64, 64, 256), 2, np.float32),  # whole rows: planes on whole cache lines
        ((1, 16, 40, 100), 3, np.float32),  # part rows, rows off the lines: plain stores
        ((1, 24, 48, 64), 1, np.float64),
    ],
)
def test_result_planes_stored_past_the_caches_equal_the_nhwc_route(
    shape: tuple[int, ...],
    d: int,
    dtype: type,
    staged_runs: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Large calls store the result's planes past the caches (small ones here, made to)."""
    monkeypatch.setattr(_winograd_nchw, "_streams", lambda spec: True)
    _winograd_nchw.plan.cache_clear()
    try:
        x, w = square_layer(shape, dtype, seed=2)
        with calls.checked():
            nchw, nhwc = winograd_both_layouts(x, w, dilation=d, padding="same")
        np.testing.assert_array_equal(nchw, nhwc)
        assert staged_runs == [1]
    finally:
        _winograd_nchw.plan.cache_clear()


def test_large_calls_store_the_result_past_the_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    # a 32 MiB last-level cache, whatever this host's (a virtual machine may report
    # hundreds of MiB: the whole socket's)
    monkeypatch.setattr(last_level_cache, "size", lambda: 32 * 2**20)
    big = make_spec((1, 64, 512, 512), (64, 64, 3, 3), padding="same", dtypes=[np.float32])
    small = make_spec((1, 64, 64, 64), (64, 64, 3, 3), padding="same", dtypes=[np.float32])
    assert _winograd_nchw._streams(big.lowered())
    assert not _winograd_nchw._streams(small.lowered())


def test_bands_of_part_rows_are_cut_between_tiles_that_do_not_interleave(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(winograd, "BAND_BYTES", 5 * 16 * 2 * 17 * 4)
    monkeypatch.setattr(winograd, "MIN_BAND_TILES", 1)
    winograd.layout.cache_clear()
    _winograd_nchw.plan.cache_clear()
    try:
        rng = np.random.default_rng(5)
        x = rng.standard_normal((2, 17, 11, 61)).astype(np.float32)
        w = rng.standard_normal((17, 17, 3, 3)).astype(np.float32)
        for d in ((2, 3), (1, 1), (3, 5)):
            nchw, nhwc = winograd_both_layouts(x, w, dilation=d, padding="same")
            np.testing.assert_array_equal(nchw, nhwc)
            spec = make_spec(x.shape, w.shape, dilation=d, padding="same", dtypes=[np.float32])
            bands = _winograd_nchw.bands(spec.lowered())
            xs, _ = winograd.whole_pairs(spec.out_hw[1], d[1])
            assert any(s0 > 0 for _, _, s0, _, _, _ in bands)
            for _, _, s0, _, c0, _ in bands:
                if s0 > 0:  # the band owns every column from its first tile's
                    assert c0 == xs[s0]
                    assert xs[s0] > xs[s0 - 1] + d[1]
    finally:
        winograd.layout.cache_clear()
        _winograd_nchw.plan.cache_clear()


@pytest.mark.parametrize(
    ("xs", "d", "parts", "want"),
    [
        ([0, 1, 4, 5, 8, 9], 2, 3, [(0, 2), (2, 4), (4, 6)]),
        ([0, 1, 2, 6, 7, 8], 3, 4, [(0, 3), (3, 6)]),
        ([0, 1, 2], 3, 2, [(0, 3)]),  # one phase group: no cut
        ([0, 2, 4, 6], 1, 4, [(0, 1), (1, 2), (2, 3), (3, 4)]),
    ],
)
def test_column_bands(xs: list[int], d: int, parts: int, want: list[tuple[int, int]]) -> None:
    assert _winograd_nchw.column_bands(np.array(xs), d, parts) == want


def test_other_calls_move_the_layout(staged_runs: list[int]) -> None:
    """Not C-contiguous, another dtype or another padding mode: the layout moves."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 4, 12, 20)).astype(np.float32)
    w = rng.standard_normal((5, 4, 3, 3)).astype(np.float32)
    for xi, options in [
        (x[:, :, :, ::-1], {}),
        (x, {"padding": 2, "padding_mode": "reflect"}),
        (x.astype(np.float16), {}),
    ]:
        got = dilconv.conv2d(xi, w, method="winograd", **options)
        scale = dilconv.conv2d(np.abs(xi), np.abs(w), method="direct", **options)
        assert_close(got, dilconv.conv2d(xi, w, method="direct", **options), magnitude=scale)
    assert staged_runs == []


def test_auto_falls_back_where_the_input_holds_nan(staged_runs: list[int]) -> None:
    """The staged route flags non-finite outputs like the NHWC one; ``auto`` then
    computes again by a method that sums as ``direct`` does."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 64, 40, 256)).astype(np.float32)
    x[0, 5, 20, 100] = np.nan
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    spec = make_spec(x.shape, w.shape, dilation=2, padding="same", dtypes=[np.float32])
    assert _select.cheapest_for_caller(spec) == "winograd"
    with winograd.finite_guard(), pytest.raises(winograd.NonFiniteInput):
        _winograd_nchw.conv_channels_first(x, w.transpose(2, 3, 1, 0), spec.lowered())
    before = len(staged_runs)
    got = dilconv.conv2d(x, w, dilation=2, padding="same")
    assert len(staged_runs) == before + 1  # auto ran it, met the NaN, computed anew
    want = dilconv.conv2d(x, w, dilation=2, padding="same", method="blocked")
    finite = ~np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), ~finite)
    scale = dilconv.conv2d(np.abs(x), np.abs(w), dilation=2, padding="same", method="blocked")
    assert_close(got[finite], want[finite], magnitude=scale[finite])


def test_threads_share_the_bands() -> None:
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 16, 33, 70)).astype(np.float64)
    w = rng.standard_normal((24, 16, 3, 3)).astype(np.float64)
    with dilconv.config_context(threads=1):
        one = dilconv.conv2d(x, w, dilation=(3, 2), padding="same", method="winograd")
    for threads in (2, 3):
        with dilconv.config_context(threads=threads):
            many = dilconv.conv2d(x, w, dilation=(3, 2), padding="same", method="winograd")
        np.testing.assert_array_equal(one, many)


@pytest.mark.parametrize("channels", [24, 600])  # read in place; moved (many channels)
def test_weights_as_given_from_many_threads(channels: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """NCHW calls hand Winograd the caller's OIHW weights, staged a few channels at a
    time here, from 1-3 pool threads and 4 calling threads at once: the NHWC call's
    result bit for bit every time."""
    monkeypatch.setattr(_winograd_products, "STAGE_BYTES", 5 * 9 * 40 * 4)
    _winograd_products.staged_weight_calls.cache_clear()
    rng = np.random.default_rng(11)
    x = rng.standard_normal((1, channels, 21, 26)).astype(np.float32)
    w = rng.standard_normal((40, channels, 3, 3)).astype(np.float32)
    errors: list[str] = []
    try:
        for threads in (1, 2, 3):
            with dilconv.config_context(threads=threads):
                nchw, want = winograd_both_layouts(x, w, dilation=2, padding="same")
                np.testing.assert_array_equal(nchw, want)

                def work(threads: int = threads, want: np.ndarray = want) -> None:
                    with dilconv.config_context(threads=threads):
                        for _ in range(3):
                            got = dilconv.conv2d(
                                x, w, dilation=2, padding="same", method="winograd"
                            )
                            if not np.array_equal(got, want):
                                errors.append(f"differs on {threads} threads")

                in_threads(work, 4)
    finally:
        _winograd_products.staged_weight_calls.cache_clear()
    assert not errors


def test_the_routes_script_times_four_calls_that_agree(
    staged_runs: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """benchmarks/nchw_routes.py's four routes give one result (NHWC moved back)."""
    planar_runs = count_calls(monkeypatch, _winograd_planar, "conv_channels_first")
    script = benchmark_script("nchw_routes")
    calls = script.routes(2, 8, 20, 6, 3)
    nhwc, planar, staged, moved = (np.asarray(call()) for call in calls.values())
    np.testing.assert_array_equal(staged, nhwc.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(planar, staged)
    np.testing.assert_array_equal(moved, staged)
    assert (len(planar_runs), len(staged_runs)) == (1, 1)
    assert "winograd" in dilconv.conv.IN_PLACE  # put back after the moved call


def test_edge_items_each_compute_and_move_their_own_channels() -> None:
    """Where the blocks of output channels deal among the threads, each item of the
    outputs no whole tile covers computes and moves only its own channels, so the
    items run in any order or at once; else one item does everything. Run alone,
    item 0 writes exactly its blocks' channels at the single rows and columns."""
    from dilconv._methods import _winograd_nchw_edges, blocked

    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 40, 19, 23)).astype(np.float32)
    w = rng.standard_normal((3, 3, 40, 256)).astype(np.float32)
    spec = make_spec(
        (2, 40, 19, 23), (256, 40, 3, 3), padding="same", dilation=2, dtypes=[x.dtype]
    ).lowered()
    dealt = blocked.dealt_blocks(spec, 2)
    assert dealt is not None
    direct = _winograd_nchw_edges.direct_calls(spec, 2)
    assert direct is not None
    assert len(direct.items) == 2
    _, weights = _winograd_products.transform_weights(
        w, spec, _winograd_products.product_plan(spec), taps=True
    )
    y = np.full((2, 256, 19, 23), np.nan, dtype=np.float32)
    D = np.empty(direct.size, dtype=np.float32)  # noqa: N806 - the slot's name
    calls.Binding(x=x, w=weights, D=D, y=y).run(direct.items[0])
    want = dilconv.conv2d(
        x, np.ascontiguousarray(w.transpose(3, 2, 0, 1)), padding="same", dilation=2,
        method="blocked",
    )  # fmt: skip
    lay = winograd.layout(spec)
    written = np.zeros(y.shape, dtype=bool)
    mine = [c for _, (o0, o1) in dealt[0] for c in range(o0, o1)]
    for channel in mine:
        written[:, channel, list(lay.single_rows), :] = True
        written[:, channel, :, list(lay.single_cols)] = True
    np.testing.assert_array_equal(y[written], want[written])
    assert np.isnan(y[~written]).all()
    narrow = make_spec(
        (1, 8, 9, 9), (8, 8, 3, 3), padding="same", dilation=2, dtypes=[x.dtype]
    ).lowered()
    assert blocked.dealt_blocks(narrow, 2) is None
    one = _winograd_nchw_edges.direct_calls(narrow, 2)
    assert one is not None
    assert len(one.items) == 1

"""Method "winograd": F(2x2, 3x3) per dilation phase, against the loop oracle."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dilconv
from dilconv import _shapes
from dilconv._methods import _winograd_nchw, _winograd_products, blocked, winograd
from dilconv._native import calls, kernels, last_level_cache, pool
from dilconv._spec import make_spec
from tests.strategies import Case, conv_cases
from tests.test_methods import check_against_oracle
from tests.tolerance import assert_close


@settings(max_examples=150)
@given(case=conv_cases(dtypes=(np.float64,), three_by_three=True))
def test_winograd_equals_oracle_float64(case: Case) -> None:
    check_against_oracle(case, "winograd")


@given(case=conv_cases(dtypes=(np.float32, np.float16), max_hw=9, three_by_three=True))
def test_winograd_equals_oracle_low_precision(case: Case) -> None:
    check_against_oracle(case, "winograd")


@settings(max_examples=60)
@given(
    case=conv_cases(dtypes=(np.float64,), three_by_three=True),
    cpus=st.integers(1, 4),
    stream_tiles=st.integers(1, 12),
)
def test_winograd_in_bands_that_stream_the_weights_equals_oracle(
    case: Case, cpus: int, stream_tiles: int
) -> None:
    """Bands laid out by the rule for weights that stream from memory (forced: a
    last-level cache of no bytes), for any count of CPUs and band size."""
    from dilconv import _config

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(last_level_cache, "size", lambda: 0)
        patch.setattr(_config, "available_cpus", lambda: cpus)
        patch.setattr(winograd, "STREAM_TILES", stream_tiles)
        patch.setattr(winograd, "MIN_BAND_TILES", 1)
        _clear_band_caches()
        try:
            check_against_oracle(case, "winograd")
        finally:
            _clear_band_caches()


@given(out=st.integers(0, 60), d=st.integers(1, 12))
def test_tile_pairs_cover_every_output_once(out: int, d: int) -> None:
    covered = []
    for o in _shapes.dilated_pair_starts(out, d):
        covered += [o, o + d] if o + d < out else [o]
    assert sorted(covered) == list(range(out))


@given(out=st.integers(0, 60), d=st.integers(1, 12))
def test_whole_pairs_and_singles_cover_every_output_once(out: int, d: int) -> None:
    starts, singles = winograd.whole_pairs(out, d)
    covered = [*starts.tolist(), *(starts + d).tolist(), *singles]
    assert sorted(covered) == list(range(out))
    assert all(o + d < out for o in starts)
    # the unpaired outputs are the last of their phase: at most one per phase
    assert len({o % d for o in singles}) == len(singles)


@given(out=st.integers(1, 60), d=st.integers(1, 12))
def test_to_whole_is_the_fewest_outputs_that_leave_no_single(out: int, d: int) -> None:
    e = winograd.to_whole(out, d)
    assert not winograd.whole_pairs(out + e, d)[1]
    assert all(winograd.whole_pairs(out + fewer, d)[1] for fewer in range(e))


def test_unpaired_outputs_are_computed_directly() -> None:
    """aspp's geometry at dilation 18 (65 outputs: 7 unpaired rows and columns), and
    images too small for any whole pair: every output still right."""
    spec = make_spec(
        (1, 65, 65, 8), (3, 3, 8, 8), padding="same", dilation=18, data_format="NHWC"
    ).lowered()
    lay = winograd.layout(spec)
    assert lay.single_rows == lay.single_cols == tuple(range(47, 54))
    assert winograd.direct_calls(spec, 2) is not None
    rng = np.random.default_rng(8)
    w = rng.standard_normal((3, 3, 5, 7)).astype(np.float32)
    for shape, dilation in (((2, 65, 40, 5), 18), ((1, 3, 4, 5), 3), ((1, 5, 2, 5), (1, 2))):
        x = rng.standard_normal(shape).astype(np.float32)
        run_both(x, w, dilation=dilation, padding="same")
    tiny = make_spec(
        (1, 3, 4, 5), (3, 3, 5, 7), padding="same", dilation=3, data_format="NHWC"
    ).lowered()
    assert winograd.layout(tiny).bands == ()


@pytest.mark.parametrize(
    ("shape", "outputs", "dilation", "dtype"),
    [((2, 65, 67, 40), 24, 1, np.float32), ((1, 23, 25, 40), 140, 2, np.float64)],
)
def test_direct_outputs_are_blockeds_in_the_bands_job(
    shape: tuple[int, ...], outputs: int, dilation: int, dtype: type[np.generic],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The outputs no whole tile covers (single columns by tiles down them) are
    ``blocked``'s, bit for bit, and run as items of the bands' job, not a job of
    their own (whose worker woke too late to help)."""
    rng = np.random.default_rng(outputs)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((3, 3, shape[-1], outputs)).astype(dtype)
    options = {"padding": "same", "dilation": dilation, "data_format": "NHWC"}
    spec = make_spec(x.shape, w.shape, dtypes=[x.dtype], **options).lowered()
    lay = winograd.layout(spec)
    assert lay.single_rows
    assert lay.single_cols
    keys: list[object] = []
    parallel_map = pool.parallel_map

    def recording(fn: object, items: object, *, key: object = None) -> None:
        keys.append(key)
        parallel_map(fn, items, key=key)  # type: ignore[arg-type]

    monkeypatch.setattr(pool, "parallel_map", recording)
    with dilconv.config_context(threads=2):
        actual = dilconv.conv2d(x, w, method="winograd", **options)
    assert keys.count(("winograd", spec)) == 1
    assert not [k for k in keys if isinstance(k, tuple) and k[0] == "winograd edges"]
    monkeypatch.setattr(pool, "parallel_map", parallel_map)
    expected = dilconv.conv2d(x, w, method="blocked", **options)
    rows, cols = list(lay.single_rows), list(lay.single_cols)
    np.testing.assert_array_equal(actual[:, rows], expected[:, rows])
    np.testing.assert_array_equal(actual[:, :, cols], expected[:, :, cols])
    run_both(x, w, **options)


def run_both(x: np.ndarray, w: np.ndarray, **options: object) -> None:
    options = {**options, "data_format": "NHWC"}
    expected = dilconv.conv2d(x, w, method="direct", **options)
    actual = dilconv.conv2d(x, w, method="winograd", **options)
    scale = dilconv.conv2d(np.abs(x), np.abs(w), method="direct", **options)
    assert_close(actual, expected, dtype=x.dtype, magnitude=scale, context=f"{options}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("channels", "outputs"), [(600, 70), (64, 64), (21, 21), (3, 200)])
def test_channel_blocks_and_tails(channels: int, outputs: int, dtype: type[np.generic]) -> None:
    """Several output blocks, input blocks summed in turn, partial vectors both sides."""
    rng = np.random.default_rng(channels + outputs)
    x = rng.standard_normal((2, 9, 23, channels)).astype(dtype)
    w = rng.standard_normal((3, 3, channels, outputs)).astype(dtype)
    for options in (
        {"dilation": 2, "padding": "same"},
        {"dilation": (3, 5), "padding": ((4, 0), (1, 6))},
        {"dilation": 11, "padding": "same"},
        {"dilation": 1, "padding": "valid"},
    ):
        run_both(x, w, **options)
    spec = make_spec(x.shape, w.shape, data_format="NHWC", dtypes=[x.dtype]).lowered()
    p = _winograd_products.product_plan(spec)
    assert len(p.in_blocks) > 1 or channels < 600
    assert len(p.out_blocks) > 1 or outputs < 200
    # V holds one block of input channels at a time: whole transform vectors but the last
    lanes = _winograd_products.lanes(spec)
    assert all((c1 - c0) % lanes == 0 for c0, c1 in p.in_blocks[:-1])


@pytest.fixture
def small_groups(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Output groups on small calls: any ``M`` splits, into groups of one or two
    blocks of output channels (the plans are remembered, so they are dropped)."""
    monkeypatch.setattr(winograd, "SPLIT_BYTES", 0)
    monkeypatch.setattr(winograd, "GROUP_BYTES", 1)
    remembered = (
        winograd.layout,
        winograd.output_groups,
        winograd.band_calls,
        _winograd_products.product_calls,
    )
    for f in remembered:
        f.cache_clear()
    yield
    for f in remembered:
        f.cache_clear()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("channels", "outputs"), [(3, 200), (21, 70), (600, 700)])
def test_output_groups(
    small_groups: None, channels: int, outputs: int, dtype: type[np.generic]
) -> None:
    """``M`` one group of output channels at a time, ``V`` every input channel: the
    group's products sum every block of input channels, and its output transform
    writes only its channels (partial vectors at the end of a group)."""
    rng = np.random.default_rng(channels * outputs)
    hw = (5, 9) if channels > 100 else (9, 23)
    x = rng.standard_normal((2, *hw, channels)).astype(dtype)
    w = rng.standard_normal((3, 3, channels, outputs)).astype(dtype)
    for options in (
        {"dilation": 2, "padding": "same"},
        {"dilation": (1, 3), "padding": ((2, 1), (4, 0))},
    ):
        run_both(x, w, **options)
        spec = make_spec(x.shape, w.shape, data_format="NHWC", dtypes=[x.dtype], **options)
        groups = winograd.output_groups(spec.lowered())
        assert groups is not None
        assert len(groups) > 1
        assert groups[0][0] == 0
        assert groups[-1][1] == outputs
        assert all(a[1] == b[0] for a, b in zip(groups, groups[1:], strict=False))
    if channels > 100:  # several blocks of input channels summed into each group
        assert len(_winograd_products.product_plan(spec.lowered()).in_blocks) > 1


def test_output_groups_where_output_channels_are_many() -> None:
    """By default only an ``M`` larger than ``SPLIT_BYTES`` with more output than input
    channels is split: the input gradient of ``aspp`` (256 -> 2048 channels at 65 x 65,
    11 MiB) but not the layer itself (2048 -> 256) nor a 64-channel layer."""
    for (c, o, hw), split in (
        ((256, 2048, 65), True),
        ((2048, 256, 65), False),
        ((64, 64, 256), False),
    ):
        spec = make_spec(
            (1, hw, hw, c), (3, 3, c, o), padding="same", dilation=12, data_format="NHWC"
        )
        groups = winograd.output_groups(spec.lowered())
        assert (groups is not None) == split
        if groups is not None:
            tiles = winograd.layout(spec.lowered()).band_tiles
            assert all(16 * tiles * (g1 - g0) * 4 <= winograd.GROUP_BYTES for g0, g1 in groups)


def test_weight_transform_is_g_w_g_transposed() -> None:
    """The packed U is G w G^T per channel pair, zero in the padded output lanes: for
    float32 weights exactly the float64 result rounded once; for float64 weights
    within a few roundings of the terms' magnitude."""
    rng = np.random.default_rng(3)
    g = _winograd_products.G
    for dtype in (np.float32, np.float64):
        w = rng.standard_normal((3, 3, 600, 70)).astype(dtype)
        spec = make_spec((1, 8, 8, 600), w.shape, data_format="NHWC", dtypes=[w.dtype]).lowered()
        p = _winograd_products.product_plan(spec)
        packed, _ = _winograd_products.transform_weights(w, spec, p)
        wide = w.astype(np.float64)
        expected = np.einsum("ai,ijco,bj->abco", g, wide, g).reshape(16, 600, 70)
        size = np.einsum("ai,ijco,bj->abco", abs(g), abs(wide), abs(g)).reshape(16, 600, 70)
        for k, (o0, o1) in enumerate(p.out_blocks):
            got = packed[k, :, :, : o1 - o0]
            if dtype == np.float32:
                np.testing.assert_array_equal(got, expected[:, :, o0:o1].astype(np.float32))
            else:
                bound = 4 * np.finfo(np.float64).eps * size[:, :, o0:o1]
                assert np.all(np.abs(got - expected[:, :, o0:o1]) <= bound)
            assert not packed[k, :, :, o1 - o0 :].any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("c", "o"), [(600, 70), (5, 16), (33, 3)])
@pytest.mark.parametrize("view", ["hwio", "channel major", "as given"])
def test_weight_transform_packs_blocked_taps_as_pack_weights_does(
    dtype: type, c: int, o: int, view: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``taps`` the transform's pass also stores ``blocked``'s packing, equal to
    :func:`blocked.pack_weights` bit for bit (the padded lanes zero), from HWIO
    weights, from the NCHW weights' channel-major view, or from the caller's OIHW
    array itself (moved through small stages: a few channels each here); U is the
    same from each."""
    monkeypatch.setattr(_winograd_products, "STAGE_BYTES", 4 * 9 * o * 8)
    _winograd_products.staged_weight_calls.cache_clear()
    rng = np.random.default_rng(c + o)
    hwio = rng.standard_normal((3, 3, c, o)).astype(dtype)
    w = {
        "hwio": hwio,  # HWIO views as NCHW calls hand them over:
        "channel major": np.ascontiguousarray(hwio.transpose(2, 0, 1, 3)).transpose(1, 2, 0, 3),
        "as given": np.ascontiguousarray(hwio.transpose(3, 2, 0, 1)).transpose(2, 3, 1, 0),
    }[view]
    spec = make_spec((1, 8, 8, c), w.shape, data_format="NHWC", dtypes=[w.dtype]).lowered()
    p = _winograd_products.product_plan(spec)
    with calls.checked():
        u, taps = _winograd_products.transform_weights(w, spec, p, taps=True)
        u_alone, none = _winograd_products.transform_weights(w, spec, p)
        u_hwio, _ = _winograd_products.transform_weights(hwio, spec, p)
    _winograd_products.staged_weight_calls.cache_clear()
    assert none is None
    np.testing.assert_array_equal(u, u_alone)
    np.testing.assert_array_equal(u, u_hwio)
    assert taps is not None
    np.testing.assert_array_equal(taps, blocked.pack_weights(hwio, spec, blocked.plan(spec)))


def test_bands_of_part_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bands smaller than a row of tiles, of uneven sizes, cut at any column."""
    monkeypatch.setattr(winograd, "BAND_BYTES", 5 * 16 * 2 * 17 * 4)
    monkeypatch.setattr(winograd, "MIN_BAND_TILES", 1)
    monkeypatch.setattr(winograd, "CORE_BAND_TILES", 10**9)  # BAND_BYTES decides
    winograd.layout.cache_clear()
    try:
        rng = np.random.default_rng(5)
        x = rng.standard_normal((2, 11, 31, 17)).astype(np.float32)
        w = rng.standard_normal((3, 3, 17, 17)).astype(np.float32)
        run_both(x, w, dilation=(2, 3), padding="same")
        spec = make_spec(x.shape, w.shape, dilation=(2, 3), padding="same", data_format="NHWC")
        bands = winograd.layout(spec.lowered()).bands
        assert any(s0 > 0 for _, _, s0, _ in bands)
        assert len({s1 - s0 for _, _, s0, s1 in bands}) > 1
    finally:
        winograd.layout.cache_clear()


@pytest.mark.parametrize(
    ("core", "channels", "in_core"),
    [
        (2 * 2**20, 64, True),  # 198 tiles beside 256 KiB of U
        (2**20, 64, False),  # 83 tiles: too few, so 4 MiB bands
        (2 * 2**20, 128, False),  # 51 tiles beside 1 MiB of U
    ],
)
def test_bands_fit_a_cores_cache_where_it_holds_enough_tiles(
    monkeypatch: pytest.MonkeyPatch, core: int, channels: int, in_core: bool
) -> None:
    """``band_fit`` counts ``V``, ``M`` and the block of ``U`` in a core's own cache, and
    falls back to ``BAND_BYTES`` below ``CORE_BAND_TILES``; the sums do not depend on
    the bands: the result is the same bit for bit either way."""
    monkeypatch.setattr(last_level_cache, "core_size", lambda: core)
    monkeypatch.setattr(winograd, "MIN_BANDS", 1)
    spec = make_spec(
        (1, 64, 64, channels), (3, 3, channels, channels), padding="same",
        data_format="NHWC", dtypes=[np.dtype(np.float32)],
    ).lowered()  # fmt: skip
    per_tile = 16 * 2 * channels * 4
    fit = winograd.band_fit(spec)
    want = int(0.9 * core - 16 * channels * channels * 4) // per_tile
    assert fit == (want if in_core else winograd.BAND_BYTES // per_tile)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 64, 64, channels)).astype(np.float32)
    w = rng.standard_normal((3, 3, channels, channels)).astype(np.float32)
    results, tiles = [], []
    for rule in (winograd.CORE_BAND_TILES, 10**9):
        monkeypatch.setattr(winograd, "CORE_BAND_TILES", rule)
        winograd.layout.cache_clear()
        winograd.band_calls.cache_clear()
        try:
            most = max(winograd.MIN_BAND_TILES, winograd.band_fit(spec))
            assert winograd.layout(spec).band_tiles <= most
            tiles.append(winograd.layout(spec).band_tiles)
            results.append(winograd.conv(x, w, spec))
        finally:
            winograd.layout.cache_clear()
            winograd.band_calls.cache_clear()
    assert (tiles[0] < tiles[1]) == in_core  # smaller bands only where they fit
    np.testing.assert_array_equal(results[0], results[1])


def test_staged_bands_count_the_rows_they_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    """NCHW bands (``staged``) count their staged input and output rows in the core's
    cache: 64 channels keep 4 MiB bands where NHWC bands fit the cache, 32 channels
    fit fewer tiles than on NHWC; the workspace counts the larger bands."""
    monkeypatch.setattr(last_level_cache, "core_size", lambda: 2 * 2**20)
    monkeypatch.setattr(winograd, "MIN_BANDS", 1)
    winograd.layout.cache_clear()
    try:
        for channels in (64, 32):
            spec = make_spec(
                (1, 96, 96, channels), (3, 3, channels, channels), padding="same",
                data_format="NHWC", dtypes=[np.dtype(np.float32)],
            ).lowered()  # fmt: skip
            per_tile, u_block = 16 * 2 * channels * 4, 16 * channels * channels * 4
            staged = int(0.9 * 2 * 2**20 - u_block) // (per_tile + 12 * channels * 4)
            want = winograd.BAND_BYTES // per_tile if channels == 64 else staged
            assert winograd.band_fit(spec, staged=True) == want
            assert winograd.band_fit(spec) == int(0.9 * 2 * 2**20 - u_block) // per_tile
            lay = winograd.layout(spec, staged=True)
            larger = lay.band_tiles > winograd.layout(spec).band_tiles
            assert larger == (channels == 64)
            nchw = _winograd_nchw.bands(spec)
            assert [b[:4] for b in nchw] == list(lay.bands)
            assert winograd.workspace_bytes(spec) >= 16 * lay.band_tiles * 2 * channels * 4
    finally:
        winograd.layout.cache_clear()


@contextlib.contextmanager
def _last_level_cache(monkeypatch: pytest.MonkeyPatch, size: int) -> Iterator[None]:
    """A last-level cache of ``size`` bytes, every plan that depends on it made anew
    inside and after the block."""
    monkeypatch.setattr(last_level_cache, "size", lambda: size)
    _clear_band_caches()
    try:
        yield
    finally:
        _clear_band_caches()


def _clear_band_caches() -> None:
    for cached in (
        winograd.layout,
        winograd.band_calls,
        winograd.output_groups,
        _winograd_products.product_plan,
        _winograd_products.product_calls,
    ):
        cached.cache_clear()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_products_by_position_where_the_weights_stream(
    monkeypatch: pytest.MonkeyPatch, dtype: type
) -> None:
    """Where ``U`` streams and the input channels are the more, each block of input
    channels (STREAM_BLOCK_FACTOR times as many) runs its products one position at a
    time over every block of output channels; the result equals the oracle's, and
    the products in the other order within rounding."""
    monkeypatch.setattr(blocked, "WEIGHT_BLOCK_BYTES", 3 * 2**14)
    monkeypatch.setattr(winograd, "MIN_BAND_TILES", 4)
    options = {"padding": "same", "dilation": 2, "data_format": "NHWC"}
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 20, 18, 96)).astype(dtype)
    w = rng.standard_normal((3, 3, 96, 80)).astype(dtype)
    spec = make_spec(x.shape, w.shape, dtypes=[x.dtype], **options).lowered()
    results, blocks = [], []
    for cache in (2**30, 1024):  # U fits the cache; U outgrows it
        with _last_level_cache(monkeypatch, cache):
            streams = cache == 1024
            assert _winograd_products.by_position(spec) == streams
            plan = _winograd_products.product_plan(spec)
            assert len(plan.out_blocks) > 1
            blocks.append(len(plan.in_blocks))
            tiles = winograd.layout(spec).band_tiles
            for block in _winograd_products.product_calls(spec, tiles):
                at = [call.kernel.signature.names.index("n_rows") for call in block]
                rows = [call.arguments[k] for call, k in zip(block, at, strict=True)]
                assert set(rows) == ({1} if streams else {16})
            results.append(winograd.conv(x, w, spec))
    # 80 outputs: 2 blocks of 3 x 16 float32 lanes (3 KiB a channel's 16 positions),
    # 3 of 4 x 8 float64 lanes (4 KiB); 48 KiB (96 KiB streaming) of them a block,
    # rounded up to whole transform vectors
    assert blocks == ([6, 3] if dtype == np.float32 else [6, 4])
    expected = dilconv.conv2d(x, w, method="direct", **options)
    scale = dilconv.conv2d(np.abs(x), np.abs(w), method="direct", **options)
    for result in results:
        assert_close(result, expected, dtype=x.dtype, magnitude=scale)


def test_products_by_position_need_more_inputs_than_outputs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With more output than input channels ``M`` runs in groups instead: the products
    keep their order and their blocks even where ``U`` streams."""
    spec = make_spec(
        (1, 20, 18, 16), (3, 3, 16, 72), padding="same", data_format="NHWC",
        dtypes=[np.dtype(np.float32)],
    ).lowered()  # fmt: skip
    with _last_level_cache(monkeypatch, 1024):
        assert winograd.streams_weights(spec)
        assert not _winograd_products.by_position(spec)


@pytest.mark.parametrize("cpus", [1, 2, 3])
@pytest.mark.parametrize(("channels", "outputs", "groups"), [(24, 16, 0), (16, 24, 0), (16, 72, 2)])
def test_bands_where_every_band_streams_the_weights(
    monkeypatch: pytest.MonkeyPatch, cpus: int, channels: int, outputs: int, groups: int
) -> None:
    """Where ``U`` outgrows the last-level cache, the bands are a multiple of the CPUs,
    even to a row of tiles, of about ``STREAM_TILES``; the result is the same bit for
    bit as in the bands that fit a core's cache, with or without groups of output
    channels (``groups``: how many, forced)."""
    from dilconv import _config

    if groups:
        monkeypatch.setattr(winograd, "SPLIT_BYTES", 0)
        monkeypatch.setattr(winograd, "GROUP_BYTES", 1)
    monkeypatch.setattr(winograd, "MIN_BANDS", 16)
    monkeypatch.setattr(winograd, "MIN_BAND_TILES", 4)
    monkeypatch.setattr(winograd, "STREAM_TILES", 60)
    monkeypatch.setattr(_config, "available_cpus", lambda: cpus)
    options = {"padding": "same", "dilation": (2, 1), "data_format": "NHWC"}
    rng = np.random.default_rng(cpus)
    x = rng.standard_normal((2, 40, 26, channels)).astype(np.float32)
    w = rng.standard_normal((3, 3, channels, outputs)).astype(np.float32)
    spec = make_spec(x.shape, w.shape, dtypes=[x.dtype], **options).lowered()
    results, layouts = [], []
    for cache in (2**30, 1024):  # U fits the cache; U outgrows it
        with _last_level_cache(monkeypatch, cache):
            assert winograd.streams_weights(spec) == (cache == 1024)
            assert len(winograd.output_groups(spec) or ()) == groups
            layouts.append(winograd.layout(spec))
            results.append(winograd.conv(x, w, spec))
    np.testing.assert_array_equal(results[0], results[1])
    expected = dilconv.conv2d(x, w, method="direct", **options)
    scale = dilconv.conv2d(np.abs(x), np.abs(w), method="direct", **options)
    assert_close(results[1], expected, dtype=x.dtype, magnitude=scale)
    rows, columns = len(layouts[1].in_rows), len(layouts[1].in_cols)
    assert (rows, columns) == (20, 13)
    bands = layouts[1].bands
    count = cpus * max(1, round(rows * columns / (60 * cpus)))
    assert len(bands) == count
    assert len(layouts[0].bands) > count
    sizes = [(r1 - r0) * (s1 - s0) for r0, r1, s0, s1 in bands]
    assert sum(sizes) == rows * columns
    assert max(sizes) - min(sizes) <= columns


def test_the_scratch_holds_the_bands_the_calls_were_made_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A spec's remembered calls keep their bands and groups of output channels while
    its layout is made again for another count of CPUs: each thread's ``V`` and ``M``
    are sized as the calls were made (here 8 CPUs' smaller bands in wider groups),
    not by the new layout's larger bands in narrower groups (in checked mode, every
    call's memory is checked as well)."""
    from dilconv import _config

    monkeypatch.setattr(winograd, "MIN_BAND_TILES", 4)
    monkeypatch.setattr(winograd, "STREAM_TILES", 60)
    monkeypatch.setattr(winograd, "SPLIT_BYTES", 0)
    monkeypatch.setattr(last_level_cache, "size", lambda: 1024)
    cpus = [8]
    monkeypatch.setattr(_config, "available_cpus", lambda: cpus[0])
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 40, 26, 16)).astype(np.float32)
    w = rng.standard_normal((3, 3, 16, 200)).astype(np.float32)
    spec = make_spec(x.shape, w.shape, padding="same", data_format="NHWC", dtypes=[x.dtype])
    spec = spec.lowered()
    widest = max(o1 - o0 for o0, o1 in _winograd_products.product_plan(spec).out_blocks)
    # groups of two blocks for bands of 39 tiles (8 CPUs), of one for 65 (1 CPU)
    monkeypatch.setattr(winograd, "GROUP_BYTES", 16 * widest * 4 * 100)
    plans: list[winograd.BandCalls] = []
    scratch = winograd.scratch

    def recording(s: object, plan: winograd.BandCalls) -> dict[str, np.ndarray]:
        plans.append(plan)
        return scratch(spec, plan)

    monkeypatch.setattr(winograd, "scratch", recording)
    _clear_band_caches()
    try:
        expected = winograd.conv(x, w, spec)
        made = winograd.band_calls(spec)
        assert (made.tiles, made.m_channels) == (39, 2 * widest)
        winograd.layout.cache_clear()
        winograd.output_groups.cache_clear()
        cpus[0] = 1  # larger bands in narrower groups, in the layout made now
        assert winograd.layout(spec).band_tiles == 65
        assert max(g1 - g0 for g0, g1 in winograd.output_groups(spec) or ()) == widest
        plans.clear()
        np.testing.assert_array_equal(winograd.conv(x, w, spec), expected)
        assert plans
        assert all(plan is made for plan in plans)
    finally:
        _clear_band_caches()


@pytest.mark.parametrize("outputs", [32, 24])
def test_results_stored_past_the_caches_equal_the_plain_stores(
    monkeypatch: pytest.MonkeyPatch, outputs: int
) -> None:
    """Where the result outgrows the cache and its output vectors are whole, the output
    transform stores past the caches; the result is the same bit for bit."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 19, 23, 16)).astype(np.float32)
    w = rng.standard_normal((3, 3, 16, outputs)).astype(np.float32)
    spec = make_spec(
        x.shape, w.shape, dilation=2, padding="same", data_format="NHWC",
        dtypes=[np.dtype(np.float32)],
    ).lowered()  # fmt: skip
    results, labels = [], []
    for outgrows in (False, True):
        monkeypatch.setattr(winograd.last_level_cache, "call_outgrows", lambda _, o=outgrows: o)
        winograd.band_calls.cache_clear()
        try:
            results.append(winograd.conv(x, w, spec))
            labels.append({c.kernel.label for s in winograd.band_calls(spec).steps for c in s})
        finally:
            winograd.band_calls.cache_clear()
    whole = outputs % _winograd_products.lanes(spec) == 0
    assert [any("output" in k and "stream=True" in k for k in f) for f in labels] == [False, whole]
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("shift", [0, 1])
def test_the_streaming_output_transform_stores_as_the_plain_one_wherever_it_points(
    shift: int,
) -> None:
    """The stream variant checks its target and spare pointers: on whole vectors it
    stores past the caches, elsewhere as the plain variant; the same values either way."""
    spec = make_spec(
        (1, 9, 12, 16), (3, 3, 16, 16), padding="same", data_format="NHWC",
        dtypes=[np.dtype(np.float32)],
    ).lowered()  # fmt: skip
    lay, width = winograd.layout(spec), _winograd_products.lanes(spec)
    o, (ho, wo) = spec.out_channels, spec.out_hw
    tiles = lay.tiles
    m = np.random.default_rng(2).standard_normal(16 * tiles * o).astype(np.float32)
    results = []
    for stream in (False, True):
        kernel = kernels.transform(spec.dtype, width, 0, "output", stream)
        call = kernel.call(
            source=calls.Ref(m),
            spare=calls.Slot("sink"),
            target=calls.Slot("y"),
            flags=calls.Ref(np.zeros(width, dtype=np.float32)),
            rows=calls.Ref(lay.out_rows),
            n_rows=len(lay.out_rows),
            columns=calls.Ref(lay.out_cols),
            n_columns=len(lay.out_cols),
            vectors=o // width,
            tile=16 * o,
            position=o,
        )
        y = calls.aligned_empty(ho * wo * o + width, np.float32)[shift : shift + ho * wo * o]
        y[:] = np.nan
        calls.Binding(y=y, sink=calls.aligned_empty(o, np.float32)).run([call])
        results.append(y.copy())
    covered = ~np.isnan(results[0])
    assert covered.sum() > 0.8 * covered.size  # every output a whole tile covers
    np.testing.assert_array_equal(results[0], results[1])


def test_tables_mark_padding_and_nothing_else() -> None:
    """Every offset in the tables is a real row or column, or -1 exactly where outside."""
    spec = make_spec(
        (1, 10, 13, 4), (3, 3, 4, 6), padding=((5, 1), (0, 7)), dilation=(3, 2), data_format="NHWC"
    ).lowered()
    lay = winograd.layout(spec)
    (h, wd), (ho, wo), (dh, dw) = spec.in_hw, spec.out_hw, spec.dilation
    ys, _ = winograd.whole_pairs(ho, dh)
    xs, _ = winograd.whole_pairs(wo, dw)
    assert len(lay.in_rows) == len(ys)
    assert len(lay.in_cols) == len(xs)
    for r, y0 in enumerate(ys):
        for a in range(4):
            row = y0 - spec.pad[0][0] + a * dh
            assert lay.in_rows[r, a] == (row * wd * 4 if 0 <= row < h else -1)
        for i in range(2):
            assert lay.out_rows[r, i] == ((y0 + i * dh) * wo * 6 if y0 + i * dh < ho else -1)
    for s, x0 in enumerate(xs):
        for b in range(4):
            col = x0 - spec.pad[1][0] + b * dw
            assert lay.in_cols[s, b] == (col * 4 if 0 <= col < wd else -1)


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"w_shape": (5, 5, 2, 2)}, "3x3 kernel"),
        ({"stride": 2}, "stride 1"),
        ({"groups": 2}, "one group"),
        ({"dtype": np.int64}, "float32 and float64"),
    ],
)
def test_refusals_name_the_reason(options: dict[str, object], says: str) -> None:
    w_shape = options.pop("w_shape", (3, 3, 1 if options.get("groups") else 2, 2))
    dtype = options.pop("dtype", np.float32)
    x = np.ones((1, 8, 8, 2), dtype=dtype)
    w = np.ones(w_shape, dtype=dtype)
    with pytest.raises(ValueError, match=says):
        dilconv.conv2d(x, w, method="winograd", data_format="NHWC", **options)


@pytest.mark.parametrize("channels", [1, 5, 16, 17, 21, 64])
def test_work_counts_the_transforms_over_whole_vectors(channels: int) -> None:
    """The transforms run whole vectors of channels (a last, part-filled one masked),
    so the model counts their values in whole vectors: 21 channels cost what 32 do
    where a vector holds 16 (the 21-channel ``context`` layers, where counting 21
    ranked ``winograd`` ahead of ``blocked``, which was 10-20% faster)."""
    spec = make_spec(
        (1, 40, 40, channels),
        (3, 3, channels, channels),
        padding="same",
        data_format="NHWC",
        dtypes=[np.dtype(np.float32)],
    ).lowered()
    lanes = _winograd_products.lanes(spec)
    whole = -(-channels // lanes) * lanes
    _, values, _, _ = winograd.work(spec)
    assert values == winograd.layout(spec).tiles * 16 * 2 * whole


def test_a_batch_of_few_channels_takes_larger_bands(monkeypatch: pytest.MonkeyPatch) -> None:
    """With 32 channels a band of ``MIN_BAND_TILES`` tiles is little work: where a batch
    holds ``MIN_BANDS`` bands anyway, they grow to ``MIN_BAND_MACS`` of products (within
    the core's cache), and one image keeps the bands it had. Bit for bit the same sums."""
    monkeypatch.setattr(last_level_cache, "core_size", lambda: 2 * 2**20)
    winograd.layout.cache_clear()
    winograd.band_calls.cache_clear()
    try:
        specs = [
            make_spec(
                (n, 64, 64, 32),
                (3, 3, 32, 32),
                padding="same",
                dilation=2,
                data_format="NHWC",
                dtypes=[np.dtype(np.float32)],
            ).lowered()  # fmt: skip
            for n in (1, 16)
        ]
        one, batch = (winograd.layout(spec) for spec in specs)
        columns = len(one.in_cols)
        assert one.band_tiles <= max(winograd.MIN_BAND_TILES, one.tiles // winograd.MIN_BANDS + 1)
        worth = min(winograd.band_fit(specs[1]), winograd.MIN_BAND_MACS // (16 * 32 * 32))
        assert batch.band_tiles > worth - columns  # whole rows of tiles, up to that
        assert batch.band_tiles > 2 * one.band_tiles
        assert 16 * len(batch.bands) >= winograd.MIN_BANDS
        rng = np.random.default_rng(12)
        x = rng.standard_normal((16, 64, 64, 32)).astype(np.float32)
        w = rng.standard_normal((3, 3, 32, 32)).astype(np.float32)
        whole = winograd.conv(x, w, specs[1])
        for k in (0, 7, 15):
            alone = winograd.conv(x[k : k + 1], w, specs[0])
            np.testing.assert_array_equal(whole[k : k + 1], alone)
    finally:
        winograd.layout.cache_clear()
        winograd.band_calls.cache_clear()

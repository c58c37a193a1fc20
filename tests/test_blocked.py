"""Method "blocked": its blocking, its compiled loops and their cache on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import dilconv
from dilconv._methods import _blocked_folded, blocked
from dilconv._native import calls, compiler, disk_cache, kernels, tile_kernel
from dilconv._spec import make_spec
from tests.tolerance import assert_close


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("channels", "outputs", "groups"),
    [(1000, 70, 1), (64, 64, 1), (21, 21, 1), (48, 36, 3), (8, 200, 2)],
)
def test_blocked_channel_blocks_and_tails(
    channels: int, outputs: int, groups: int, dtype: type[np.generic]
) -> None:
    """Many channels: several output blocks, input blocks summed in turn, partial vectors."""
    rng = np.random.default_rng(channels + outputs)
    x = rng.standard_normal((2, 7, 23, channels)).astype(dtype)
    w = rng.standard_normal((3, 3, channels // groups, outputs)).astype(dtype)
    for options in (
        {"dilation": 2, "padding": "same"},
        {"dilation": (3, 5), "stride": (1, 2), "padding": ((4, 0), (1, 6))},
        {"dilation": 11, "padding": "same"},
    ):
        options = {**options, "groups": groups, "data_format": "NHWC"}
        expected = dilconv.conv2d(x, w, method="direct", **options)
        actual = dilconv.conv2d(x, w, method="blocked", **options)
        scale = dilconv.conv2d(np.abs(x), np.abs(w), method="direct", **options)
        assert_close(actual, expected, dtype=dtype, magnitude=scale, context=f"{options}")
    spec = make_spec(x.shape, w.shape, groups=groups, data_format="NHWC", dtypes=[x.dtype])
    p = blocked.plan(spec.lowered())
    packed = channels // groups * 9 * p.vectors * p.lanes * np.dtype(dtype).itemsize
    # more packed weights than one pass streams: the input channels come in blocks
    assert len(p.in_blocks) > 1 or packed <= blocked.WEIGHT_BLOCK_BYTES
    assert len(p.out_blocks) > 1 or outputs < 200


def test_no_tap_reads_padding() -> None:
    """Every tap of every tile reads a real input pixel of its own image."""
    spec = make_spec(
        (2, 5, 13, 17), (4, 5, 3, 4), padding=((6, 1), (9, 2)), dilation=(3, 4), stride=(2, 1)
    ).lowered()
    lay = blocked.layout(spec)
    (h, wd), c, ho = spec.in_hw, spec.in_channels, spec.out_hw[0]
    (dh, dw), sw = spec.dilation, spec.stride[1]
    reads = 0
    for pixels, columns in lay.columns:
        for r, (x_row, _, ky0, ky1, _) in enumerate(lay.rows):
            image = r // ho
            for x_col, _, kx0, kx1 in columns:
                for ky in range(ky0, ky1):
                    row = x_row // (wd * c) + ky * dh - image * h
                    assert 0 <= row < h
                    for kx in range(kx0, kx1):
                        for p in range(pixels):
                            col = x_col // c + kx * dw + p * sw
                            assert 0 <= col < wd
                            reads += 1
    assert reads > 0


def test_compiled_tiles_are_kept_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second process loads the machine code instead of optimising the IR again."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 9, 11, 5))
    w = rng.standard_normal((3, 3, 5, 7))
    options = {"padding": "same", "dilation": 2, "data_format": "NHWC"}
    expected = dilconv.conv2d(x, w, method="direct", **options)
    saved = dict(tile_kernel._FUNCTIONS)
    monkeypatch.setenv("DILCONV_CACHE_DIR", str(tmp_path))

    def forget_the_machine_code() -> None:
        """Compile or load again: the functions, the kernels holding them (an earlier
        test may have made the same ones), and the cached calls holding those."""
        tile_kernel._FUNCTIONS.clear()
        kernels.tiles.cache_clear()
        blocked.tile_calls.cache_clear()

    try:
        forget_the_machine_code()
        first = dilconv.conv2d(x, w, method="blocked", **options)
        files = sorted(tmp_path.glob("tiles-*.o"))
        assert files
        assert len(files) == len(tile_kernel._FUNCTIONS)

        def no_optimiser(*args: object) -> None:
            raise AssertionError("the IR was optimised again instead of loaded")

        llvm, _ = compiler._llvm()
        monkeypatch.setattr(llvm, "create_pass_builder", no_optimiser)
        forget_the_machine_code()
        second = dilconv.conv2d(x, w, method="blocked", **options)
    finally:
        forget_the_machine_code()
        tile_kernel._FUNCTIONS.update(saved)
    assert_close(first, expected, dtype=np.float64)
    np.testing.assert_array_equal(second, first)


def test_an_unwritable_cache_only_costs_compile_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("DILCONV_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(disk_cache, "_WARNED", set())  # as in a fresh process
    assert tile_kernel.cache_dir() is None
    saved = dict(tile_kernel._FUNCTIONS)
    try:
        # as in a fresh process: no compiled function, and no Kernel or call holding
        # one (kernels.tiles and blocked.tile_calls remember them: an earlier test
        # module's call of the same tile loop had made this test see no warning)
        tile_kernel._FUNCTIONS.clear()
        kernels.tiles.cache_clear()
        blocked.tile_calls.cache_clear()
        x = np.ones((1, 4, 6, 3), np.float32)
        w = np.ones((3, 3, 3, 2), np.float32)
        with pytest.warns(disk_cache.CacheWarning, match="cannot be created"):
            y = dilconv.conv2d(x, w, padding=0, data_format="NHWC", method="blocked")
    finally:
        tile_kernel._FUNCTIONS.clear()
        tile_kernel._FUNCTIONS.update(saved)
    np.testing.assert_array_equal(y, np.full((1, 2, 4, 2), 27.0, np.float32))


def test_plan_fits_the_registers() -> None:
    """Sums, weight vectors and one broadcast stay within the SIMD register file."""
    host = tile_kernel.host_lanes()
    for o in (1, 7, 16, 21, 64, 100, 256):
        spec = make_spec((1, 8, 9, 9), (o, 8, 3, 3), dtypes=[np.dtype(np.float32)]).lowered()
        p = blocked.plan(spec)
        assert p.pixels * p.vectors + p.vectors + 1 <= host["registers"]
        assert sum(o1 - o0 for o0, o1 in p.out_blocks) == o
        assert all(o1 - o0 <= p.vectors * p.lanes for o0, o1 in p.out_blocks)
        widest = host["bytes"] // 4
        if o == 21 and widest == 16:  # half-width vectors pad 21 channels to 24, not 32,
            # which pays where the widest run at half rate; elsewhere 2 vectors beat 3
            assert (p.lanes, p.vectors) == ((8, 3) if host["halved"] else (16, 2))
        if o == 21 and host["registers"] == 16:  # one pass of 3 vectors, not 2 + 1
            assert (p.vectors, len(p.out_blocks), p.pixels) == (3, 1, 3)
        if o in (64, 256):  # whole vectors either way: the wide ones, in as few blocks
            assert p.lanes == widest


def test_half_width_vectors_where_the_widest_run_at_half_rate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a CPU whose widest multiply-adds run at half rate, 21 output channels take
    half-width vectors (3 x 8 on AVX-512), and the result is the oracle's."""
    host = dict(tile_kernel.host_lanes())
    if host["bytes"] < 32:
        pytest.skip("no half-width vectors below AVX")
    monkeypatch.setattr(tile_kernel, "host_lanes", lambda: {**host, "halved": 1})
    remembered = (blocked.plan, blocked.layout, blocked.tile_calls, _blocked_folded._pays)
    for f in remembered:
        f.cache_clear()
    try:
        rng = np.random.default_rng(21)
        x = rng.standard_normal((1, 13, 29, 21)).astype(np.float32)
        w = rng.standard_normal((3, 3, 21, 21)).astype(np.float32)
        spec = make_spec(x.shape, w.shape, data_format="NHWC", dtypes=[x.dtype]).lowered()
        p = blocked.plan(spec)
        assert p.lanes * p.vectors == 24
        options = {"dilation": 2, "padding": "same", "data_format": "NHWC"}
        got = dilconv.conv2d(x, w, method="blocked", **options)
        want = dilconv.conv2d(x, w, method="direct", **options)
        scale = dilconv.conv2d(np.abs(x), np.abs(w), method="direct", **options)
        assert_close(got, want, dtype=x.dtype, magnitude=scale)
    finally:
        for f in remembered:
            f.cache_clear()


@pytest.mark.parametrize(
    ("name", "features", "halved"),
    [
        ("znver1", {"avx": True}, True),
        ("znver4", {"avx512f": True}, True),
        ("znver5", {"avx512f": True}, False),
        ("rocketlake", {"avx512f": True}, True),
        # a server Xeon shown under a client model number by its virtual machine
        ("rocketlake", {"avx512f": True, "amx-tile": True}, False),
        ("sapphirerapids", {"avx512f": True, "amx-tile": True}, False),
        ("skylake-avx512", {"avx512f": True}, False),
    ],
)
def test_which_cpus_run_their_widest_multiply_adds_at_half_rate(
    name: str, features: dict[str, bool], halved: bool
) -> None:
    """LLVM's CPU name decides, except that a server-only feature (AMX) means full rate."""
    assert tile_kernel.widest_at_half_rate(name, features) is halved


def test_remembered_calls_outlive_the_layout_cache() -> None:
    """The remembered tile-loop calls hold the layout tables' addresses, so they keep
    the tables alive: clearing the layouts' cache must not change a result."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 40, 40, 21)).astype(np.float32)
    w = rng.standard_normal((3, 3, 21, 21)).astype(np.float32)
    options = {"dilation": 2, "padding": "same", "data_format": "NHWC"}
    first = dilconv.conv2d(x, w, method="blocked", **options)
    blocked.layout.cache_clear()
    np.ones(2**20)  # reuse of freed memory would show up as a different result
    again = dilconv.conv2d(x, w, method="blocked", **options)
    np.testing.assert_array_equal(again, first)
    expected = dilconv.conv2d(x, w, method="direct", **options)
    scale = dilconv.conv2d(np.abs(x), np.abs(w), method="direct", **options)
    assert_close(first, expected, dtype=np.float32, magnitude=scale)


@pytest.mark.parametrize("threads", [2, 3, 5])
def test_one_row_is_shared_among_threads_by_its_tiles(threads: int) -> None:
    """A 1-D signal is one output row: the threads share its tiles, each tile once."""
    rng = np.random.default_rng(threads)
    x = rng.standard_normal((1, 1, 9001, 64)).astype(np.float32)
    w = rng.standard_normal((1, 3, 64, 40)).astype(np.float32)
    options = {"padding": "same", "dilation": 4, "data_format": "NHWC"}
    spec = make_spec(x.shape, w.shape, dtypes=[x.dtype], **options)
    with dilconv.config_context(threads=2):
        assert blocked.thread_count(spec) == 2  # above PARALLEL_WORK, one row
    shares = blocked.tile_calls(spec, threads).shares
    assert len(shares) == threads
    tiles: list[int] = []
    for share in shares:
        assert share  # every share has tiles to compute
        for call in share:
            arguments = dict(zip(call.kernel.signature.names, call.arguments, strict=True))
            if arguments["out"].offset == 0:  # the first output block's calls
                tiles.extend(arguments["columns"].array[:, 1].tolist())
    assert len(tiles) == len(set(tiles))  # no output tile twice
    with dilconv.config_context(threads=2):
        actual = dilconv.conv2d(x, w, method="blocked", **options)
    expected = dilconv.conv2d(x, w, method="direct", **options)
    assert_close(actual, expected, dtype=np.float32, magnitude=np.abs(expected).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("channels", "outputs", "options"),
    [
        (5, 7, {"dilation": 2, "padding": "same"}),
        (300, 21, {"dilation": (3, 2), "stride": (2, 1), "padding": ((4, 0), (1, 6))}),
        (40, 140, {"dilation": 1, "stride": (1, 3), "padding": ((2, 2), (0, 3))}),
    ],
)
def test_tiles_down_columns_give_the_row_tiles_sums_bit_for_bit(
    channels: int, outputs: int, options: dict, dtype: type[np.generic], monkeypatch
) -> None:
    """``column_region_calls`` on some columns of some rows, in every image (input
    and output blocks, a partial vector, strides, dilations and padding on each
    side): exactly the row tiles' result there (``blocked`` unfolded), on 1 to 3
    threads, dealing blocks of output channels or not; nothing written elsewhere."""
    monkeypatch.setattr(_blocked_folded, "pays", lambda spec: False)
    rng = np.random.default_rng(channels)
    x = rng.standard_normal((2, 19, 23, channels)).astype(dtype)
    w = rng.standard_normal((3, 3, channels, outputs)).astype(dtype)
    options = {**options, "data_format": "NHWC"}
    expected = dilconv.conv2d(x, w, method="blocked", **options)
    spec = make_spec(x.shape, w.shape, dtypes=[x.dtype], **options).lowered()
    ho, wo = spec.out_hw
    columns, rows = np.array([0, 2, 3, wo - 1]), np.array([0, 1, 2, ho - 3, ho - 2, ho - 1])
    packed = blocked.pack_weights(w, spec, blocked.plan(spec))
    for threads in (1, 2, 3):
        for by_outputs in (False, True):
            y = np.full(expected.shape, np.nan, dtype=dtype)
            region = blocked.column_region_calls(
                spec, columns, rows, threads, by_outputs=by_outputs
            )
            assert len(region.shares) == threads
            for share in region.shares:
                calls.Binding(x=x, w=packed, out=y).run(share)
            picked = np.ix_(range(2), rows, columns)
            np.testing.assert_array_equal(y[picked], expected[picked])
            y[picked] = np.nan
            assert np.isnan(y).all()  # nothing else written


def test_shares_deal_the_output_blocks_where_they_divide_evenly() -> None:
    """``by_outputs``: each share every tile of the region and its own blocks of
    output channels (each block once); with too few blocks, the tiles are cut."""
    spec = make_spec((1, 9, 9, 64), (3, 3, 64, 512), padding="same", data_format="NHWC").lowered()
    p = blocked.plan(spec)
    assert len(p.out_blocks) >= 4
    lay = blocked.layout(spec)
    region = blocked.region_calls(spec, lay.rows, lay.columns, 2, by_outputs=True)
    blocks = [
        {dict(zip(c.kernel.signature.names, c.arguments, strict=True))["out"].offset for c in s}
        for s in region.shares
    ]
    assert not blocks[0] & blocks[1]
    assert blocks[0] | blocks[1] == {o0 for o0, _ in p.out_blocks}
    narrow = make_spec((1, 9, 9, 8), (3, 3, 8, 8), padding="same", data_format="NHWC").lowered()
    assert len(blocked.plan(narrow).out_blocks) == 1
    cut = blocked.layout(narrow)
    shares = blocked.region_calls(narrow, cut.rows, cut.columns, 2, by_outputs=True).shares
    assert all(shares)  # both shares have rows of the one block

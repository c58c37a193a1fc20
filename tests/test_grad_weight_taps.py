"""The weight gradient by per-tap sums (dilconv._grad_weight): both layouts and the tiles."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given

import dilconv
from dilconv import _grad_weight, _grad_weight_tiles
from dilconv._layout import to_canonical, weight_from_canonical
from dilconv._native import pool
from dilconv._padding import pad_spatial
from dilconv._spec import make_spec
from tests.strategies import Case, conv_cases
from tests.tolerance import assert_close


def by_taps(case: Case, g: np.ndarray, way: str) -> np.ndarray:
    """One of the two layouts on any stride-1, one-group call."""
    spec = make_spec(case.x.shape, case.w.shape, dtypes=[case.x.dtype], **case.options)
    x = to_canonical(case.x, spec)
    if spec.padding_mode != "zeros":
        x = pad_spatial(x, spec.pad, spec.padding_mode)
    run = _grad_weight.by_column_windows if way == "windows" else _grad_weight.by_pitched_slabs
    return weight_from_canonical(run(x, to_canonical(g, spec), spec.lowered()), spec)


@given(case=conv_cases(dtypes=(np.float64, np.float32), bias=False))
def test_both_layouts_equal_the_oracle(case: Case) -> None:
    assume(case.options["stride"] in (1, (1, 1)) and case.options["groups"] == 1)
    y = dilconv.conv2d(case.x, case.w, **case.options)
    g = np.random.default_rng(0).standard_normal(y.shape).astype(case.x.dtype)
    expected = dilconv.conv2d_grad_weight(case.x, g, case.w.shape, method="direct", **case.options)
    magnitude = dilconv.conv2d_grad_weight(
        np.abs(case.x), np.abs(g), case.w.shape, method="direct", **case.options
    )
    for way in ("windows", "slabs"):
        got = by_taps(case, g, way)
        assert_close(got, expected, magnitude=magnitude, context=f"{way} {case!r}")


@given(case=conv_cases(dtypes=(np.float64, np.float32), bias=False))
def test_tiles_equal_the_oracle(case: Case) -> None:
    """Any stride, dilation, padding and group count."""
    y = dilconv.conv2d(case.x, case.w, **case.options)
    g = np.random.default_rng(0).standard_normal(y.shape).astype(case.x.dtype)
    expected = dilconv.conv2d_grad_weight(case.x, g, case.w.shape, method="direct", **case.options)
    magnitude = dilconv.conv2d_grad_weight(
        np.abs(case.x), np.abs(g), case.w.shape, method="direct", **case.options
    )
    spec = make_spec(case.x.shape, case.w.shape, dtypes=[case.x.dtype], **case.options)
    assume(min(*spec.out_hw, spec.batch, spec.in_channels) > 0)
    x = to_canonical(case.x, spec)
    if spec.padding_mode != "zeros":
        x = pad_spatial(x, spec.pad, spec.padding_mode)
    got = _grad_weight_tiles.by_tiles(x, to_canonical(g, spec), spec.lowered())
    got = weight_from_canonical(got, spec)
    assert_close(got, expected, magnitude=magnitude, context=f"tiles {case!r}")


def test_tiles_in_many_bands_and_threads() -> None:
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 90, 70, 40)).astype(np.float32)
    w = rng.standard_normal((3, 3, 40, 24)).astype(np.float32)
    opts = {"padding": "same", "dilation": (4, 7), "data_format": "NHWC"}
    g = rng.standard_normal(dilconv.conv2d(x, w, **opts).shape).astype(np.float32)
    spec = make_spec(x.shape, w.shape, dtypes=[x.dtype], **opts).lowered()
    assert spec.batch * spec.out_hw[0] // _grad_weight_tiles.band_rows(spec) > 4
    got = _grad_weight_tiles.by_tiles(x, g, spec)
    expected = dilconv.conv2d_grad_weight(x, g, w.shape, method="im2col", **opts)
    scale = dilconv.conv2d_grad_weight(np.abs(x), np.abs(g), w.shape, method="im2col", **opts)
    assert_close(got, expected, magnitude=scale, kind="gradients")


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize(
    ("x_shape", "w_shape", "opts"),
    [
        # tcn1d's causal layer, shorter: runs of columns, the last one shorter
        ((1, 1, 9000, 40), (1, 3, 40, 24), {"padding": ((0, 0), (32, 0)), "dilation": 16}),
        # two images, stride 3, two groups, float64
        (
            (2, 1, 7001, 36),
            (1, 2, 18, 20),
            {"padding": ((0, 0), (7, 3)), "dilation": 50, "stride": 3, "groups": 2},
        ),
        # one output row read through three kernel rows, taps past both ends
        ((2, 3, 6000, 24), (3, 3, 24, 16), {"padding": ((0, 0), (5, 5)), "dilation": (1, 4)}),
    ],
)
def test_tiles_fold_a_long_one_row_image(
    x_shape: tuple[int, ...], w_shape: tuple[int, ...], opts: dict, threads: int
) -> None:
    """An output row longer than a band is cut into runs of columns (1-D signals)."""
    rng = np.random.default_rng(9)
    dtype = np.float64 if opts.get("groups", 1) > 1 else np.float32
    x = rng.standard_normal(x_shape).astype(dtype)
    w = np.zeros(w_shape, dtype=dtype)
    opts = {**opts, "data_format": "NHWC"}
    g = rng.standard_normal(dilconv.conv2d(x, w, **opts).shape).astype(dtype)
    spec = make_spec(x.shape, w.shape, dtypes=[x.dtype], **opts).lowered()
    assert spec.out_hw[0] == 1
    assert _grad_weight_tiles.folds(spec)
    with dilconv.config_context(threads=threads):
        assert _grad_weight_tiles.band_count(spec) > max(2, pool.num_threads())
        got = _grad_weight_tiles.by_tiles(x, g, spec)
    expected = dilconv.conv2d_grad_weight(x, g, w.shape, method="direct", **opts)
    scale = dilconv.conv2d_grad_weight(np.abs(x), np.abs(g), w.shape, method="direct", **opts)
    assert_close(got, expected, magnitude=scale, kind="gradients")


def test_the_tcn1d_weight_gradient_can_take_the_folded_tiles() -> None:
    """tcn1d's layer (64 channels of 32000 samples, 16 MiB a row) is no longer refused."""
    spec = make_spec(
        (1, 1, 32032, 64), (1, 3, 64, 64), padding=0, dilation=(1, 16), data_format="NHWC"
    ).lowered()
    assert _grad_weight_tiles.row_bytes(spec) > _grad_weight_tiles.BAND_BYTES
    assert "tiles" in _grad_weight.routes(spec)


def test_slabs_in_several_bands() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 200, 48, 32))
    w = rng.standard_normal((3, 3, 32, 32))
    opts = {"padding": "same", "dilation": 3, "data_format": "NHWC"}
    g = rng.standard_normal(dilconv.conv2d(x, w, **opts).shape)
    spec = make_spec(x.shape, w.shape, **opts).lowered()
    with dilconv.workspace_limit(2**20):
        assert _grad_weight.band_rows(spec) < 50
        got = _grad_weight.by_pitched_slabs(x, g, spec)
    expected = dilconv.conv2d_grad_weight(x, g, w.shape, method="im2col", **opts)
    scale = dilconv.conv2d_grad_weight(np.abs(x), np.abs(g), w.shape, method="im2col", **opts)
    assert_close(got, expected, magnitude=scale, kind="gradients")


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
@pytest.mark.parametrize("shape", [(1, 1, 700, 24), (3, 1, 500, 16), (2, 9, 40, 16)])
def test_windows_slice_taps_that_do_not_share_out_evenly(
    shape: tuple[int, ...], threads: int
) -> None:
    """3 taps on 2 threads (or 4) run as a slice of every tap per thread, summed apart;
    one-row images (1-D signals) read their windows in place, several of them too."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal(shape)
    kernel = (1, 3) if shape[1] == 1 else (3, 1)
    w = rng.standard_normal((*kernel, shape[3], 8))
    opts = {"padding": ((0, 0), (6, 0)) if shape[1] == 1 else "same", "dilation": 3}
    opts["data_format"] = "NHWC"
    g = rng.standard_normal(dilconv.conv2d(x, w, **opts).shape)
    spec = make_spec(x.shape, w.shape, **opts).lowered()
    taps = len(_grad_weight.row_ranges(spec)) * len(_grad_weight.column_ranges(spec))
    assert taps == 3
    with dilconv.config_context(threads=threads):
        running = pool.num_threads()  # the setting, within what the machine allows
        sliced = _grad_weight.split_count(taps, running)
        assert sliced == (1 if running in (1, 3) else running)
        assert (_grad_weight.split_bytes(spec) > 0) == (sliced > 1)
        got = _grad_weight.by_column_windows(x, g, spec)
    if shape[1] == 1:
        assert _grad_weight.window_bytes(spec) == 0
    expected = dilconv.conv2d_grad_weight(x, g, w.shape, method="direct", **opts)
    scale = dilconv.conv2d_grad_weight(np.abs(x), np.abs(g), w.shape, method="direct", **opts)
    assert_close(got, expected, magnitude=scale, kind="gradients")


def test_the_estimate_picks_windows_for_wide_padding_and_slabs_for_many_images() -> None:
    aspp = make_spec((1, 2048, 65, 65), (256, 2048, 3, 3), padding="same", dilation=12)
    # slabs measured 274 ms against windows' 443 (float64, this machine)
    wave = make_spec((8, 64, 128, 128), (64, 64, 3, 3), padding="same", dilation=1)
    for spec, faster in ((aspp.lowered(), "windows"), (wave.lowered(), "slabs")):
        other = "slabs" if faster == "windows" else "windows"
        est = _grad_weight.estimate_seconds
        assert est(faster, spec) < est(other, spec)


@pytest.mark.parametrize("data_format", ["NCHW", "NHWC"])
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
def test_auto_takes_the_tap_products_within_the_workspace(
    data_format: str, padding_mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two images, taps past every edge; over the workspace limit "auto" falls back."""
    rng = np.random.default_rng(3)
    nchw = data_format == "NCHW"
    x = rng.standard_normal((2, 32, 60, 480) if nchw else (2, 60, 480, 32))
    w_shape = (32, 32, 3, 3) if nchw else (3, 3, 32, 32)
    opts = {"padding": "same", "dilation": 5, "data_format": data_format}
    opts["padding_mode"] = padding_mode
    g = rng.standard_normal(dilconv.conv2d(x, np.zeros(w_shape), **opts).shape)
    spec = make_spec(x.shape, w_shape, **opts).lowered()
    calls = []
    original = _grad_weight.grad_weight
    monkeypatch.setattr(_grad_weight, "grad_weight", lambda *a: calls.append(1) or original(*a))
    assert _grad_weight.applies(spec)
    got = dilconv.conv2d_grad_weight(x, g, w_shape, **opts)
    assert calls == [1]
    with dilconv.workspace_limit(2**20):  # over windows and slabs: the tiles
        assert min(_grad_weight.window_bytes(spec), _grad_weight.slab_bytes(spec)) > 2**20
        assert _grad_weight.routes(spec) == ["tiles"]
        tiles = dilconv.conv2d_grad_weight(x, g, w_shape, **opts)
    assert calls == [1, 1]
    with dilconv.workspace_limit(2**20):  # and no compiled tiles on this machine
        monkeypatch.setattr(_grad_weight_tiles.blocked, "refusal", lambda spec: "no LLVM")
        assert not _grad_weight.applies(spec)
        fallback = dilconv.conv2d_grad_weight(x, g, w_shape, **opts)
    assert calls == [1, 1]
    expected = dilconv.conv2d_grad_weight(x, g, w_shape, method="im2col", **opts)
    scale = dilconv.conv2d_grad_weight(np.abs(x), np.abs(g), w_shape, method="im2col", **opts)
    assert_close(got, expected, magnitude=scale, kind="gradients")
    assert_close(tiles, expected, magnitude=scale, kind="gradients")
    assert_close(fallback, expected, magnitude=scale, kind="gradients")


def test_strides_and_groups_take_the_tiles_or_the_swapped_problem(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    strided = make_spec((1, 8, 40, 40), (4, 8, 3, 3), padding=1, stride=2).lowered()
    grouped = make_spec((1, 8, 40, 40), (4, 4, 3, 3), padding=1, groups=2).lowered()
    integer = make_spec((1, 8, 40, 40), (4, 8, 3, 3), dtypes=[np.dtype(np.int64)]).lowered()
    assert _grad_weight.routes(strided) == ["tiles"]
    assert _grad_weight.routes(grouped) == ["tiles"]
    assert not _grad_weight.applies(integer)
    monkeypatch.setattr(_grad_weight_tiles.blocked, "refusal", lambda spec: "no LLVM here")
    assert not _grad_weight.applies(strided)
    assert not _grad_weight.applies(grouped)


@pytest.mark.parametrize("route", ["windows", "slabs", "tiles", "winograd"])
def test_arrays_that_disagree_with_their_spec_never_reach_a_route(route: str) -> None:
    from dilconv._grad_weight import ROUTES

    spec = make_spec((2, 12, 12, 4), (3, 3, 4, 8), padding="same", dilation=2,
                     data_format="NHWC", dtypes=[np.dtype(np.float32)] * 2)  # fmt: skip
    x, g = np.ones((2, 12, 12, 4), np.float32), np.ones((2, 12, 12, 8), np.float32)
    assert ROUTES[route].run(x, g, spec).shape == (3, 3, 4, 8)
    with pytest.raises(ValueError, match=r"x: shape \(1, 12, 12, 4\), expected the spec's"):
        ROUTES[route].run(x[:1], g, spec)
    with pytest.raises(ValueError, match=r"g: shape \(2, 6, 12, 8\), expected the spec's"):
        ROUTES[route].run(x, g[:, :6], spec)

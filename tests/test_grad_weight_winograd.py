"""The weight gradient by Winograd F(3x3, 2x2) (dilconv._grad_weight_winograd)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import assume, given

import dilconv
from dilconv import _grad_weight, _grad_weight_winograd, _select
from dilconv._layout import to_canonical, weight_from_canonical
from dilconv._padding import pad_spatial
from dilconv._spec import make_spec
from tests.strategies import Case, conv_cases
from tests.tolerance import assert_close


def oracle(x: np.ndarray, g: np.ndarray, shape: tuple[int, ...], **options: object) -> tuple:
    """The loop oracle's weight gradient and the error scale of each tap.

    Winograd's output transform mixes the nine taps of a channel pair, so each tap
    rounds at the scale of the largest of them: a tap that reads only padding is
    exactly 0 in the oracle, but not in a transform that also carries its neighbours.
    """
    expected = dilconv.conv2d_grad_weight(x, g, shape, method="direct", **options)
    scale = dilconv.conv2d_grad_weight(np.abs(x), np.abs(g), shape, method="direct", **options)
    taps = (0, 1) if len(shape) == 2 or options.get("data_format") == "NHWC" else (2, 3)
    return expected, np.broadcast_to(scale.max(axis=taps, keepdims=True), scale.shape)


@given(case=conv_cases(dtypes=(np.float64, np.float32), bias=False, three_by_three=True))
def test_equals_the_oracle(case: Case) -> None:
    """Any dilation, padding (every mode), size and channel count of a 3x3 layer."""
    spec = make_spec(case.x.shape, case.w.shape, dtypes=[case.x.dtype], **case.options)
    assume(_grad_weight_winograd.refusal(spec.lowered()) is None)
    y = dilconv.conv2d(case.x, case.w, **case.options)
    g = np.random.default_rng(0).standard_normal(y.shape).astype(case.x.dtype)
    x = to_canonical(case.x, spec)
    if spec.padding_mode != "zeros":
        x = pad_spatial(x, spec.pad, spec.padding_mode)
    got = _grad_weight_winograd.grad_weight(x, to_canonical(g, spec), spec.lowered())
    got = weight_from_canonical(got, spec)
    expected, scale = oracle(case.x, g, case.w.shape, **case.options)
    assert_close(got, expected, magnitude=scale, context=f"winograd {case!r}")


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize(
    ("shape", "out_channels", "opts"),
    [
        # many bands of one tile row each, phases of odd counts (tiles half outside)
        ((3, 45, 37, 20), 24, {"padding": "same", "dilation": (4, 3)}),
        # rows of tiles longer than a band: bands are parts of a row
        ((1, 6, 700, 40), 36, {"padding": (1, 2), "dilation": 1}),
        # more than one block of input channels
        ((1, 20, 18, 150), 3, {"padding": "valid", "dilation": 2}),
    ],
)
def test_in_many_bands_blocks_and_threads(
    threads: int, shape: tuple[int, ...], out_channels: int, opts: dict
) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(np.float32)
    w_shape = (3, 3, shape[3], out_channels)
    opts = {**opts, "data_format": "NHWC"}
    spec = make_spec(x.shape, w_shape, dtypes=[x.dtype], **opts).lowered()
    g = rng.standard_normal((shape[0], *spec.out_hw, out_channels)).astype(np.float32)
    lay = _grad_weight_winograd.layout(spec)
    assert len(lay.bands) > 1
    with dilconv.config_context(threads=threads):
        got = _grad_weight_winograd.grad_weight(x, g, spec)
    expected, scale = oracle(x, g, w_shape, **opts)
    assert_close(got, expected, magnitude=scale, kind="gradients")


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize(
    ("shape", "out_channels", "opts", "dtype"),
    [
        ((1, 14, 15, 300), 120, {"padding": "same", "dilation": 2}, np.float32),
        ((2, 11, 9, 70), 40, {"padding": ((1, 4), (0, 2)), "dilation": (1, 3)}, np.float64),
        ((1, 5, 40, 3), 200, {"padding": 1, "dilation": 1}, np.float32),  # one block
    ],
)
def test_shared_sums_in_blocks_of_channels(
    threads: int,
    shape: tuple[int, ...],
    out_channels: int,
    opts: dict,
    dtype: type,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sums past M_BYTES: one M, the threads taking blocks of input channels."""
    monkeypatch.setattr(_grad_weight_winograd, "M_BYTES", 1024)
    monkeypatch.setattr(_grad_weight_winograd, "SHARED_BAND_BYTES", 2**16)
    monkeypatch.setattr(_grad_weight_winograd, "MIN_BAND_TILES", 4)
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape).astype(dtype)
    w_shape = (3, 3, shape[3], out_channels)
    opts = {**opts, "data_format": "NHWC"}
    spec = make_spec(x.shape, w_shape, dtypes=[x.dtype], **opts).lowered()
    g = rng.standard_normal((shape[0], *spec.out_hw, out_channels)).astype(dtype)
    _grad_weight_winograd.layout.cache_clear()
    _grad_weight_winograd.shared_calls.cache_clear()
    try:
        assert _grad_weight_winograd.shares_sums(spec)
        with dilconv.config_context(threads=threads):
            got = _grad_weight_winograd.grad_weight(x, g, spec)
            lay = _grad_weight_winograd.layout(spec)
    finally:
        _grad_weight_winograd.layout.cache_clear()
        _grad_weight_winograd.shared_calls.cache_clear()
    assert len(lay.bands) > 1
    assert len(lay.blocks) > 1 or shape[3] <= 16
    expected, scale = oracle(x, g, w_shape, **opts)
    assert_close(got, expected, magnitude=scale, kind="gradients")


def test_aspp_shares_its_sums_within_the_workspace() -> None:
    """``aspp``'s 2048 -> 256 channels: 32 MiB of sums, shared; Winograd is chosen."""
    spec = make_spec((1, 65, 65, 2048), (3, 3, 2048, 256), padding="same", dilation=12,
                     data_format="NHWC", dtypes=[np.dtype(np.float32)]).lowered()  # fmt: skip
    assert _grad_weight_winograd.shares_sums(spec)
    size = _grad_weight_winograd.workspace_bytes(spec)
    assert 16 * 2048 * 256 * 4 < size < 2 * 16 * 2048 * 256 * 4
    assert _select.best(_grad_weight.ROUTES, spec) == "winograd"


def test_the_layout_covers_every_output_once() -> None:
    """Every output pixel lies in exactly one tile; bands cover every tile once."""
    spec = make_spec((1, 29, 31, 4), (3, 3, 4, 4), padding="same", dilation=(3, 5),
                     data_format="NHWC").lowered()  # fmt: skip
    lay = _grad_weight_winograd.layout(spec)
    (ho, wo), o = spec.out_hw, spec.out_channels
    rows = [r // (wo * o) for r in lay.out_rows.ravel() if r >= 0]
    cols = [c // o for c in lay.out_cols.ravel() if c >= 0]
    assert sorted(rows) == list(range(ho))
    assert sorted(cols) == list(range(wo))
    covered = np.zeros((len(lay.in_rows), len(lay.in_cols)), dtype=int)
    for r0, r1, s0, s1 in lay.bands:
        covered[r0:r1, s0:s1] += 1
    assert (covered == 1).all()


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_auto_gives_the_direct_sums_where_the_input_is_not_finite(bad: float) -> None:
    """Winograd's transforms turn an Inf into NaNs; ``auto`` computes such calls again."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 64, 64, 64)).astype(np.float32)
    x[0, 7, 9, 3] = bad
    g = rng.standard_normal((1, 64, 64, 64)).astype(np.float32)
    opts = {"padding": "same", "dilation": 2, "data_format": "NHWC"}
    shape = (3, 3, 64, 64)
    spec = make_spec(x.shape, shape, dtypes=[x.dtype], **opts).lowered()
    assert _select.best(_grad_weight.ROUTES, spec) == "winograd"
    assert not np.isfinite(_grad_weight_winograd.grad_weight(x, g, spec)).all()
    got = dilconv.conv2d_grad_weight(x, g, shape, **opts)
    expected = dilconv.conv2d_grad_weight(x, g, shape, method="direct", **opts)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(expected))
    finite = np.isfinite(expected)
    scale = dilconv.conv2d_grad_weight(
        np.where(np.isfinite(x), np.abs(x), 0), np.abs(g), shape, method="direct", **opts
    )
    assert_close(got[finite], expected[finite], magnitude=scale[finite], kind="gradients")


@pytest.mark.parametrize(
    ("w_shape", "opts", "dtype", "reason"),
    [
        ((5, 5, 4, 4), {}, np.float32, "3x3"),
        ((3, 3, 4, 4), {"stride": 2}, np.float32, "stride 1"),
        ((3, 3, 2, 4), {"groups": 2}, np.float32, "one group"),
        ((3, 3, 4, 4), {}, np.int64, "float32 and float64"),
    ],
)
def test_refuses_what_it_cannot_run(
    w_shape: tuple[int, ...], opts: dict, dtype: type, reason: str
) -> None:
    c = w_shape[2] * opts.get("groups", 1)
    spec = make_spec((1, 12, 12, c), w_shape, dtypes=[np.dtype(dtype)], data_format="NHWC",
                     **opts).lowered()  # fmt: skip
    refusal = _grad_weight_winograd.refusal(spec)
    assert refusal is not None
    assert reason in refusal
    assert "winograd" not in _grad_weight.routes(spec)
    with pytest.raises(ValueError, match="Winograd weight gradient cannot"):
        _grad_weight_winograd.grad_weight(np.zeros((1, 12, 12, c)), np.zeros((1, 1, 1, 1)), spec)


def test_auto_takes_it_for_many_channels_and_the_workspace_counts_it() -> None:
    """The 64-channel context layer's weight gradient: Winograd, measured faster than
    the tiles (NOTES.md); its workspace is each thread's sums and scratch."""
    spec = make_spec((1, 256, 256, 64), (3, 3, 64, 64), padding="same", dilation=8,
                     data_format="NHWC").lowered()  # fmt: skip
    assert _select.best(_grad_weight.ROUTES, spec) == "winograd"
    size = _grad_weight_winograd.workspace_bytes(spec)
    per_thread = 16 * 64 * 64 * 8
    assert per_thread <= size <= per_thread * 2 + 8 * _grad_weight_winograd.BAND_BYTES
    with dilconv.config_context(workspace_bytes=size - 1):
        assert "winograd" not in _grad_weight.routes(spec)


def test_the_closing_product_runs_on_one_blas_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """The product that turns the sums into ``dw`` comes right after the threads' job,
    while the pool's workers still spin: it runs on one BLAS thread, never waiting for
    a second one to find a CPU (settings guide, "Idle workers spin")."""
    from threadpoolctl import threadpool_info

    from dilconv._native import pool

    limited = pool.single_threaded_blas
    seen: list[int] = []

    @contextlib.contextmanager
    def recording() -> Iterator[None]:
        with limited():
            seen.extend(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
            yield

    monkeypatch.setattr(pool, "single_threaded_blas", recording)
    rng = np.random.default_rng(0)
    x, g = rng.standard_normal((1, 12, 12, 8)), rng.standard_normal((1, 12, 12, 8))
    options = {"padding": "same", "data_format": "NHWC"}
    spec = make_spec(x.shape, (3, 3, 8, 8), dtypes=[x.dtype], **options)
    got = _grad_weight_winograd.grad_weight(x, g, spec.lowered())
    assert seen
    assert set(seen) == {1}, seen
    expected, scale = oracle(x, g, (3, 3, 8, 8), **options)
    assert_close(got, expected, magnitude=scale, context="winograd, one BLAS thread")

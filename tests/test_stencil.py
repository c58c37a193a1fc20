"""The one-channel row loop in LLVM (``dilconv._native.stencil_rows``) that
``method="compiled"`` runs for one float channel: the loop oracle's values over
shapes, paddings, dilations and row strides, streamed or not, on aligned and
unaligned outputs, from several threads, and refused where it must not run."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import dilconv
from dilconv._native import calls, kernels, last_level_cache, pool, stencil_kernel, stencil_rows
from dilconv._spec import make_spec
from tests.harness import benchmark_script, in_threads
from tests.tolerance import assert_close

pytest.importorskip("llvmlite.binding")  # the loop runs once LLVM is loaded


def oracle(x: np.ndarray, w: np.ndarray, **options: object) -> np.ndarray:
    """``(N, Ho, Wo)``: the loop oracle on ``x (N, H, W)`` and ``w (kh, kw)``."""
    return dilconv.conv2d(x[:, None], w[None, None], method="direct", **options)[:, 0]


def magnitude(x: np.ndarray, w: np.ndarray, **options: object) -> np.ndarray:
    return oracle(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64), **options)


def run_loop(
    x: np.ndarray,
    w: np.ndarray,
    *,
    shift: int,
    parts: int,
    stream: bool,
    carried: bool | None = None,
    **options: object,
) -> tuple[np.ndarray, np.ndarray]:
    """The loop's result on an output ``shift`` elements into a NaN-filled buffer,
    its rows cut into ``parts`` calls, in checked mode; and the whole buffer
    (``carried``: the loop with the column offsets compiled in, or not)."""
    n, h, wd = x.shape
    spec = make_spec((n, h, wd, 1), (*w.shape, 1, 1), data_format="NHWC",
                     dtypes=[x.dtype, w.dtype], **options)  # fmt: skip
    ho, wo = spec.out_hw
    buffer = np.full(shift + n * ho * wo + 5, np.nan, dtype=x.dtype)
    y = buffer[shift : shift + n * ho * wo].reshape(n, ho, wo)
    bounds = np.linspace(0, n * ho, parts + 1).astype(int)
    rows = tuple((int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True))
    with calls.checked():
        assert stencil_rows.correlate(x, w, y, spec, rows, stream=stream, carried=carried)
    return y, buffer


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 3),
    h=st.integers(1, 24),
    wd=st.integers(1, 70),
    kh=st.integers(1, 5),
    kw=st.integers(1, 5),
    dh=st.integers(1, 6),
    dw=st.integers(1, 9),
    sh=st.integers(1, 3),
    pads=st.tuples(*[st.integers(0, 12)] * 4),
    dtype=st.sampled_from([np.float32, np.float64]),
    stream=st.booleans(),
    shift=st.integers(0, 17),
    parts=st.integers(1, 3),
    carried=st.booleans(),
)
def test_the_loop_equals_the_oracle(
    n: int, h: int, wd: int, kh: int, kw: int, dh: int, dw: int, sh: int,
    pads: tuple[int, int, int, int], dtype: type, stream: bool, shift: int, parts: int,
    carried: bool,
) -> None:  # fmt: skip
    """Every output written (none left NaN), nothing past it, the oracle's values:
    borders masked by rows and columns, whole and partial vectors, stores past the
    caches at aligned and unaligned addresses, with the column offsets compiled in
    (the carried loop, where they are close enough) or not."""
    options = dict(padding=((pads[0], pads[1]), (pads[2], pads[3])), dilation=(dh, dw),
                   stride=(sh, 1))  # fmt: skip
    ho = (h + pads[0] + pads[1] - (kh - 1) * dh - 1) // sh + 1
    wo = wd + pads[2] + pads[3] - (kw - 1) * dw
    assume(ho >= 1 and wo >= 1 and n * ho >= parts)
    rng = np.random.default_rng(h * 1000 + wd)
    x = rng.standard_normal((n, h, wd)).astype(dtype)
    w = rng.standard_normal((kh, kw)).astype(dtype)
    y, buffer = run_loop(x, w, shift=shift, parts=parts, stream=stream, carried=carried,
                         **options)  # fmt: skip
    assert not np.isnan(y).any()
    assert np.isnan(buffer[:shift]).all()
    assert np.isnan(buffer[shift + y.size :]).all()
    assert_close(y, oracle(x, w, **options), magnitude=magnitude(x, w, **options))


def test_infinities_outside_the_taps_stay_out() -> None:
    """A padded lane reads a zero, never ``0 * value``: an infinite input next to the
    border does not turn the border's outputs into NaN."""
    x = np.zeros((1, 8, 40), np.float32)
    x[0, :, -1] = np.inf
    w = np.ones((3, 3), np.float32)
    options = dict(padding=((2, 2), (2, 2)), dilation=(2, 2))
    y, _ = run_loop(x, w, shift=0, parts=1, stream=False, **options)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(oracle(x, w, **options)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_runs_the_loop_for_one_float_channel(dtype: type) -> None:
    """``method="compiled"`` on one channel takes this loop (a kernel is made for
    it), and agrees with the oracle, streamed or not."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 1, 45, 77)).astype(dtype)
    w = rng.standard_normal((1, 1, 3, 3)).astype(dtype)
    kernels.stencil.cache_clear()
    y = dilconv.conv2d(x, w, padding="same", dilation=3, method="compiled")
    assert kernels.stencil.cache_info().currsize == 1
    want = dilconv.conv2d(x, w, padding="same", dilation=3, method="direct")
    assert_close(y, want)


@pytest.mark.parametrize(
    ("shape", "options"),
    [
        ((1, 1, 20, 20), dict(stride=(1, 2))),  # column stride 2
        ((1, 1, 20, 20), dict(padding_mode="reflect", padding=2)),  # lowered first: applies
    ],
)
def test_what_the_loop_declines_numba_computes(shape: tuple[int, ...], options: dict) -> None:
    x = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
    w = np.random.default_rng(5).standard_normal((1, 1, 3, 3)).astype(np.float32)
    y = dilconv.conv2d(x, w, method="compiled", **options)
    assert_close(y, dilconv.conv2d(x, w, method="direct", **options))


def test_it_declines_other_dtypes_strides_and_large_kernels() -> None:
    def spec(**kw: object) -> object:
        base: dict[str, object] = dict(x=(1, 9, 9, 1), w=(3, 3, 1, 1), dtypes=[np.float32] * 2)
        base.update(kw)
        return make_spec(base.pop("x"), base.pop("w"), data_format="NHWC", **base)  # type: ignore[arg-type]

    assert stencil_rows.applies(spec())
    assert not stencil_rows.applies(spec(stride=(1, 2)))
    assert not stencil_rows.applies(spec(dtypes=[np.int64] * 2))
    assert not stencil_rows.applies(spec(x=(1, 20, 20, 1), w=(9, 9, 1, 1)))  # 81 taps
    assert not stencil_rows.applies(spec(w=(3, 3, 1, 2)))  # two outputs
    x, y = np.ones((1, 9, 18)), np.empty((1, 7, 7))
    doubles = spec(dtypes=[np.float64] * 2)
    assert not stencil_rows.correlate(x[:, :, ::2], np.ones((3, 3)), y, doubles, ((0, 7),))
    with pytest.raises(ValueError, match="taps"):
        stencil_kernel.stencil_function(np.dtype(np.float32), 9, 9, False)


def test_arrays_that_disagree_with_the_spec_never_reach_the_loop() -> None:
    """Float32 arrays under a float64 spec would be read as twice their size."""
    import llvmlite.binding  # noqa: F401  (the loop runs only where LLVM is loaded)

    doubles = make_spec((1, 1, 64, 64), (1, 1, 3, 3), padding="same")
    x, y = np.ones((1, 64, 64), np.float32), np.zeros((1, 64, 64), np.float32)
    with pytest.raises(TypeError, match="x: dtype float32, expected the spec's float64"):
        stencil_rows.correlate(x, np.ones((3, 3)), y, doubles, ((0, 64),))
    with pytest.raises(ValueError, match=r"y: shape \(1, 32, 64\), expected \(1, 64, 64\)"):
        stencil_rows.correlate(x.astype(np.float64), np.ones((3, 3)), y[:, :32].astype(np.float64),
                               doubles, ((0, 64),))  # fmt: skip
    with pytest.raises(ValueError, match="taps"):
        stencil_rows.correlate(x.astype(np.float64), np.ones((3, 2)), y.astype(np.float64),
                               doubles, ((0, 64),))  # fmt: skip


def test_large_arrays_stream_small_ones_do_not() -> None:
    cache = last_level_cache.size()
    assert cache >= 2**20
    side = int(np.sqrt(cache / 8)) + 1  # input and output float32: past the cache
    assert stencil_rows.streams(make_spec((1, side, side, 1), (3, 3, 1, 1), padding="same",
                                          data_format="NHWC"))  # fmt: skip
    assert not stencil_rows.streams(make_spec((1, 64, 64, 1), (3, 3, 1, 1), data_format="NHWC"))


def test_cache_sizes_as_linux_writes_them() -> None:
    assert last_level_cache.parse_size("32768K\n") == 32 * 2**20
    assert last_level_cache.parse_size("2M") == 2 * 2**20
    assert last_level_cache.parse_size("512") == 512
    assert last_level_cache.parse_size("") == 0
    assert last_level_cache.parse_size("big") == 0


@pytest.mark.parametrize(
    ("reported", "sharing", "expected"),
    [
        ("491520K", "0-1", 8 * 2**20),  # a VM's two vCPUs reporting the host's cache
        ("1024K", "0-1", 2**20),  # smaller than the share: as reported
        ("32768K", "0-7,64-71", 32 * 2**20),  # 16 CPUs share it: 64 MiB would be allowed
        ("491520K", None, 480 * 2**20),  # no list of the CPUs that share it
    ],
)
def test_the_cache_counted_is_at_most_a_share_per_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reported: str, sharing: str | None,
    expected: int,
) -> None:  # fmt: skip
    for level, size in ((1, "48K"), (2, "2048K"), (3, reported)):
        index = tmp_path / f"index{level}"
        index.mkdir()
        (index / "level").write_text(f"{level}\n")
        (index / "size").write_text(f"{size}\n")
        if sharing is not None:
            (index / "shared_cpu_list").write_text(f"{sharing}\n")
    monkeypatch.setattr(last_level_cache, "CACHE_DIR", tmp_path)
    last_level_cache.size.cache_clear()
    try:
        assert last_level_cache.size() == expected
    finally:
        last_level_cache.size.cache_clear()


@pytest.mark.parametrize(
    ("sharing", "expected"),
    [("0\n", 2 * 2**20), ("0,64\n", 2**20), (None, 2 * 2**20), ("", None)],
)
def test_a_cores_own_cache_is_its_level_2_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sharing: str | None, expected: int | None
) -> None:
    """Level 2 per CPU sharing it (two hardware threads: half); no level 2: the default."""
    levels = ((1, "48K"), (2, "2048K"), (3, "491520K")) if expected else ((1, "48K"),)
    for level, size in levels:
        index = tmp_path / f"index{level}"
        index.mkdir()
        (index / "level").write_text(f"{level}\n")
        (index / "size").write_text(f"{size}\n")
        if sharing is not None:
            (index / "shared_cpu_list").write_text(sharing)
    monkeypatch.setattr(last_level_cache, "CACHE_DIR", tmp_path)
    last_level_cache.core_size.cache_clear()
    try:
        want = last_level_cache.DEFAULT_CORE_BYTES if expected is None else expected
        assert last_level_cache.core_size() == want
    finally:
        last_level_cache.core_size.cache_clear()


def test_cpu_lists_as_linux_writes_them() -> None:
    assert last_level_cache.count_cpus("0\n") == 1
    assert last_level_cache.count_cpus("0-15") == 16
    assert last_level_cache.count_cpus("0-1,4,6-7") == 5
    assert last_level_cache.count_cpus("") == 0
    assert last_level_cache.count_cpus("1-x") == 0
    assert last_level_cache.count_cpus("3-1") == 0


def test_checked_mode_refuses_a_call_past_its_arrays() -> None:
    kernel = kernels.stencil(np.dtype(np.float32), 3, 3, False)
    x, y = np.ones(8 * 16, np.float32), np.empty(8 * 16, np.float32)
    call = kernel.call(x=calls.Slot("x"), w=calls.Ref(np.ones(9, np.float32)),
                       out=calls.Slot("out"), first=0, last=9,  # 9 rows of 8
                       height=8, width=16, out_rows=9, out_width=16, row_stride=1,
                       row_dilation=1, column_dilation=1, top=1, left=1)  # fmt: skip
    with calls.checked(), pytest.raises(RuntimeError, match="stencil"):
        calls.Binding(x=x, out=y).run([call])


def test_many_threads_at_once_agree() -> None:
    """Streamed and cached calls of several sizes from 6 threads, 10 each, every
    result the one a single thread gives."""
    rng = np.random.default_rng(6)
    cases = [(rng.standard_normal((1, 1, s, s + 3)).astype(np.float32), d)
             for s, d in ((64, 1), (300, 4), (1100, 2))]  # fmt: skip
    w = rng.standard_normal((1, 1, 3, 3)).astype(np.float32)
    want = [dilconv.conv2d(x, w, padding="same", dilation=d, method="compiled") for x, d in cases]
    errors: list[str] = []

    def work() -> None:
        for _ in range(10):
            for (x, d), expected in zip(cases, want, strict=True):
                got = dilconv.conv2d(x, w, padding="same", dilation=d, method="compiled")
                if not np.array_equal(got, expected):
                    errors.append(f"{x.shape} d={d} differs")

    in_threads(work, 6)
    assert not errors


def test_the_rows_script_times_two_routes_that_agree() -> None:
    """benchmarks/one_channel_rows.py's LLVM and Numba routes agree, and the Numba
    route puts the LLVM loop back."""
    script = benchmark_script("one_channel_rows")
    for shape, taps, d in (((40, 70), (3, 3), 2), ((1, 500), (1, 3), 64)):
        calls = script.routes(shape, taps, d)
        llvm, numba = np.asarray(calls["llvm"]()), np.asarray(calls["numba"]())
        assert_close(llvm, numba)
        assert stencil_rows.correlate is script.stencil_rows.correlate
        assert stencil_rows.correlate.__name__ == "correlate"


def test_the_rows_script_runs_end_to_end(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """benchmarks/one_channel_rows.py's main prints a line per case (small cases here)."""
    script = benchmark_script("one_channel_rows")
    monkeypatch.setattr(script, "CASES", (("small", (40, 70), (3, 3), 2),))
    script.main(["--repeats", "2", "--pause", "0"])
    out = capsys.readouterr().out
    assert "last-level cache" in out
    assert re.search(r"small +llvm [0-9.]+ ms, numba [0-9.]+ ms", out), out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("kh", "kw", "d", "pad"),
    [(3, 3, 1, 1), (3, 3, 4, 4), (3, 3, 16, 16), (3, 3, 7, 0), (2, 5, 3, 11), (1, 3, 2, 2)],
)
def test_the_carried_loop_on_wide_rows(kh: int, kw: int, d: int, pad: int, dtype: type) -> None:
    """Rows of several hundred vectors, where most of each row is carried: the
    oracle's values, aligned rows or not, streamed or not."""
    rng = np.random.default_rng(d * 10 + kw)
    for wd in (16 * 40, 16 * 40 + 7):
        x = rng.standard_normal((2, 3 * d + 5, wd)).astype(dtype)
        w = rng.standard_normal((kh, kw)).astype(dtype)
        options = dict(padding=((d, d), (pad, pad)), dilation=(d, d))
        want = oracle(x, w, **options)
        for stream in (False, True):
            y, _ = run_loop(x, w, shift=0, parts=2, stream=stream, carried=True, **options)
            assert_close(y, want, magnitude=magnitude(x, w, **options))


def test_a_carried_loop_given_other_offsets_runs_the_generic_one() -> None:
    """A kernel compiled for the offsets of dilation 4 and called with dilation 2's
    computes dilation 2's result (it checks them, and takes the generic loop)."""
    kernel = kernels.stencil(np.dtype(np.float32), 3, 3, False, (-4, 0, 4))
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 12, 200)).astype(np.float32)
    w = rng.standard_normal((3, 3)).astype(np.float32)
    y = np.full((12, 200), np.nan, np.float32)
    call = kernel.call(x=calls.Slot("x"), w=calls.Ref(w.reshape(-1)), out=calls.Slot("out"),
                       first=0, last=12, height=12, width=200, out_rows=12, out_width=200,
                       row_stride=1, row_dilation=2, column_dilation=2, top=2, left=2,
                       )  # fmt: skip
    with calls.checked():
        calls.Binding(x=x.reshape(-1), out=y.reshape(-1)).run([call])
    options = dict(padding=2, dilation=2)
    assert_close(y[None], oracle(x, w, **options), magnitude=magnitude(x, w, **options))


def test_which_calls_get_their_offsets_compiled_in() -> None:
    """Large calls with offsets a few vectors apart; small ones only when asked;
    never offsets too far apart."""

    def spec(hw: int, d: int, **options: object) -> object:
        return make_spec((1, hw, hw, 1), (3, 3, 1, 1), data_format="NHWC", padding="same",
                         dilation=d, **options)  # fmt: skip

    lanes = stencil_kernel.lanes(np.dtype(np.float32))
    assert stencil_rows.carried_columns(spec(2048, 4)) == (-4, 0, 4)
    assert stencil_rows.carried_columns(spec(2048, 4), False) is None
    assert stencil_rows.carried_columns(spec(64, 4)) is None
    assert stencil_rows.carried_columns(spec(64, 4), True) == (-4, 0, 4)
    assert stencil_rows.carried_columns(spec(2048, 2 * lanes)) is None  # 5 vectors apart
    with pytest.raises(ValueError, match="offsets"):
        stencil_kernel.stencil_function(np.dtype(np.float32), 3, 3, False, (0, 1))
    with pytest.raises(ValueError, match="offsets"):
        stencil_kernel.stencil_function(np.dtype(np.float32), 1, 2, False, (0, 10 * lanes))


def test_which_calls_run_on_rows_of_the_cut() -> None:
    """One kernel row whose taps lie far enough apart, dividing the width and both
    column pads, unit strides, no padding rows; nothing else."""

    def spec(shape: tuple[int, ...], kernel: tuple[int, int], d: int, **options: object) -> object:
        base = dict(padding=((0, 0), (d, d)), dilation=(1, d), data_format="NHWC",
                    dtypes=[np.dtype(np.float32)] * 2)  # fmt: skip
        return make_spec(shape, (*kernel, 1, 1), **{**base, **options}).lowered()

    rows = stencil_rows.folded(spec((2, 3, 4096, 1), (1, 3), 256))
    assert (rows.batch, rows.in_hw, rows.kernel_hw, rows.pad) == (
        6,
        (16, 256),
        (3, 1),
        ((1, 1), (0, 0)),
    )
    causal = stencil_rows.folded(spec((1, 1, 4096, 1), (1, 3), 256, padding=((0, 0), (512, 0))))
    assert causal.pad == ((2, 0), (0, 0))
    assert stencil_rows.folded(spec((1, 1, 4096, 1), (1, 3), 16)) is None  # 64 bytes apart
    assert stencil_rows.folded(spec((1, 1, 4000, 1), (1, 3), 256)) is None  # width
    assert stencil_rows.folded(spec((1, 1, 4096, 1), (1, 3), 256, padding=((0, 0), (3, 3)))) is None
    assert stencil_rows.folded(spec((1, 3, 4096, 1), (3, 3), 256)) is None  # three kernel rows
    assert stencil_rows.folded(spec((1, 3, 4096, 1), (1, 3), 256, stride=(2, 1))) is None
    assert (
        stencil_rows.folded(spec((1, 3, 4096, 1), (1, 3), 256, padding=((1, 1), (256, 256))))
        is None
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("n", "h", "wd", "kw", "d", "pads"),
    [
        (1, 1, 2**16, 3, 4096, (4096, 4096)),  # a 1-D signal, padding "same"
        (1, 1, 2**15, 3, 1024, (2048, 0)),  # causal
        (2, 3, 2048, 2, 256, (0, 0)),  # valid, several images of several rows
        (1, 2, 4096, 5, 512, (1024, 512)),  # uneven pads
    ],
)
def test_rows_of_the_cut_equal_the_oracle(
    n: int, h: int, wd: int, kw: int, d: int, pads: tuple[int, int], dtype: type
) -> None:
    """``method="compiled"`` runs such calls on rows of ``d`` columns: the loop oracle's
    values, every output written, in checked mode, and in 1-D through ``conv1d``."""
    rng = np.random.default_rng(kw * d)
    x = rng.standard_normal((n, h, wd)).astype(dtype)
    w = rng.standard_normal((1, kw)).astype(dtype)
    options = dict(padding=((0, 0), pads), dilation=(1, d))
    taken = []
    folded = stencil_rows.folded

    def spy(spec: object) -> object:
        found = folded(spec)
        taken.append(found is not None)
        return found

    with pytest.MonkeyPatch.context() as patch, calls.checked():
        patch.setattr(stencil_rows, "folded", spy)
        got = dilconv.conv2d(x[..., None], w[..., None, None], data_format="NHWC",
                             method="compiled", **options)[..., 0]  # fmt: skip
    assert taken[0]
    assert_close(got, oracle(x, w, **options), magnitude=magnitude(x, w, **options))
    if n == 1 and h == 1:
        signal = dilconv.conv1d(x[0, 0][None, None], w[0][None, None], padding=[pads],
                                dilation=d, method="compiled")  # fmt: skip
        assert_close(signal[0, 0], got[0, 0], magnitude=magnitude(x, w, **options)[0, 0])


def test_which_calls_cut_one_long_row_among_the_threads() -> None:
    """One image of one row, output of PIECE_MIN_BYTES or more, more than one thread;
    pieces at multiples of 64 columns covering the output once, each reading the
    input its outputs need and padding only what the call pads."""
    base = dict(data_format="NHWC", dtypes=[np.dtype(np.float32)] * 2)
    wide = stencil_rows.PIECE_MIN_BYTES // 4

    def spec(shape: tuple[int, ...], kw: int, d: int, pads: tuple[int, int]) -> object:
        return make_spec(shape, (1, kw, 1, 1), padding=((0, 0), pads), dilation=(1, d),
                         **base).lowered()  # fmt: skip

    for threads in (2, 3, 5):
        for pads in [(0, 0), (2, 2), (6, 0), (0, 9), (100, 3)]:
            call = spec((1, 1, wide + 70, 1), 4, 3, pads)
            pieces = stencil_rows.row_pieces(call, threads)
            assert len(pieces) == threads
            wo = call.out_hw[1]
            assert [p.first_out for p in pieces] + [wo] == [0] + [p.last_out for p in pieces]
            for p in pieces:
                assert p.first_out % 64 == 0
                assert p.spec.out_hw == (1, p.last_out - p.first_out)
                assert p.spec.in_hw == (1, p.last_in - p.first_in)
                assert p.first_in == max(0, p.first_out - pads[0])
            assert pieces[0].spec.pad[1][0] == pads[0]
            assert pieces[-1].spec.pad[1][1] == pads[1]
            assert all(p.spec.pad[1] == (0, 0) for p in pieces[1:-1])
    assert stencil_rows.row_pieces(spec((1, 1, wide, 1), 3, 1, (1, 1)), 1) is None  # one thread
    assert stencil_rows.row_pieces(spec((1, 1, wide // 2, 1), 3, 1, (1, 1)), 2) is None  # short
    assert stencil_rows.row_pieces(spec((2, 1, wide, 1), 3, 1, (1, 1)), 2) is None  # two rows
    assert stencil_rows.row_pieces(spec((1, 2, wide, 1), 3, 1, (1, 1)), 2) is None
    # a piece of nothing but padding leaves the row whole
    assert stencil_rows.row_pieces(spec((1, 1, 8, 1), 3, 1, (2 * wide, 0)), 2) is None


@pytest.fixture
def short_pieces(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Rows cut from 4 KiB of output on (for an oracle that takes seconds on longer
    ones); nothing cut with it outlives the test."""
    stencil_rows.row_pieces.cache_clear()
    monkeypatch.setattr(stencil_rows, "PIECE_MIN_BYTES", 2**12)
    yield
    stencil_rows.row_pieces.cache_clear()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize(
    ("kw", "d", "pads", "extra"),
    [
        (3, 1, (1, 1), 0),  # a signal, padding "same"
        (2, 5, (5, 0), 13),  # causal
        (5, 7, (0, 0), 29),  # valid
        (4, 3, (11, 2), 3),  # uneven pads
        (3, 2, (0, 500), 1),  # the last piece mostly padding
    ],
)
def test_pieces_of_one_long_row_equal_the_oracle(
    kw: int,
    d: int,
    pads: tuple[int, int],
    extra: int,
    threads: int,
    dtype: type,
    short_pieces: None,
) -> None:
    """``method="compiled"`` on one long row, cut among the threads: the loop oracle's
    values, every output written, in checked mode, NaN around the input untouched."""
    width = stencil_rows.PIECE_MIN_BYTES // np.dtype(dtype).itemsize + extra
    rng = np.random.default_rng(kw * d + extra)
    x = rng.standard_normal((1, 1, width)).astype(dtype)
    w = rng.standard_normal((1, kw)).astype(dtype)
    options = dict(padding=((0, 0), pads), dilation=(1, d))
    cut = []
    original = stencil_rows._correlate_pieces

    def spy(*args: object) -> bool:
        cut.append(len(args[4]))  # type: ignore[arg-type]
        return original(*args)  # type: ignore[arg-type]

    with (
        pytest.MonkeyPatch.context() as patch,
        calls.checked(),
        dilconv.config_context(threads=threads),
    ):
        patch.setattr(stencil_rows, "_correlate_pieces", spy)
        got = dilconv.conv2d(x[..., None], w[..., None, None], data_format="NHWC",
                             method="compiled", **options)[..., 0]  # fmt: skip
    assert cut == [min(threads, pool.num_threads())]
    assert_close(got, oracle(x, w, **options), magnitude=magnitude(x, w, **options))
    signal = dilconv.conv1d(x[0], w[None], padding=[pads], dilation=d, method="compiled")
    np.testing.assert_array_equal(signal[0], got[0, 0])


def test_pieces_of_one_row_from_many_threads_at_once(short_pieces: None) -> None:
    """Callers on four threads each cutting their own long row: every result its own."""
    width = stencil_rows.PIECE_MIN_BYTES // 4 + 999
    rng = np.random.default_rng(3)
    signals = [rng.standard_normal((1, 1, width)).astype(np.float32) for _ in range(4)]
    w = np.array([[[0.5, -1.0, 2.0]]], np.float32)
    expected = [dilconv.conv1d(s, w, padding="same", dilation=2, method="direct") for s in signals]

    results: list[tuple[int, np.ndarray]] = []
    lock = threading.Lock()

    def run() -> None:
        with lock:
            k = len(results) % 4
        for _ in range(3):
            got = dilconv.conv1d(signals[k], w, padding="same", dilation=2, method="compiled")
            with lock:
                results.append((k, got))

    in_threads(run, 4)
    assert len(results) == 12
    for k, got in results:
        assert_close(got, expected[k])


@pytest.mark.parametrize("shift", [0, 12, 48])
def test_the_result_starts_half_a_page_from_the_input(shift: int) -> None:
    """A one-channel result lies 2-2.06 KiB past its input modulo 4 KiB, whatever the
    input's address (stores and later loads never share their last 12 address bits),
    with the values of an input elsewhere."""
    raw = np.random.default_rng(shift).standard_normal(300 * 257 + 64).astype(np.float32)
    x = raw[shift // 4 : shift // 4 + 300 * 257].reshape(300, 257)
    w = np.arange(9, dtype=np.float32).reshape(3, 3)
    y = dilconv.conv2d(x, w, padding="same", dilation=2, method="compiled")
    at = (calls.address_of(y) - calls.address_of(x)) % 4096
    assert 2048 <= at < 2048 + 64
    np.testing.assert_array_equal(y, dilconv.conv2d(x.copy(), w, padding="same", dilation=2,
                                                   method="compiled"))  # fmt: skip

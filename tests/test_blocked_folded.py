"""``blocked`` with its kernel columns folded into the output channels (few outputs)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import dilconv
from dilconv._methods import _blocked_folded, blocked
from dilconv._native import calls, tile_kernel
from dilconv._spec import make_spec
from tests.tolerance import assert_close

#: 16-lane registers (AVX-512), whatever rate their multiply-adds run at.
WIDE_REGISTERS = tile_kernel.host_lanes()["bytes"] == 64


def _spec(x_shape, w_shape, dtype=np.float32, **options):
    return make_spec(
        x_shape, w_shape, data_format="NHWC", dtypes=[np.dtype(dtype)], **options
    ).lowered()


#: ``blocked`` plans 21 output channels in vectors of 16 lanes here: AVX-512 at full
#: rate. Where 512-bit multiply-adds run at half rate (Zen 4) it takes 3 x 8 lanes,
#: and the folding decisions differ.
SIXTEEN_LANES = blocked.plan(_spec((1, 8, 8, 21), (3, 3, 21, 21))).lanes == 16


def _unfolded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_blocked_folded, "pays", lambda spec: False)


@given(
    n=st.integers(1, 2),
    h=st.integers(1, 14),
    w=st.integers(1, 40),
    c=st.integers(1, 9),
    o=st.sampled_from([1, 2, 3, 5, 7, 9, 12, 21]),
    kh=st.integers(1, 3),
    kw=st.integers(2, 4),
    dilation=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    stride=st.integers(1, 2),
    padding=st.one_of(
        st.sampled_from(["same", "valid"]),
        st.tuples(
            st.tuples(st.integers(0, 6), st.integers(0, 6)),
            st.tuples(st.integers(0, 9), st.integers(0, 9)),
        ),
    ),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_folded_matches_the_loop_oracle(
    n, h, w, c, o, kh, kw, dilation, stride, padding, dtype, seed
):
    """Every output, including those whose kernel columns read padding, against ``direct``."""
    options = {"dilation": dilation, "padding": padding, "stride": (stride, 1)}
    if padding == "same":
        options["stride"] = 1
    try:
        spec = _spec((n, h, w, c), (kh, kw, c, o), dtype, **options)
    except ValueError:
        assume(False)  # no output
    assume(spec.out_hw[0] > 0 and spec.out_hw[1] > 0)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, w, c)).astype(dtype)
    k = rng.standard_normal((kh, kw, c, o)).astype(dtype)
    opts = {**options, "data_format": "NHWC"}
    expected = dilconv.conv2d(x, k, method="direct", **opts)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_blocked_folded, "MARGIN", 0)  # folded wherever vectors are saved
        actual = dilconv.conv2d(x, k, method="blocked", **opts)
    scale = dilconv.conv2d(np.abs(x), np.abs(k), method="direct", **opts)
    assert_close(actual, expected, dtype=dtype, magnitude=scale, context=f"{spec}")


@pytest.mark.skipif(not SIXTEEN_LANES, reason="the folding decisions below assume 16 lanes")
def test_when_folding_pays() -> None:
    """Folded where the kernel's columns fill fewer vectors as channels, in one block."""
    assert _blocked_folded.pays(_spec((1, 64, 64, 21), (3, 3, 21, 21)))  # 4 vectors, not 6
    assert _blocked_folded.pays(_spec((1, 64, 64, 16), (3, 3, 16, 5)))  # 1, not 3
    assert _blocked_folded.pays(_spec((1, 64, 64, 32), (3, 2, 32, 8)))  # 1, not 2
    assert not _blocked_folded.pays(_spec((1, 64, 64, 3), (3, 3, 3, 5)))  # saves too few
    assert not _blocked_folded.pays(_spec((1, 64, 64, 12), (3, 3, 12, 21)))
    assert not _blocked_folded.pays(_spec((1, 64, 64, 16), (3, 3, 16, 16)))  # 3 either way
    assert not _blocked_folded.pays(_spec((1, 64, 64, 64), (3, 3, 64, 64)))  # whole vectors
    assert not _blocked_folded.pays(_spec((1, 64, 64, 21), (3, 3, 21, 24)))  # 72: two blocks
    assert not _blocked_folded.pays(_spec((1, 64, 64, 21), (3, 1, 21, 21)))  # one column
    assert not _blocked_folded.pays(_spec((1, 64, 64, 21), (3, 3, 21, 21), stride=2))
    assert not _blocked_folded.pays(_spec((1, 64, 64, 22), (3, 3, 11, 22), groups=2))
    assert not _blocked_folded.pays(_spec((1, 1, 4096, 21), (1, 3, 21, 21)))  # one row
    wide = (1, 64, _blocked_folded.MAX_ROW_BYTES // (4 * 63) + 1, 21)
    assert not _blocked_folded.pays(_spec(wide, (3, 3, 21, 21), padding="same"))


def test_the_remembered_choice_follows_the_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    """``pays`` is remembered per spec, yet a changed threshold counts at once (the
    property test above folds every call it can by setting ``MARGIN`` to 0)."""
    spec = _spec((1, 64, 64, 3), (3, 3, 3, 5))  # saves too few multiply-adds
    assert not _blocked_folded.pays(spec)
    monkeypatch.setattr(_blocked_folded, "MARGIN", 0)
    assert _blocked_folded.pays(spec)  # every vector saved counts
    monkeypatch.setattr(_blocked_folded, "MIN_ROWS", 65)  # more rows than the output has
    assert not _blocked_folded.pays(spec)
    monkeypatch.undo()
    assert not _blocked_folded.pays(spec)


def test_folded_agrees_with_the_usual_tile_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """The two routes of ``blocked`` differ by rounding only, at every dilation."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 40, 48, 21)).astype(np.float32)
    k = rng.standard_normal((3, 3, 21, 21)).astype(np.float32)
    scale = dilconv.conv2d(np.abs(x), np.abs(k), padding="same", dilation=4, data_format="NHWC")
    folded = {
        d: dilconv.conv2d(x, k, padding="same", dilation=d, data_format="NHWC", method="blocked")
        for d in (1, 2, 4, 16)
    }
    _unfolded(monkeypatch)
    for d, y in folded.items():
        usual = dilconv.conv2d(
            x, k, padding="same", dilation=d, data_format="NHWC", method="blocked"
        )
        assert_close(y, usual, dtype=np.float32, magnitude=scale, context=f"dilation {d}")


@pytest.mark.parametrize("chunk_bytes", [1, 3 * 40 * 63 * 4, 2**18])
def test_chunks_and_threads_give_the_same_bits(
    monkeypatch: pytest.MonkeyPatch, chunk_bytes: int
) -> None:
    """A row's sums do not depend on how the rows are cut among threads and chunks."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 23, 40, 21)).astype(np.float32)
    k = rng.standard_normal((3, 3, 21, 21)).astype(np.float32)
    monkeypatch.setattr(_blocked_folded, "CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(blocked, "PARALLEL_WORK", 0)  # small calls share too
    _blocked_folded.fold_calls.cache_clear()
    results = []
    for threads in (1, 2, 3):
        with dilconv.config_context(threads=threads):
            results.append(
                dilconv.conv2d(
                    x, k, padding="same", dilation=3, data_format="NHWC", method="blocked"
                )
            )
    _blocked_folded.fold_calls.cache_clear()
    for y in results[1:]:
        np.testing.assert_array_equal(y, results[0])


def test_folded_calls_pass_in_checked_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each native call's reads and writes stay within the arrays bound to it (folded
    wherever the plan allows it, as in the property test above)."""
    monkeypatch.setattr(_blocked_folded, "MARGIN", 0)
    rng = np.random.default_rng(5)
    for shape, w_shape, options in [
        ((2, 13, 29, 24), (3, 3, 24, 21), {"padding": "same", "dilation": (2, 5)}),
        ((1, 9, 17, 40), (2, 4, 40, 5), {"padding": ((3, 0), (7, 1)), "dilation": 3}),
        (
            (1, 24, 30, 32),
            (3, 3, 32, 9),
            {"padding": "valid", "dilation": (1, 4), "stride": (2, 1)},
        ),
    ]:
        x = rng.standard_normal(shape).astype(np.float32)
        k = rng.standard_normal(w_shape).astype(np.float32)
        assert _blocked_folded.pays(_spec(shape, w_shape, **options)) or not WIDE_REGISTERS
        with calls.checked():
            y = dilconv.conv2d(x, k, data_format="NHWC", method="blocked", **options)
        want = dilconv.conv2d(x, k, data_format="NHWC", method="direct", **options)
        scale = dilconv.conv2d(np.abs(x), np.abs(k), data_format="NHWC", **options)
        assert_close(y, want, dtype=np.float32, magnitude=scale, context=f"{options}")


def test_checked_mode_refuses_sums_past_their_buffer() -> None:
    """The column sums' extents are checked: a ``z`` too short for its rows is refused."""
    if not WIDE_REGISTERS:
        pytest.skip("the call below is planned for 16-lane registers")
    spec = _spec((1, 16, 24, 4), (3, 3, 4, 21), padding="same")
    planned = _blocked_folded.fold_calls(spec, 1)
    fold = [c for c in planned.shares[0] if c.kernel.label.startswith("fold sums")]
    assert len(fold) == 1
    arrays = {
        "z": np.zeros(planned.z_elements - 24 * 63, np.float32),  # a row short
        "out": np.zeros(16 * 24 * 21, np.float32),
    }
    with calls.checked(), pytest.raises(RuntimeError, match="fold sums.*'z'"):
        calls.Binding(**arrays).run(fold[-1:])


def test_threads_calling_at_once() -> None:
    """Several threads call the folded route at once, each on its own arrays; each
    result is its own (the calls and tables are shared, the sums' buffer is not)."""
    rng = np.random.default_rng(6)
    k = rng.standard_normal((3, 3, 21, 21)).astype(np.float32)
    inputs = [rng.standard_normal((1, 30, 64, 21)).astype(np.float32) for _ in range(4)]
    want = [
        dilconv.conv2d(x, k, padding="same", dilation=2, data_format="NHWC", method="blocked")
        for x in inputs
    ]
    errors: list[str] = []
    start = threading.Barrier(len(inputs))

    def work(i: int) -> None:
        start.wait()
        for _ in range(20):
            y = dilconv.conv2d(
                inputs[i], k, padding="same", dilation=2, data_format="NHWC", method="blocked"
            )
            if not np.array_equal(y, want[i]):
                errors.append(f"thread {i}")
                return

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_workspace_counts_the_folded_packing_and_sums() -> None:
    spec = _spec((1, 64, 64, 21), (3, 3, 21, 21), padding="same")
    if _blocked_folded.pays(spec):
        threads = _blocked_folded.thread_count(spec)
        rows = _blocked_folded.chunk_rows(spec, threads)
        z = threads * rows * 64 * 63 * 4
        assert (
            blocked.workspace_bytes(spec)
            == blocked.packed_bytes(_blocked_folded.folded_spec(spec)) + z
        )
        assert _blocked_folded.fold_calls(spec, threads).z_elements * 4 == z
    assert blocked.packed_bytes(spec) == 9 * 21 * 32 * 4 or not SIXTEEN_LANES

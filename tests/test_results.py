"""Large results on kept memory (``dilconv._native.results``): reused only once nothing refers
to any of it, within the ``recycle_bytes`` bound, from any number of threads."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import numpy as np
import pytest

import dilconv
from dilconv._native import calls, results

BIG = (results.MIN_BYTES // 4 + 1024,)  # float32 elements: just past the threshold


@pytest.fixture(autouse=True)
def nothing_kept() -> Iterator[None]:
    gc.collect()
    results.forget()
    yield
    gc.collect()
    results.forget()


address = calls.address_of


def test_a_dropped_result_is_reused_and_a_live_one_never() -> None:
    first = results.new_result(BIG, np.float32)
    first.fill(1.0)
    second = results.new_result(BIG, np.float32)  # first is alive: other memory
    assert not np.shares_memory(first, second)
    held = address(first)
    del first
    third = results.new_result(BIG, np.float32)
    assert address(third) == held
    fourth = results.new_result(BIG, np.float32)  # the block is third's now
    assert not np.shares_memory(third, fourth)
    assert not np.shares_memory(second, fourth)
    assert results.kept_bytes() == 3 * third.nbytes


@pytest.mark.parametrize(
    "keep",
    [
        lambda y: y[::3],
        lambda y: y.reshape(-1, 4)[1:].T,
        lambda y: memoryview(y),
        lambda y: np.frombuffer(memoryview(y), dtype=np.uint8),
        lambda y: y.view(np.int32),
        lambda y: [y[5:]],
    ],
    ids=["slice", "reshape-transpose", "memoryview", "frombuffer", "view", "in-a-list"],
)
def test_any_view_keeps_the_memory_from_being_reused(keep: object) -> None:
    """A view of any kind outlives its result: later results take other memory, and
    the view still reads what was written."""
    y = results.new_result(BIG, np.float32)
    y[:] = np.arange(y.size, dtype=np.float32)
    expected = np.array(np.asarray(_first(keep(y.copy()))))  # type: ignore[operator]
    kept = keep(y)  # type: ignore[operator]
    del y
    gc.collect()
    others = []
    for _ in range(3):
        other = results.new_result(BIG, np.float32)
        other.fill(-1.0)
        others.append(other)
        del other
    survivor = np.asarray(_first(kept))
    assert not any(np.shares_memory(survivor, other) for other in others)
    np.testing.assert_array_equal(survivor, expected)


def _first(kept: object) -> object:
    return kept[0] if isinstance(kept, list) else kept


def test_views_still_read_their_values_after_other_calls() -> None:
    y = results.new_result(BIG, np.float32)
    y[:] = 7.0
    tail = y[-10:]
    del y
    for _ in range(4):
        results.new_result(BIG, np.float32).fill(-3.0)
    np.testing.assert_array_equal(tail, np.full(10, 7.0, np.float32))


def test_the_bound_holds_and_zero_keeps_nothing() -> None:
    nbytes = BIG[0] * 4
    with dilconv.config_context(recycle_bytes=nbytes):
        a = results.new_result(BIG, np.float32)
        b = results.new_result(BIG, np.float32)  # past the bound: plain memory
        assert results.kept_bytes() == nbytes
        assert not np.shares_memory(a, b)
        del a, b
    with dilconv.config_context(recycle_bytes=0):
        c = results.new_result(BIG, np.float32)
        assert c.flags.owndata  # plain memory
    results.forget()
    assert results.kept_bytes() == 0


def test_a_lease_refused_returns_nothing_and_raises_nothing_later() -> None:
    """A block that cannot be leased raises at once; the half-made lease's finalizer
    then has nothing to hand back (and no error to print: warnings are errors here)."""
    from dilconv._native import calls

    returned: list[object] = []
    for block in (np.zeros(64, np.uint8)[::2], np.zeros(8, np.uint8)):
        with pytest.raises(ValueError, match="block"):
            calls.Lease(
                block, (4,), np.dtype(np.float32), on_release=lambda b, at: returned.append(b)
            )
        gc.collect()
    assert returned == []


def test_small_results_are_plain_arrays() -> None:
    small = results.new_result((3, 5), np.float64)
    assert small.flags.owndata
    assert small.shape == (3, 5)
    assert small.dtype == np.float64


def test_many_threads_never_share_a_live_result() -> None:
    """Each thread writes its own number into results it holds for a while, while
    the others take and drop results of the same size; every value stays."""
    errors: list[str] = []
    barrier = threading.Barrier(6)

    def work(k: int) -> None:
        barrier.wait()
        held = []
        for step in range(25):
            y = results.new_result(BIG, np.float32)
            y.fill(float(k * 1000 + step))
            held.append((k * 1000 + step, y))
            if len(held) > 2:
                value, old = held.pop(0)
                if not (old == value).all():
                    errors.append(f"thread {k}: a held result changed")
        for value, old in held:
            if not (old == value).all():
                errors.append(f"thread {k}: a held result changed")

    before = dilconv.get_config()["recycle_bytes"]
    dilconv.set_config(recycle_bytes=16 * BIG[0] * 4)  # every thread's bound
    try:
        threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert results.kept_bytes() <= 16 * BIG[0] * 4
    finally:
        dilconv.set_config(recycle_bytes=before)


def test_convolutions_on_reused_memory_are_exact() -> None:
    """Results of calls whose outputs land on kept memory: each call's result equals
    the same call computed alone, while earlier results are still held."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 128, 128, 64), dtype=np.float32)
    w = rng.standard_normal((3, 3, 64, 64), dtype=np.float32)
    options = {"padding": "same", "dilation": 2, "data_format": "NHWC"}
    first = dilconv.conv2d(x, w, method="blocked", **options)
    assert first.nbytes >= results.MIN_BYTES
    expected = first.copy()
    second = dilconv.conv2d(-x, w, method="blocked", **options)
    np.testing.assert_array_equal(first, expected)
    np.testing.assert_array_equal(second, -expected)
    del first
    third = dilconv.conv2d(x, w, method="blocked", **options)
    np.testing.assert_array_equal(third, expected)
    np.testing.assert_array_equal(second, -expected)


def test_the_setting_is_checked() -> None:
    with pytest.raises(ValueError, match="recycle_bytes.*-1"):
        dilconv.set_config(recycle_bytes=-1)
    with pytest.raises(TypeError, match="recycle_bytes"):
        dilconv.set_config(recycle_bytes=True)


def _poisoned(shape: tuple[int, ...], dtype: type) -> int:
    """Leave a kept block of ``shape`` full of NaN (as a dropped array would); its address."""
    block = results.new_result(shape, dtype)
    block.fill(np.nan)
    held = address(block)
    del block
    return held


def test_packed_weights_reuse_kept_memory_and_zero_what_the_caller_never_wrote() -> None:
    # 8192 input channels, 20 outputs: 12 padding lanes a tap and channel with vectors
    # of 16 (9.4 MiB), 4 with vectors of 8 where the CPU runs the widest at half rate
    # (7 MiB): kept blocks either way; and 16 * 8192 * 32 values of Winograd's U
    from dilconv._methods import _winograd_products, blocked
    from dilconv._spec import make_spec

    rng = np.random.default_rng(5)
    c = 8192
    w = rng.standard_normal((3, 3, c, 20)).astype(np.float32)
    spec = make_spec((1, 8, 8, c), w.shape, dtypes=[w.dtype], data_format="NHWC").lowered()
    p = blocked.plan(spec)
    shape = (1, len(p.out_blocks), 9, c, p.vectors * p.lanes)
    assert p.vectors * p.lanes > 20
    assert np.prod(shape) * 4 >= results.MIN_BYTES
    held = _poisoned(shape, np.float32)
    packed = blocked.pack_weights(w, spec, p)
    assert address(packed) == held
    assert not packed.flags.owndata
    expected = np.zeros(shape, np.float32)
    for b, (o0, o1) in enumerate(p.out_blocks):
        expected[0, b, :, :, : o1 - o0] = w.reshape(9, c, 20)[..., o0:o1]
    np.testing.assert_array_equal(packed, expected)

    q = _winograd_products.product_plan(spec)
    u_shape = (len(q.out_blocks), 16, c, q.vectors * q.lanes)
    held = _poisoned(u_shape, np.float32)
    u, _ = _winograd_products.transform_weights(w, spec, q)
    assert address(u) == held
    with dilconv.config_context(recycle_bytes=0):  # on fresh memory: the same values
        np.testing.assert_array_equal(u, _winograd_products.transform_weights(w, spec, q)[0])


def test_an_nchw_call_moves_its_weights_onto_kept_memory_with_the_same_answer() -> None:
    from dilconv._layout import weight_to_canonical
    from dilconv._spec import make_spec

    rng = np.random.default_rng(6)
    w = rng.standard_normal((256, 512, 3, 3)).astype(np.float32)  # 4.5 MiB
    spec = make_spec((1, 512, 9, 9), w.shape, dtypes=[w.dtype], padding="same", dilation=2)
    _poisoned((3, 3, 512, 256), np.float32)  # as many bytes as the move's own step
    hwio = weight_to_canonical(w, spec)
    assert not hwio.flags.owndata  # on kept memory
    np.testing.assert_array_equal(hwio, w.transpose(2, 3, 1, 0))
    x = rng.standard_normal((1, 512, 9, 9)).astype(np.float32)
    for method in ("blocked", "winograd"):
        got = dilconv.conv2d(x, w, padding="same", dilation=2, method=method)
        with dilconv.config_context(recycle_bytes=0):
            fresh = dilconv.conv2d(x, w, padding="same", dilation=2, method=method)
        np.testing.assert_array_equal(got, fresh)


@pytest.mark.parametrize("shift", [0, 4, 16, 48, 64, 2044, 4092])
@pytest.mark.parametrize("elements", [BIG[0], 4096])  # on a kept block; plain new memory
def test_a_result_is_placed_half_a_page_from_its_input(shift: int, elements: int) -> None:
    """Whatever the input's address, the result starts 2048-2111 bytes past it modulo
    4 KiB, on a 64-byte boundary where it is on a kept block; the block comes back and
    is placed anew for the next input."""
    raw = np.zeros(elements + 2048, np.float32)
    x = raw[shift // 4 : shift // 4 + elements]
    y = results.new_result((elements,), np.float32, apart_from=x)
    gap = (address(y) - address(x)) % results.PAGE
    assert 2048 <= gap < 2048 + 64
    y[...] = 1.0  # every byte of the result is its own to write
    assert not np.shares_memory(x, y)
    if elements == BIG[0]:
        assert address(y) % 64 == 0
        assert results.kept_bytes() == y.nbytes
        held = y.base.block
        del y
        gc.collect()
        other = raw[(shift // 4 + 100) : (shift // 4 + 100) + elements]
        z = results.new_result((elements,), np.float32, apart_from=other)
        assert (address(z) - address(other)) % results.PAGE - 2048 in range(64)
        assert z.base.block is held  # the same block, placed anew
        assert results.kept_bytes() == z.nbytes


def test_a_lease_refuses_an_offset_past_its_block() -> None:
    from dilconv._native import calls

    block = np.zeros(4096, np.uint8)
    with pytest.raises(ValueError, match="at byte 64 does not fit"):
        calls.Lease(block, (1024,), np.dtype(np.float32), offset=64)
    with pytest.raises(ValueError, match="at byte -4"):
        calls.Lease(block, (4,), np.dtype(np.float32), offset=-4)
    returned = []
    y = np.asarray(calls.Lease(block, (1000,), np.dtype(np.float32), offset=96,
                               on_release=lambda b, at: returned.append((b, at))))  # fmt: skip
    assert address(y) == address(block) + 96
    del y
    gc.collect()
    assert len(returned) == 1
    assert returned[0][0] is block
    assert returned[0][1] == address(block)

"""The worker pool and its spin-wait: every item once, errors raised, no deadlock."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import dilconv
from dilconv._methods import compiled
from dilconv._native import pool, spin
from dilconv._spec import make_spec


@pytest.fixture
def two_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DILCONV_THREADS", "2")


@pytest.mark.usefixtures("two_threads")
def test_every_item_runs_once_on_more_than_one_thread() -> None:
    seen: list[tuple[int, str]] = []
    lock = threading.Lock()

    def record(item: int) -> None:
        time.sleep(0.002)  # long enough for the worker to take some items
        with lock:
            seen.append((item, threading.current_thread().name))

    pool.parallel_map(record, range(40))
    assert sorted(item for item, _ in seen) == list(range(40))
    assert len({name for _, name in seen}) == 2


@pytest.mark.usefixtures("two_threads")
def test_an_error_in_any_item_reaches_the_caller_and_the_pool_recovers() -> None:
    def fail_on_seven(item: int) -> None:
        if item == 7:
            raise ZeroDivisionError(f"item {item}")

    with pytest.raises(ZeroDivisionError, match="item 7"):
        pool.parallel_map(fail_on_seven, range(16))
    done: list[int] = []
    pool.parallel_map(done.append, range(5))
    assert sorted(done) == list(range(5))


@pytest.mark.usefixtures("two_threads")
def test_items_run_under_the_callers_floating_point_error_handling() -> None:
    """``np.errstate`` is per thread: every item, on whichever thread, runs under the
    caller's, so silenced NaN arithmetic stays silent (warnings are errors here)."""
    seen: list[tuple[str, dict[str, str]]] = []
    lock = threading.Lock()

    def record(item: int) -> None:
        time.sleep(0.002)
        with lock:
            seen.append((threading.current_thread().name, np.geterr()))

    with np.errstate(all="ignore"):
        pool.parallel_map(record, range(40))
    assert len({name for name, _ in seen}) == 2
    assert all(set(state.values()) == {"ignore"} for _, state in seen)
    with np.errstate(invalid="raise"):
        pool.parallel_map(record, range(40))
    assert all(state["invalid"] == "raise" for _, state in seen[40:])

    def nan_arithmetic(item: int) -> None:
        time.sleep(0.002)
        np.float64(np.inf) - np.array([np.inf])

    for _ in range(5):  # whichever thread takes the items
        with np.errstate(invalid="ignore"):
            pool.parallel_map(nan_arithmetic, range(8))
    with pytest.raises(FloatingPointError), np.errstate(invalid="raise"):
        pool.parallel_map(nan_arithmetic, range(8))


@pytest.mark.usefixtures("two_threads")
def test_nested_and_concurrent_maps_run_without_waiting_on_each_other() -> None:
    totals: list[int] = []
    lock = threading.Lock()

    def inner(item: int) -> None:
        with lock:
            totals.append(item)

    def outer(item: int) -> None:
        pool.parallel_map(inner, range(item * 10, item * 10 + 10))

    callers = [threading.Thread(target=pool.parallel_map, args=(outer, range(4)))]
    callers += [threading.Thread(target=pool.parallel_map, args=(outer, range(4, 8)))]
    for t in callers:
        t.start()
    for t in callers:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in callers)
    assert sorted(totals) == list(range(80))


@pytest.mark.usefixtures("two_threads")
def test_results_are_the_same_with_and_without_spinning(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 128, 128, 24)).astype(np.float32)
    w = rng.standard_normal((3, 3, 24, 24)).astype(np.float32)
    spun = dilconv.conv2d(x, w, padding="same", dilation=3, data_format="NHWC", method="blocked")
    monkeypatch.setenv("DILCONV_SPIN_MS", "0")
    time.sleep(0.05)  # the workers go to sleep
    slept = dilconv.conv2d(x, w, padding="same", dilation=3, data_format="NHWC", method="blocked")
    np.testing.assert_array_equal(spun, slept)


def test_spin_returns_the_new_value_or_times_out() -> None:
    if spin.spin_function() is None:
        pytest.skip("llvmlite cannot compile here; waiting falls back to sleeping")
    cell = np.zeros(1, dtype=np.int64)
    start = time.perf_counter()
    assert spin.wait_for_change(cell, 0, 0.02, load=True) == 0
    assert time.perf_counter() - start >= 0.01

    def bump() -> None:
        time.sleep(0.01)
        cell[0] = 5

    helper = threading.Thread(target=bump)
    helper.start()
    assert spin.wait_for_change(cell, 0, 10.0, load=True) == 5  # long before the 10 s limit
    helper.join()
    assert spin.wait_for_change(cell, 5, 0.0) == 5


def test_spin_call_holds_its_cell_and_is_checked() -> None:
    """The spin loop is a Kernel whose call holds the cell; checked mode refuses a cell
    without the element it reads, and a cell of another dtype is refused at once."""
    from dilconv._native import calls

    kernel = spin.spin_kernel()
    if kernel is None:
        pytest.skip("llvmlite cannot compile here; waiting falls back to sleeping")
    cell = np.full(1, 3, dtype=np.int64)
    call = kernel.call(cell=calls.Ref(cell), seen=0, limit=10)
    del cell
    assert call.result() == 3  # the call keeps the cell alive
    with calls.checked(), pytest.raises(RuntimeError, match=r"spin.*'cell'.*\[0, 1\)"):
        spin.wait_for_change(np.zeros(0, dtype=np.int64), 0, 0.01, load=True)
    with calls.checked():
        assert spin.wait_for_change(np.full(1, 4, dtype=np.int64), 0, 1.0, load=True) == 4
    with pytest.raises(TypeError, match="'cell' must be a C-contiguous int64"):
        spin.wait_for_change(np.zeros(1, dtype=np.int32), 0, 0.01, load=True)
    with pytest.raises(TypeError, match="needs every array held"):
        kernel.call(cell=calls.Slot("cell"), seen=0, limit=10).result()


def test_workers_spin_only_where_llvm_is_loaded_already() -> None:
    """A process using only NumPy methods does not load LLVM (~50 MiB) to spin."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, dilconv\n"
        "x = np.ones((1, 512, 512, 8), np.float32); w = np.ones((3, 3, 8, 8), np.float32)\n"
        "dilconv.conv2d(x, w, padding='same', data_format='NHWC', method='shift_add')\n"
        "from dilconv._native import pool\n"
        "import time, threading\n"
        "names = set()\n"
        "def item(i):\n"
        "    time.sleep(0.01)\n"
        "    names.add(threading.current_thread().name)\n"
        "pool.parallel_map(item, range(8))\n"
        "print(len(names), 'llvmlite.binding' in sys.modules)\n"
    )
    env = {**__import__("os").environ, "DILCONV_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2 False"


def test_spin_time_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DILCONV_SPIN_MS", "7.5")
    assert spin.spin_seconds() == pytest.approx(0.0075)
    monkeypatch.setenv("DILCONV_SPIN_MS", "0")
    assert spin.spin_seconds() == 0.0
    for bad in ("-3", "soon", "inf", "1e9"):  # refused with a warning: the default instead
        monkeypatch.setenv("DILCONV_SPIN_MS", bad)
        with pytest.warns(RuntimeWarning, match=f"ignoring DILCONV_SPIN_MS='{bad}'"):
            assert spin.spin_seconds() == spin.DEFAULT_SPIN_MS / 1000


def test_busy_pause_lasts_as_long_as_asked() -> None:
    start = time.perf_counter()
    spin.busy_pause(0.03, 2)
    assert time.perf_counter() - start >= 0.025
    spin.busy_pause(0.0, 2)


def test_busy_pause_spins_on_the_threads_the_system_allows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    start = time.perf_counter()
    spin.busy_pause(0.03, 3)
    assert time.perf_counter() - start >= 0.025


@pytest.mark.parametrize("threads", [1, 2, 3, 7])
@pytest.mark.parametrize("batch", [1, 3])
def test_compiled_row_shares_cover_every_output_row_once(threads: int, batch: int) -> None:
    spec = make_spec((batch, 1, 700, 700), (1, 1, 3, 3), padding="same", dilation=3)
    plan = compiled.row_plan(spec, threads)
    assert plan.parts[0][0] == 0
    assert plan.parts[-1][1] == batch * spec.out_hw[0]
    assert all(a[1] == b[0] for a, b in zip(plan.parts, plan.parts[1:], strict=False))
    assert len(plan.parts) == threads
    assert compiled.row_plan(spec, threads) is plan  # built once per spec


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_compiled_long_calls_are_cut_into_short_pieces(threads: int) -> None:
    spec = make_spec((2, 1, 3000, 3000), (1, 1, 21, 21), padding="same", dilation=2)
    plan = compiled.row_plan(spec, threads)
    rows = [end - start for start, end in plan.parts]
    assert sum(rows) == 2 * 3000
    assert len(rows) % threads == 0
    per_row = compiled.work(spec) // (2 * 3000)
    assert max(rows) * per_row <= compiled.PIECE_WORK + per_row
    assert max(rows) - min(rows) <= 1


@pytest.mark.skipif(not compiled.numba_available(), reason="Numba is not available")
def test_compiled_results_do_not_depend_on_the_thread_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 1, 600, 500)).astype(np.float32)
    w = rng.standard_normal((1, 1, 3, 3)).astype(np.float32)
    results = []
    for threads in ("1", "2", "5"):
        monkeypatch.setenv("DILCONV_THREADS", threads)
        results.append(dilconv.conv2d(x, w, padding="same", dilation=4, method="compiled"))
    np.testing.assert_array_equal(results[1], results[0])
    np.testing.assert_array_equal(results[2], results[0])


@pytest.mark.usefixtures("two_threads")
def test_idle_workers_hold_no_reference_to_the_last_call() -> None:
    import gc
    import weakref

    class Payload:
        pass

    def call() -> weakref.ref[Payload]:
        payload = Payload()
        pool.parallel_map(lambda item: time.sleep(0.002) if payload else None, range(4))
        return weakref.ref(payload)

    ref = call()
    time.sleep(0.05)  # the workers are back in their loops
    gc.collect()
    assert ref() is None


@pytest.mark.usefixtures("two_threads")
def test_the_main_thread_runs_items_only_once_their_key_proved_short() -> None:
    def names(key: object) -> set[str]:
        seen: set[str] = set()

        def record(item: int) -> None:
            time.sleep(0.002)
            seen.add(threading.current_thread().name)

        pool.parallel_map(record, range(40), key=key)
        return seen

    assert "MainThread" not in names(None)  # no key: the main thread only waits
    key = ("test", object())
    assert "MainThread" not in names(key)  # not known yet
    assert pool._ITEM_SECONDS[key] < pool.SHORT_ITEM_SECONDS
    assert "MainThread" in names(key)  # known to be short
    pool._ITEM_SECONDS[key] = 2 * pool.SHORT_ITEM_SECONDS
    assert "MainThread" not in names(key)


def test_a_worker_that_found_no_item_sleeps_instead_of_spinning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the caller running items too, a job of 2 items leaves one of 2 workers
    without work; spinning beside the 2 busy threads would take a CPU from one."""
    waits: list[tuple[str, float]] = []
    real_wait = spin.wait_for_change

    def recording_wait(cell: np.ndarray, seen: int, patience: float) -> int:
        waits.append((threading.current_thread().name, patience))
        return real_wait(cell, seen, patience)

    monkeypatch.setattr(spin, "wait_for_change", recording_wait)
    monkeypatch.setattr(spin, "spin_seconds", lambda: 0.02)
    workers = pool.WorkerPool()
    try:
        ran: dict[int, str] = {}
        lengths = [0.05, 0.15]  # the first job's: its first finisher waits before it ends

        def record(item: int) -> None:
            time.sleep(lengths[item])  # long enough for every worker to look for an item
            ran[item] = threading.current_thread().name

        workers.map(record, [0, 1], workers=1)  # no key: 2 workers, the caller waits
        lengths[1] = 0.05
        assert sorted(ran) == [0, 1]
        assert "MainThread" not in ran.values()
        key = ("test", object())
        pool._ITEM_SECONDS[key] = 0.0  # known to be short: the caller runs items too
        ran.clear()
        del waits[:]
        workers.map(record, [0, 1], workers=1, key=key)
        time.sleep(0.1)  # every worker is back in its loop
        assert "MainThread" in ran.values()
        (busy,) = {name for name in ran.values() if name != "MainThread"}
        idle = {name for name, _ in waits} - {busy}
        assert idle, waits  # the worker without an item looked for one, then waited
        assert all(patience == 0.0 for name, patience in waits if name in idle), waits
    finally:
        workers.close()
        pool._ITEM_SECONDS.pop(key, None)


def _refusing_threads(monkeypatch: pytest.MonkeyPatch, allowed: int) -> None:
    """``threading.Thread.start`` refuses dilconv's workers after ``allowed`` of them,
    as a system out of processes or threads does."""
    real_start = threading.Thread.start
    started = [0]

    def start(self: threading.Thread) -> None:
        if self.name.startswith("dilconv-"):
            if started[0] >= allowed:
                raise RuntimeError("can't start new thread")
            started[0] += 1
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)


@pytest.mark.parametrize("allowed", [0, 1])
@pytest.mark.parametrize("key", [None, "short"])
def test_a_job_runs_on_the_workers_the_system_allows(
    monkeypatch: pytest.MonkeyPatch, allowed: int, key: str | None
) -> None:
    """No worker at all (where the caller only waited, it would have waited forever)
    or fewer than asked: every item runs once, and a later job tries again."""
    _refusing_threads(monkeypatch, allowed)
    monkeypatch.setattr(pool.headroom, "left", lambda: None)  # no address-space limit
    workers = pool.WorkerPool()
    if key is not None:
        monkeypatch.setitem(pool._ITEM_SECONDS, key, 0.0)
    try:
        ran: list[tuple[int, str]] = []
        workers.map(lambda item: ran.append((item, threading.current_thread().name)),
                    list(range(12)), workers=3, key=key)  # fmt: skip
        assert sorted(item for item, _ in ran) == list(range(12))
        names = {name for _, name in ran}
        assert len(workers._threads) == allowed
        if allowed == 0:
            assert names == {"MainThread"}
        monkeypatch.undo()
        more: list[int] = []
        workers.map(more.append, list(range(6)), workers=3)
        assert sorted(more) == list(range(6))
        assert len(workers._threads) == 4  # the refused ones were started this time
    finally:
        workers.close()


def test_a_thread_refused_for_lack_of_address_space_is_a_memory_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _refusing_threads(monkeypatch, 0)
    monkeypatch.setattr(pool.headroom, "left", lambda: 5 * 2**20)
    workers = pool.WorkerPool()
    try:
        with pytest.raises(MemoryError, match=r"worker thread with 5\.0 MiB .* \(RLIMIT_AS\)"):
            workers.map(lambda item: None, list(range(4)), workers=1)
        monkeypatch.undo()
        done: list[int] = []
        workers.map(done.append, list(range(4)), workers=1)  # the pool recovered
        assert sorted(done) == list(range(4))
    finally:
        workers.close()

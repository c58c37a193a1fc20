"""Shared inner loops of the fast algorithms: in-place accumulating products and threads.

Nothing here knows about convolution: these are the two primitives the per-tap
algorithms are built from, an accumulating matrix product ``out += a @ b`` that
writes straight into ``out`` (BLAS ``gemm`` with ``beta = 1``) and a small pool of
threads for NumPy loops and compiled code, which release the GIL.

The pool's idle threads spin for a while before they sleep (see
:mod:`dilconv._native.spin`): a call that follows another within that time
finds them awake (the 21-channel context layer: 3.1 ms instead of 3.8 back to
back, 3.7 instead of 6.4 after a 30 ms pause, on this 2-core virtual machine).
"""

from __future__ import annotations

import _thread
import atexit
import contextlib
import functools
import math
import sys
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator
from types import FrameType
from typing import Any

import numpy as np

from dilconv import _config
from dilconv._native import forksafe, headroom, spin

_controller: Any = None
#: ``len(sys.modules)`` when ``_controller`` was made.
_controller_modules = 0
#: Held while BLAS is limited to one thread (released again in a forked child).
_blas_lock = forksafe.ForkSafeLock()


def num_threads() -> int:
    """Threads the NumPy loops use: ``dilconv.get_config()["threads"]`` (1: no pool).

    At most the CPUs this process may run on; ``DILCONV_THREADS`` sets the default.
    """
    return int(_config.get("threads"))


class Job:
    """One :meth:`WorkerPool.map`: its items, its own completion count and error.

    Workers hold the job they took items from, so a worker still busy with an
    item of a job its caller abandoned (interrupted by Ctrl+C) counts that item
    against that job only, never against a later one.
    """

    def __init__(self, fn: Callable[[Any], None], items: list[Any]) -> None:
        self.fn = fn
        self.items = items
        self.next = 0
        self.pending = len(items)
        self.error: BaseException | None = None
        self.lock = threading.Lock()
        #: Held until the last item finishes (a bare lock: an ``Event`` costs the
        #: caller a few Python-level calls more to make, set and wait for).
        self._running = _thread.allocate_lock()
        self._running.acquire()
        #: What the caller's frames held, kept while abandoned items still run.
        self.keep: list[dict[str, Any]] = []
        #: Seconds the longest item took (read once the job is done).
        self.longest = 0.0
        #: The caller's NumPy floating-point error handling (``np.errstate`` is per
        #: thread): items run under it on every thread, so a caller that silenced
        #: NaN arithmetic gets no warning (nor, with warnings as errors, an error)
        #: from the items a worker ran.
        self.errstate = np.geterr()
        #: The thread that made the job, whose error handling is the job's already.
        self.owner = _thread.get_ident()
        if not items:
            self._running.release()

    def _take(self) -> int | None:
        with self.lock:
            if self.next >= len(self.items):
                return None
            self.next += 1
            return self.next - 1

    def _finished(self, count: int) -> bool:
        """Count ``count`` items as finished; True when that completed the job."""
        with self.lock:
            self.pending -= count
            last = self.pending == 0
        if last:
            self._running.release()
        return last

    def is_done(self) -> bool:
        """Whether every item has finished or was cancelled."""
        return not self._running.locked()

    def run(self) -> tuple[bool, bool]:
        """Run items of this job until none is left to take. ``(ran, last)``: whether
        this thread ran any item, and whether it finished the job's last one (the
        job is then complete)."""
        if _thread.get_ident() == self.owner:  # the caller's error handling already
            return self._run_items()
        with np.errstate(**self.errstate):
            return self._run_items()

    def _run_items(self) -> tuple[bool, bool]:
        ran = last = False
        while (index := self._take()) is not None:
            ran = True
            start = time.perf_counter()
            try:
                self.fn(self.items[index])
            except BaseException as err:  # handed to the caller, which re-raises it
                with self.lock:
                    self.error = self.error or err
                self.cancel()
            finally:
                self.longest = max(self.longest, time.perf_counter() - start)
                last = self._finished(1)
        return ran, last

    def cancel(self) -> None:
        """Let no further item start (items already running finish on their own)."""
        with self.lock:
            untaken = len(self.items) - self.next
            self.next = len(self.items)
        if untaken:
            self._finished(untaken)

    def wait(self) -> None:
        """Until every item has finished or was cancelled; a signal handler's
        exception (KeyboardInterrupt) interrupts the wait."""
        while not self._running.acquire(timeout=WAIT_SLICE):
            pass
        self._running.release()  # done for good: other looks find it free


#: Seconds between two looks at a job's completion while waiting for it (the
#: wait is interruptible anyway; this only bounds how long a missed wake-up costs).
WAIT_SLICE = 0.1
#: Seconds the interpreter's exit waits for workers still inside an item.
EXIT_WAIT = 2.0
#: Items the main thread may run itself: Ctrl+C waits for the one it is running,
#: while handing every item to the workers costs the caller a wake-up after the
#: job (about 0.3-1 ms measured for a 1 ms job, more on a loaded machine).
SHORT_ITEM_SECONDS = 0.25
#: Work keys (see :meth:`WorkerPool.map`) whose longest item is remembered.
KEYS_KEPT = 4096
_ITEM_SECONDS: dict[Hashable, float] = {}


def _callers_locals(frame: FrameType | None) -> list[dict[str, Any]]:
    """Copies of the local variables of ``frame`` and of every frame that called it.

    Items of an abandoned job go on running native code, which may read and write
    arrays that only the interrupted callers' variables held (the output, packed
    weights, tables passed as addresses). The job keeps these copies until its
    last running item ends, so no such array is freed under it.
    """
    kept = []
    while frame is not None:
        kept.append(dict(frame.f_locals))
        frame = frame.f_back
    return kept


class WorkerPool:
    """Threads that share the items of one :meth:`map` at a time with its caller.

    Idle workers spin (without the GIL) for :func:`spin.spin_seconds`, then sleep
    until the next job. One job runs at a time; a caller that finds the pool busy
    (another thread's job, or a job started from inside a job) runs its items
    itself, so concurrent callers never wait on each other or oversubscribe.

    The main thread hands every item to the workers and waits for its job, so that
    Ctrl+C (KeyboardInterrupt) interrupts it at once, however long one item runs;
    the abandoned job is cancelled (no further item starts) and its running items
    finish in the background, touching nothing of later jobs. Where the job's
    ``key`` says its items are short, the main thread runs items too (Ctrl+C then
    waits for the one it runs). Other threads always run items beside the workers.
    """

    def __init__(self) -> None:
        self._generation = np.zeros(1, dtype=np.int64)  # bumped for every job
        self._wake = threading.Condition()
        self._busy = threading.Lock()
        self._job: Job | None = None
        self._threads: list[threading.Thread] = []
        self._running = 0  # workers inside an item
        self._closed = False

    def _loop(self) -> None:
        seen = int(self._generation[0])
        ran, last = True, False
        while True:
            # The worker that completes a job sleeps at once instead of spinning:
            # the job's caller, waking up, then finds its CPU free. So does one that
            # found no item to take: the job has fewer items than workers (the
            # caller runs items too), and spinning beside them would take a CPU from
            # a thread still computing (on 2 CPUs, 3 busy threads for 2 items made
            # every threaded call about 1.5x slower).
            patience = 0.0 if last or not ran else spin.spin_seconds()
            now = spin.wait_for_change(self._generation, seen, patience)
            if now == seen:
                with self._wake:
                    while int(self._generation[0]) == seen:
                        self._wake.wait()
                now = int(self._generation[0])
            seen = now
            with self._wake:
                if self._closed:
                    return
                job = self._job
                self._running += 1
            try:
                ran, last = job.run() if job is not None else (False, False)
            finally:
                job = None  # an idle worker holds no call's arrays
                with self._wake:
                    self._running -= 1
                    self._wake.notify_all()

    def _publish(self, job: Job | None, wake: int | None = None) -> None:
        """Make ``job`` the current one and wake ``wake`` sleeping workers (None: all).

        Workers still spinning see the new generation by themselves; waking more
        sleepers than the job has items for them only adds threads that find
        nothing to do and compete for the CPUs as they wake (on 2 CPUs a job of
        two items whose caller runs one needs one worker, not the pool's two).
        """
        with self._wake:
            self._job = job
            self._generation[0] += 1
            if wake is None:
                self._wake.notify_all()
            else:
                self._wake.notify(wake)

    def map(
        self, fn: Callable[[Any], None], items: list[Any], workers: int, key: Hashable = None
    ) -> None:
        """``fn(item)`` for every item, on up to ``workers`` threads besides the caller.

        ``key`` names the work (equal keys: items of about the same length); the
        main thread runs items too once a job of that key had none longer than
        :data:`SHORT_ITEM_SECONDS`.
        """
        if self._closed or not self._busy.acquire(blocking=False):
            for item in items:
                fn(item)
            return
        main = _thread.get_ident() == threading.main_thread().ident
        works = not main or _ITEM_SECONDS.get(key, math.inf) <= SHORT_ITEM_SECONDS
        job = Job(fn, items)
        try:
            wanted = workers if works else workers + 1
            helpers = min(wanted, self._start(wanted))
            if helpers == 0:  # no worker could be started: the caller runs every item
                works = True
            self._publish(job, max(0, min(helpers, len(items) - works)))
            if works:
                job.run()
            try:
                job.wait()
            except BaseException:
                job.cancel()
                if not job.is_done():
                    job.keep = _callers_locals(sys._getframe(1))
                raise
        finally:
            with self._wake:
                if self._job is job:
                    self._job = None
            self._busy.release()
        if job.error is not None:
            raise job.error
        if key is not None:
            if len(_ITEM_SECONDS) >= KEYS_KEPT:
                _ITEM_SECONDS.clear()
            _ITEM_SECONDS[key] = job.longest

    def _start(self, count: int) -> int:
        """Start workers until there are ``count``; how many there are.

        Where the system refuses a thread (``RuntimeError``: too many processes or
        threads), the job runs on the workers there are, or on its caller alone,
        instead of failing; a later job tries again. Where the process's
        address-space limit is nearly reached, the refusal is raised as
        :class:`MemoryError` instead: running on would reach BLAS, which exits the
        process when it cannot allocate (see :mod:`dilconv._native.headroom`).
        """
        while len(self._threads) < count:
            name = f"dilconv-{len(self._threads)}"
            thread = threading.Thread(target=self._loop, name=name, daemon=True)
            try:
                thread.start()
            except RuntimeError as err:  # "can't start new thread"
                room = headroom.left()
                if room is not None and room < headroom.THREAD_BYTES:
                    raise MemoryError(
                        f"cannot start a worker thread with {room / 2**20:.1f} MiB of "
                        "address space left under the process's limit (RLIMIT_AS)"
                    ) from err
                break
            self._threads.append(thread)
        return len(self._threads)

    def close(self, timeout: float = EXIT_WAIT) -> None:
        """Stop the workers: cancel the job, wake them, and wait (at most ``timeout``
        seconds) until none is inside an item. Later maps run on the caller."""
        with self._wake:
            self._closed = True
            job = self._job
        if job is not None:
            job.cancel()
        self._publish(None)
        deadline = time.monotonic() + timeout
        with self._wake:
            while self._running and (left := deadline - time.monotonic()) > 0:
                self._wake.wait(left)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))


_POOL = WorkerPool()


def _close_at_exit() -> None:
    # Workers still inside native code (BLAS, compiled loops) while the interpreter
    # and the libraries tear down could crash the process; let their items end.
    _POOL.close()


def _after_fork_in_child() -> None:
    # The parent's workers do not exist here, and its job (if any) never ends here.
    global _POOL, _controller
    _POOL = WorkerPool()
    _controller = None


atexit.register(_close_at_exit)
forksafe.after_fork_in_child(_after_fork_in_child)


def parallel_map(fn: Callable[[Any], None], items: Iterable[Any], *, key: Hashable = None) -> None:
    """Run ``fn`` on every item, on :func:`num_threads` threads (in order when one).

    ``key``: a hashable name of the work (a spec, with the method), the same for
    calls whose items take about as long. Without one, the main thread only waits
    while the workers run the items, so that Ctrl+C interrupts at once; with one,
    it runs items too once that key's items proved short (see
    :data:`SHORT_ITEM_SECONDS`).
    """
    work = list(items)
    threads = min(num_threads(), len(work))
    if threads <= 1:
        for item in work:
            fn(item)
        return
    _POOL.map(fn, work, threads - 1, key)


#: Bytes below which a copy or an add runs on one thread.
PARALLEL_BYTES = 2**21


def split_along(a: np.ndarray, axis: int) -> list[tuple[slice, ...]]:
    """Index tuples cutting ``a`` into :func:`num_threads` pieces along ``axis``."""
    parts = 1 if a.nbytes < PARALLEL_BYTES else min(num_threads(), a.shape[axis])
    bounds = np.linspace(0, a.shape[axis], parts + 1).astype(int)
    lead = (slice(None),) * axis
    return [lead + (slice(b0, b1),) for b0, b1 in zip(bounds[:-1], bounds[1:], strict=True)]


def copy(dst: np.ndarray, src: np.ndarray, axis: int = 1) -> None:
    """``dst[...] = src``, the pieces along ``axis`` on separate threads."""
    _each(lambda k: np.copyto(dst[k], src[k]), split_along(dst, axis))


def add(dst: np.ndarray, src: np.ndarray, axis: int = 1) -> None:
    """``dst += src``, the pieces along ``axis`` on separate threads."""
    _each(lambda k: np.add(dst[k], src[k], out=dst[k]), split_along(dst, axis))


def _each(fn: Callable[[Any], Any], pieces: list[Any]) -> None:
    if len(pieces) == 1:
        fn(pieces[0])
    else:
        parallel_map(fn, pieces)


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """BLAS on one thread while our own threads share the work (no oversubscription).

    The limit is process-wide (threadpoolctl) and must be restored by the thread
    that set it, so such regions run one at a time: a second caller waits (the
    cores are busy anyway).
    """
    global _controller, _controller_modules
    with _blas_lock:
        # threadpoolctl finds the libraries loaded when its controller is made (0.3 ms
        # here): made again once modules were imported since, so a BLAS loaded later
        # (SciPy's, at dilconv's first ``gemm``; NumPy's own is another) is limited too
        if _controller is None or len(sys.modules) != _controller_modules:
            from dilconv import _imports

            _controller = _imports.whole("threadpoolctl").ThreadpoolController()
            _controller_modules = len(sys.modules)
        with _controller.limit(limits=1, user_api="blas"):
            yield


@functools.lru_cache(maxsize=4)
def _gemm(dtype: np.dtype) -> Callable[..., np.ndarray] | None:
    """BLAS ``gemm`` for ``dtype`` (float32, float64), or None; SciPy loaded on first use."""
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        return None
    from dilconv import _imports

    blas = _imports.whole("scipy.linalg.blas")
    return blas.sgemm if dtype == np.float32 else blas.dgemm


def accumulate_product(out: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """``out += a @ b`` for 2-D arrays, in place, without a temporary where BLAS allows.

    With float32/float64 C-contiguous ``out`` and ``a`` (and ``b`` of the same
    dtype) this is one ``gemm`` call with ``beta = 1`` on the transposed problem
    (``out.T += b.T @ a.T``, all Fortran-ordered views); otherwise the product is
    formed and added.
    """
    gemm = _gemm(out.dtype)
    if (
        gemm is not None
        and a.dtype == out.dtype
        and b.dtype == out.dtype
        and out.flags.c_contiguous
        and a.flags.c_contiguous
        and b.flags.c_contiguous
        and out.shape[0] > 0
        and out.shape[1] > 0
        and a.shape[1] > 0
    ):
        result = gemm(1.0, b.T, a.T, beta=1.0, c=out.T, overwrite_c=1)
        if not np.shares_memory(result, out):  # pragma: no cover - f2py copied after all
            out[...] = result.T
        return
    out += a @ b

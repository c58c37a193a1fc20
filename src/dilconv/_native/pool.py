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

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from dilconv._native import spin

_controller: Any = None
_blas_lock = threading.Lock()


def num_threads() -> int:
    """Threads the NumPy loops use: the CPUs this process may run on (``DILCONV_THREADS``)."""
    env = os.environ.get("DILCONV_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class WorkerPool:
    """Threads that share the items of one :meth:`map` at a time with its caller.

    Idle workers spin (without the GIL) for :func:`spin.spin_seconds`, then sleep
    until the next job. One job runs at a time; a caller that finds the pool busy
    (another thread's job, or a job started from inside a job) runs its items
    itself, so concurrent callers never wait on each other or oversubscribe.
    """

    def __init__(self) -> None:
        self._generation = np.zeros(1, dtype=np.int64)  # bumped for every job
        self._wake = threading.Condition()
        self._state = threading.Lock()
        self._finished = threading.Condition(self._state)
        self._busy = threading.Lock()
        self._job: tuple[Callable[[Any], None], list[Any]] = (lambda item: None, [])
        self._next = 0
        self._pending = 0
        self._error: BaseException | None = None
        self._workers = 0

    def _take(self) -> tuple[Callable[[Any], None], Any] | None:
        with self._state:
            fn, items = self._job
            if self._next >= len(items):
                return None
            self._next += 1
            return fn, items[self._next - 1]

    def _work(self) -> None:
        """Run items of the current job until none is left."""
        while (taken := self._take()) is not None:
            fn, item = taken
            try:
                fn(item)
            except BaseException as err:  # handed to the caller, which re-raises it
                with self._state:
                    self._error = self._error or err
            finally:
                with self._state:
                    self._pending -= 1
                    if self._pending == 0:
                        self._finished.notify_all()

    def _loop(self) -> None:
        seen = int(self._generation[0])
        while True:
            now = spin.wait_for_change(self._generation, seen, spin.spin_seconds())
            if now == seen:
                with self._wake:
                    while int(self._generation[0]) == seen:
                        self._wake.wait()
                now = int(self._generation[0])
            seen = now
            self._work()

    def map(self, fn: Callable[[Any], None], items: list[Any], workers: int) -> None:
        """``fn(item)`` for every item, on the caller and up to ``workers`` threads."""
        if not self._busy.acquire(blocking=False):
            for item in items:
                fn(item)
            return
        try:
            while self._workers < workers:
                name = f"dilconv-{self._workers}"
                threading.Thread(target=self._loop, name=name, daemon=True).start()
                self._workers += 1
            with self._state:
                self._job, self._next, self._error = (fn, items), 0, None
                self._pending = len(items)
            with self._wake:
                self._generation[0] += 1
                self._wake.notify_all()
            self._work()
            with self._state:
                while self._pending:
                    self._finished.wait()
                error, self._error = self._error, None
                self._job = (lambda item: None, [])
            if error is not None:
                raise error
        finally:
            self._busy.release()


_POOL = WorkerPool()


def parallel_map(fn: Callable[[Any], None], items: Iterable[Any]) -> None:
    """Run ``fn`` on every item, on :func:`num_threads` threads (in order when one)."""
    work = list(items)
    threads = min(num_threads(), len(work))
    if threads <= 1:
        for item in work:
            fn(item)
        return
    _POOL.map(fn, work, threads - 1)


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
    global _controller
    with _blas_lock:
        if _controller is None:
            from threadpoolctl import ThreadpoolController

            _controller = ThreadpoolController()
        with _controller.limit(limits=1, user_api="blas"):
            yield


@functools.lru_cache(maxsize=4)
def _gemm(dtype: np.dtype) -> Callable[..., np.ndarray] | None:
    """BLAS ``gemm`` for ``dtype`` (float32, float64), or None; SciPy loaded on first use."""
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        return None
    from scipy.linalg import blas

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

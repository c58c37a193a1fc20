"""Shared inner loops of the fast algorithms: in-place accumulating products and threads.

Nothing here knows about convolution: these are the two primitives the per-tap
algorithms are built from, an accumulating matrix product ``out += a @ b`` that
writes straight into ``out`` (BLAS ``gemm`` with ``beta = 1``) and a small pool of
threads for NumPy loops, which release the GIL.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from scipy.linalg import blas

_GEMM: dict[np.dtype, Callable[..., np.ndarray]] = {
    np.dtype(np.float32): blas.sgemm,
    np.dtype(np.float64): blas.dgemm,
}

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
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


def parallel_map(fn: Callable[[Any], None], items: Iterable[Any]) -> None:
    """Run ``fn`` on every item, on :func:`num_threads` threads (in order when one)."""
    global _pool, _pool_size
    work = list(items)
    threads = min(num_threads(), len(work))
    if threads <= 1:
        for item in work:
            fn(item)
        return
    if _pool is None or _pool_size < threads:
        _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="dilconv")
        _pool_size = threads
    # one item per thread: the calling thread takes the first, so it is busy at once
    # and one pool thread fewer has to wake (about 0.1 ms each here)
    mine = work[:1] if len(work) <= threads else []
    futures = [_pool.submit(fn, item) for item in work[len(mine) :]]
    try:
        for item in mine:
            fn(item)
    finally:
        for future in futures:
            future.result()


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


def accumulate_product(out: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """``out += a @ b`` for 2-D arrays, in place, without a temporary where BLAS allows.

    With float32/float64 C-contiguous ``out`` and ``a`` (and ``b`` of the same
    dtype) this is one ``gemm`` call with ``beta = 1`` on the transposed problem
    (``out.T += b.T @ a.T``, all Fortran-ordered views); otherwise the product is
    formed and added.
    """
    gemm = _GEMM.get(out.dtype)
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

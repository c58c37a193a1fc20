"""Locks that a forked child finds released.

``os.fork()`` copies only the thread that calls it. A lock that another thread
of the parent held at that moment stays held in the child, where no thread will
ever release it: the child hangs on its first compile (:data:`compiler.COMPILING`)
or its first BLAS region (``pool._blas_lock``). Every :class:`ForkSafeLock` is
replaced by a fresh, released lock in the child (``os.register_at_fork``), and
modules with other per-process state (the worker pool's threads) register their
own reset with :func:`after_fork_in_child`.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any

_LOCKS: weakref.WeakSet[ForkSafeLock] = weakref.WeakSet()


class ForkSafeLock:
    """A ``threading.Lock`` that is released again in a child after ``os.fork()``.

    Examples
    --------
    >>> lock = ForkSafeLock()
    >>> with lock:
    ...     lock.locked()
    True
    >>> lock.locked()
    False
    """

    def __init__(self) -> None:
        self._lock = self._new()
        _LOCKS.add(self)

    @staticmethod
    def _new() -> Any:
        return threading.Lock()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock (see :meth:`threading.Lock.acquire`)."""
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        """Release the lock."""
        self._lock.release()

    def locked(self) -> bool:
        """True while some thread holds the lock."""
        return self._lock.locked()

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._lock.release()

    def _reset(self) -> None:
        self._lock = self._new()


class ForkSafeRLock(ForkSafeLock):
    """A ``threading.RLock`` (the thread that holds it may take it again) that is
    released again in a child after ``os.fork()``.

    Examples
    --------
    >>> lock = ForkSafeRLock()
    >>> with lock, lock:
    ...     lock.locked()
    True
    >>> lock.locked()
    False
    """

    @staticmethod
    def _new() -> Any:
        return threading.RLock()

    def locked(self) -> bool:
        """True while some thread, this one included, holds the lock."""
        if self._lock._is_owned():
            return True
        if self._lock.acquire(blocking=False):
            self._lock.release()
            return False
        return True


def _reset_locks() -> None:
    for lock in list(_LOCKS):
        lock._reset()


def after_fork_in_child(reset: Callable[[], None]) -> None:
    """Call ``reset()`` in every child process forked from now on."""
    os.register_at_fork(after_in_child=reset)


after_fork_in_child(_reset_locks)

"""Imports on first use that Ctrl+C cannot leave half done.

dilconv imports its heavy dependencies (Numba, llvmlite's binding, parts of SciPy)
on first use, inside a call. Ctrl+C during such an import raises KeyboardInterrupt
in the middle of it, and the package stays half initialised for the rest of the
process: measured here, a SIGINT 0.05-0.1 s into a fresh process's first Numba call
left ``numba`` without its ``core`` submodule, and every later call of the Numba
loops failed with ``AttributeError`` (at 0.02 s, ``yaml`` was left so).

:func:`whole` imports with SIGINT held back in the main thread: a Ctrl+C that comes
meanwhile is raised as soon as the import is done (up to about 0.5 s later), by
whatever handled SIGINT before.

Examples
--------
>>> whole("json").__name__
'json'
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Hashable, Iterator
from types import FrameType, ModuleType

from dilconv._native import forksafe, headroom


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Within the block, a SIGINT to the main thread is noted, not raised; at its
    end the handler there was before gets it (Python's: KeyboardInterrupt).

    Elsewhere than the main thread, or where handlers cannot be set, the block runs
    as it is (Python delivers SIGINT to the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[FrameType | None] = []

    def note(signum: int, frame: FrameType | None) -> None:
        noted.append(frame)

    try:
        before = signal.signal(signal.SIGINT, note)
    except (ValueError, OSError):  # not the main interpreter, or no signals here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)
        if noted:
            if callable(before):
                before(signal.SIGINT, noted[0])
            elif before == signal.SIG_DFL:
                os.kill(os.getpid(), signal.SIGINT)


def whole(name: str, *, room: int = 0, what: str = "") -> ModuleType:
    """``importlib.import_module(name)``, not to be cut short by Ctrl+C.

    Always through the import system, even for a module already in ``sys.modules``:
    another thread may still be initialising it, and the import system waits for
    that thread where reading ``sys.modules`` would hand back a half-built module.
    ``room``: bytes of address space the import needs (it loads LLVM, through Numba:
    :func:`dilconv._native.headroom.require`, for ``what``), checked only when the
    module is not loaded yet.
    """
    with _IMPORTING:
        if name in sys.modules:
            return importlib.import_module(name)
        if room:
            headroom.require(room, what or f"importing {name}")
        with interrupts_held():
            return importlib.import_module(name)


#: Held while :func:`whole` imports (reentrant: an import within an import). Two
#: threads importing parts of one package at once (``scipy.signal``, which imports
#: ``scipy.linalg``, beside ``scipy.linalg.blas``) can each hold a module lock the
#: other needs; CPython breaks that cycle by handing one of them a half-built module
#: ("cannot import name 'get_blas_funcs' from partially initialized module
#: 'scipy.linalg.blas'", seen in the stress test's threads). dilconv's own lazy
#: imports therefore run one at a time.
_IMPORTING = forksafe.ForkSafeRLock()


def load_once(
    done: set[Hashable], key: Hashable, load: Callable[[], object], *, room: int, what: str
) -> None:
    """``load()`` the first time for ``key`` (then added to ``done``), nothing later.

    For a first call that compiles or loads machine code (Numba's, for ``what``):
    checked first for ``room`` bytes of address space (LLVM aborts the process
    without them), and run with Ctrl+C held back (a KeyboardInterrupt inside Numba's
    compiling made the process kill itself with SIGINT as it exited).
    """
    if key in done:
        return
    headroom.require(room, what)
    with interrupts_held():
        load()
    done.add(key)

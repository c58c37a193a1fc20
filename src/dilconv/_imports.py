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
from collections.abc import Iterator
from types import FrameType, ModuleType


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


def whole(name: str) -> ModuleType:
    """``importlib.import_module(name)``, not to be cut short by Ctrl+C.

    Always through the import system, even for a module already in ``sys.modules``:
    another thread may still be initialising it, and the import system waits for
    that thread where reading ``sys.modules`` would hand back a half-built module.
    """
    if name in sys.modules:
        return importlib.import_module(name)
    with interrupts_held():
        return importlib.import_module(name)

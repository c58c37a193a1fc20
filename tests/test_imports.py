"""Imports on first use finish before Ctrl+C is raised (:mod:`dilconv._imports`).

The fresh-process case, Ctrl+C while Numba is being imported, is in
``tests/test_processes.py``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from dilconv import _imports


def test_a_sigint_in_the_block_is_raised_when_it_ends() -> None:
    finished = []

    def block() -> None:
        with _imports.interrupts_held():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # a signal raised here would skip the next line
            finished.append(True)

    with pytest.raises(KeyboardInterrupt):
        block()
    assert finished == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_handler_before_gets_it(monkeypatch: pytest.MonkeyPatch) -> None:
    got: list[int] = []
    before = signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    try:
        with _imports.interrupts_held():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            assert got == []
        assert got == [signal.SIGINT]
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with _imports.interrupts_held():  # ignored before: ignored after
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    finally:
        signal.signal(signal.SIGINT, before)


def test_without_a_signal_nothing_changes() -> None:
    with _imports.interrupts_held():
        pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_off_the_main_thread_the_block_just_runs() -> None:
    seen: list[object] = []

    def work() -> None:
        with _imports.interrupts_held():
            seen.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == [signal.default_int_handler]


def test_whole_returns_the_module_and_reuses_a_loaded_one() -> None:
    assert _imports.whole("json") is sys.modules["json"]
    assert _imports.whole("dilconv._imports") is _imports

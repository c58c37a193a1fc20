"""Imports on first use finish before Ctrl+C is raised (:mod:`dilconv._imports`).

The fresh-process case, Ctrl+C while Numba is being imported, is in
``tests/test_processes.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
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


def test_threads_importing_at_once_all_get_the_whole_module() -> None:
    """The first import of a module by several threads at once: every thread gets it
    whole (a thread that found it in ``sys.modules`` while another still ran its
    code got a module without its names)."""
    script = textwrap.dedent("""
        import sys, threading, time
        from dilconv import _imports

        source = "import time\\ntime.sleep(0.2)\\nready = True\\n"
        import importlib.abc, importlib.util

        class Loader(importlib.abc.Loader):
            def create_module(self, spec):
                return None
            def exec_module(self, module):
                exec(source, module.__dict__)

        class Finder(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "slow_module":
                    return importlib.util.spec_from_loader(name, Loader())
                return None

        sys.meta_path.insert(0, Finder())
        got = []
        threads = [threading.Thread(target=lambda: got.append(
            getattr(_imports.whole("slow_module"), "ready", False))) for _ in range(4)]
        for t in threads:
            t.start()
            time.sleep(0.02)
        for t in threads:
            t.join()
        print(got)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True)  # fmt: skip
    assert out.stdout.strip() == "[True, True, True, True]", out.stdout + out.stderr


def test_threads_importing_a_package_and_its_module_at_once_never_see_half_of_one(
    tmp_path: os.PathLike,
) -> None:
    """One thread imports a package whose code imports one of its modules, another that
    module, which imports the package: each holds a lock the other needs, and CPython
    hands one of them a half-built module (as scipy.signal beside scipy.linalg.blas
    did in the stress test). dilconv's imports run one at a time."""
    package = os.path.join(tmp_path, "cyclic")
    os.mkdir(package)
    with open(os.path.join(package, "__init__.py"), "w") as f:
        f.write("import time\ntime.sleep(0.3)\nfrom cyclic.part import VALUE\n")
    with open(os.path.join(package, "part.py"), "w") as f:
        f.write("import cyclic\nVALUE = 1\n")
    script = textwrap.dedent(f"""
        import sys, threading, time
        sys.path.insert(0, {str(tmp_path)!r})
        from dilconv import _imports

        errors = []

        def load(name):
            try:
                _imports.whole(name)
            except Exception as err:
                errors.append(repr(err))

        first = threading.Thread(target=load, args=("cyclic",))
        second = threading.Thread(target=load, args=("cyclic.part",))
        first.start()
        time.sleep(0.1)
        second.start()
        first.join()
        second.join()
        print(errors, sys.modules["cyclic"].VALUE)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True)  # fmt: skip
    assert out.stdout.strip() == "[] 1", out.stdout + out.stderr

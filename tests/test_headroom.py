"""Under an address-space limit (``RLIMIT_AS``) too tight for LLVM, dilconv raises
MemoryError instead of letting LLVM abort the process.

Each case runs in a child process that lowers its own limit to a few MiB above
its size and then asks for code that is not compiled yet (an empty cache
directory; Numba not imported). Before :mod:`dilconv._native.headroom`, the
``blocked`` case died of ``std::bad_alloc`` (SIGABRT) and the ``winograd`` one
printed "LLVM ERROR: out of memory" and aborted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dilconv._native import headroom

pytestmark = pytest.mark.skipif(
    not Path(headroom.STATM).exists(), reason="the process's size is read from Linux's /proc"
)

#: The child: llvmlite (and NumPy's BLAS) loaded, then the limit, then the call.
CHILD = """
import os, resource, sys
import numpy as np
import dilconv
import llvmlite.binding
import scipy.linalg  # its BLAS starts threads when loaded: before the limit

what = sys.argv[1]
room = int(sys.argv[2]) * 2**20
pages = int(open("/proc/self/statm").read().split()[0])
resource.setrlimit(resource.RLIMIT_AS, (pages * os.sysconf("SC_PAGE_SIZE") + room,
                                        resource.getrlimit(resource.RLIMIT_AS)[1]))
try:
    if what == "stream":
        from dilconv import nn
        layer = nn.Conv2d(4, 4, (1, 2), dilation=(1, 2), padding=((0, 0), (2, 0)), rng=0)
        nn.Sequential(layer).stream(engine="compiled").push(np.ones((1, 4, 8), np.float32))
    else:
        groups = 16 if what == "compiled" else 1
        x = np.ones((1, 16, 24, 24), np.float32)
        w = np.ones((16, 16 // groups, 3, 3), np.float32)
        dilconv.conv2d(x, w, padding="same", dilation=2, groups=groups, method=what)
    print("computed")
except MemoryError as err:
    print("MemoryError:", err)
"""


def run_child(what: str, room_mib: int, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DILCONV_CACHE_DIR=str(tmp_path / "cache"),
               NUMBA_CACHE_DIR=str(tmp_path / "numba"))  # fmt: skip
    return subprocess.run(
        [sys.executable, "-c", CHILD, what, str(room_mib)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize("what", ["blocked", "winograd", "compiled"])
def test_a_compile_that_would_not_fit_raises_memory_error(what: str, tmp_path: Path) -> None:
    done = run_child(what, 2, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "MemoryError:" in done.stdout, done.stdout + done.stderr[-2000:]
    assert "address space" in done.stdout
    assert "RLIMIT_AS" in done.stdout


def test_the_streamed_stack_refuses_to_load_numba_without_room(tmp_path: Path) -> None:
    pytest.importorskip("numba")
    done = run_child("stream", 2, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "MemoryError: loading Numba" in done.stdout, done.stdout + done.stderr[-2000:]


def test_with_room_the_same_compile_runs(tmp_path: Path) -> None:
    done = run_child("blocked", 400, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "computed" in done.stdout, done.stdout + done.stderr[-2000:]


def test_no_limit_means_nothing_to_check() -> None:
    import resource

    if resource.getrlimit(resource.RLIMIT_AS)[0] == resource.RLIM_INFINITY:
        assert headroom.left() is None
        headroom.require(2**62, "anything")


def test_the_message_names_the_work_and_the_room(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(headroom, "left", lambda: 3 * 2**20)
    with pytest.raises(MemoryError, match=r"compiling X needs about 64 MiB .* leaves 3\.0 MiB"):
        headroom.require(64 * 2**20, "compiling X")
    headroom.require(2**20, "compiling X")

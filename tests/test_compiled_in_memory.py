"""Where Numba cannot cache, ``compiled`` compiles in memory and says so.

Numba caches a module's loops in its ``__pycache__``, else in ``NUMBA_CACHE_DIR``
or the user's cache directory. The child process runs a copy of the package
whose ``dilconv/_native/__pycache__`` is a regular file, with ``HOME`` and
``XDG_CACHE_HOME`` under a regular file: no directory can be created there,
even by root (for whom permission bits would not stop writes).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dilconv
from dilconv._native import jit_kernels

SRC = Path(dilconv.__file__).resolve().parent

CHILD = """
import json, warnings
warnings.simplefilter("error")
import numpy as np
import dilconv
from dilconv._native import jit_kernels

rng = np.random.default_rng(2)
x = rng.integers(-3, 4, (700, 700)).astype(np.float32)
w = rng.integers(-3, 4, (3, 3)).astype(np.float32)
options = dict(dilation=3, padding="same")
name, why = dilconv.choose_method(x, w, explain=True, **options)
y = dilconv.conv2d(x, w, method="compiled", **options)
equal = bool(np.array_equal(y, dilconv.conv2d(x, w, method="shift_add", **options)))
print(json.dumps({"name": name, "why": why["compiled"], "equal": equal,
                  "file": jit_kernels.__file__}))
"""


def test_compiled_runs_in_memory_where_numba_cannot_cache(tmp_path: Path) -> None:
    package = tmp_path / "src" / "dilconv"
    shutil.copytree(SRC, package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "_native" / "__pycache__").write_text("not a directory")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cache = tmp_path / "dilconv-cache"
    cache.mkdir(mode=0o700)
    env = {
        **{k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"},
        "PYTHONPATH": str(package.parent),
        "HOME": str(blocker / "home"),
        "XDG_CACHE_HOME": str(blocker / "cache"),
        "DILCONV_CACHE_DIR": str(cache),  # dilconv's own cache stays usable
    }
    out = subprocess.run(
        [sys.executable, "-c", CHILD],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.splitlines()[-1])
    assert report["file"].startswith(str(package))
    assert report["equal"] is True
    assert report["name"] == "compiled"  # not disabled: still the fastest here
    assert "compiled in memory in every process" in report["why"]
    assert "no locator available" in report["why"]  # Numba's own reason


def test_explain_gives_every_method_its_estimate_or_reason() -> None:
    x, w = np.ones((1, 1, 64, 64), np.int64), np.ones((1, 1, 3, 3), np.int64)
    name, why = dilconv.choose_method(x, w, dilation=2, explain=True)
    assert name == dilconv.choose_method(x, w, dilation=2)
    assert set(why) == set(dilconv.METHODS)
    assert why[name].startswith("estimated ")
    assert why["fft"].startswith("refused: ")  # integers are not exact by FFT
    assert ("in memory" in why["compiled"]) == (jit_kernels.CACHE_PROBLEM is not None)


def test_explain_is_a_bool_and_not_with_measure() -> None:
    x, w = np.ones((8, 8)), np.ones((3, 3))
    with pytest.raises(TypeError, match="explain must be a bool, got 'yes'"):
        dilconv.choose_method(x, w, explain="yes")
    with pytest.raises(ValueError, match="measure and explain cannot both be True"):
        dilconv.choose_method(x, w, explain=True, measure=True)

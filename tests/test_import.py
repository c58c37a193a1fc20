"""``import dilconv`` stays light: the heavy dependencies load on first use."""

from __future__ import annotations

import subprocess
import sys

#: Modules that ``import dilconv`` must not load (0.6 s, 0.3 s and ~50 MiB of them).
HEAVY = ("scipy.signal", "scipy.linalg", "scipy.fft", "numba", "llvmlite")


def test_import_loads_none_of_the_heavy_dependencies() -> None:
    code = (
        "import sys, dilconv\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
        "import numpy as np\n"
        "dilconv.conv2d(np.ones((5, 5)), np.ones((3, 3)), method='direct')\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["[]", "[]"]


def test_the_heavy_dependencies_still_load_where_used() -> None:
    code = (
        "import sys, numpy as np, dilconv\n"
        "x, w = np.ones((1, 1, 9, 9)), np.ones((1, 1, 3, 3))\n"
        "a = dilconv.conv2d(x, w, method='dilated_kernel', dilation=2)\n"
        "b = dilconv.conv2d(x, w, method='fft', dilation=2)\n"
        "print('scipy.signal' in sys.modules, 'scipy.fft' in sys.modules, a.sum(), b.sum())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    signal, fft, a, b = out.stdout.split()
    assert (signal, fft) == ("True", "True")
    assert float(a) == 225.0
    assert abs(float(b) - 225.0) < 1e-9

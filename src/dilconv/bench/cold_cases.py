"""The ``cold`` case: a user's whole script in a fresh process, as a command line runs it.

Each contender is a new Python process that imports its library and convolves one
512x512 float32 image with a 3x3 kernel at dilation 4, padding "same": dilconv
(``method="auto"``), SciPy's ``ndimage.correlate`` on the dilated kernel, and
PyTorch's ``conv2d``. The row "warm cache" runs dilconv with its disk caches as
earlier processes left them; "empty cache" gives every dilconv process new, empty
cache folders (dilconv's and Numba's), as on a fresh machine. The time is the
process's wall time, interpreter start-up included; each row's figure is dilconv's
over ``ndimage.correlate``'s.

The row "import" times ``import dilconv`` alone against ``import numpy`` and an
interpreter that imports nothing; its figure is dilconv's import time over NumPy's,
the interpreter's start-up subtracted from both.

Every process runs as on an installed package: Python may write and read its
bytecode caches (``PYTHONDONTWRITEBYTECODE`` is dropped from their environment), so
the warm-up run leaves the ``.pyc`` files that pip writes at install time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable

from dilconv.bench.cases import Built, Row, _over

Thunk = Callable[[], None]

_IMAGE = (
    "import numpy as np\n"
    "x = np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32)\n"
    "w = np.random.default_rng(1).standard_normal((3, 3)).astype(np.float32)\n"
)

#: The scripts, by contender.
SCRIPTS = {
    "dilconv auto": _IMAGE
    + "import dilconv\ny = dilconv.conv2d(x, w, dilation=4, padding='same')\n",
    "ndimage correlate": _IMAGE + "from scipy import ndimage\n"
    "k = np.zeros((9, 9), np.float32)\nk[::4, ::4] = w\n"
    "y = ndimage.correlate(x, k, mode='constant')\n",
    "torch conv2d": _IMAGE + "import torch\n"
    "y = torch.nn.functional.conv2d(torch.from_numpy(x)[None, None],"
    " torch.from_numpy(w)[None, None], padding='same', dilation=4)\n",
}


#: Variables a contender's process does without: dilconv's default first calls, and
#: Python's bytecode caches on (an installed package has its ``.pyc`` files).
_DROPPED = ("DILCONV_FIRST_CALLS", "PYTHONDONTWRITEBYTECODE")

#: The import row's scripts, by contender.
IMPORTS = {
    "dilconv auto": "import dilconv\n",
    "numpy import": "import numpy\n",
    "no import": "pass\n",
}


def _process(code: str, empty_cache: bool = False) -> Thunk:
    """A thunk that runs ``code`` in a new interpreter (with new, empty caches)."""

    def run() -> None:
        env = {k: v for k, v in os.environ.items() if k not in _DROPPED}
        with tempfile.TemporaryDirectory(prefix="dilconv-cold-") as tmp:
            if empty_cache:
                env["DILCONV_CACHE_DIR"] = os.path.join(tmp, "dilconv")
                env["NUMBA_CACHE_DIR"] = os.path.join(tmp, "numba")
            done = subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True
            )
        if done.returncode != 0:
            raise RuntimeError(f"the script failed: {done.stderr.strip().splitlines()[-1:]}")

    return run


def cold_row(label: str, empty_cache: bool) -> Row:
    def build(methods: tuple[str, ...], peers: tuple[str, ...], skip: float) -> Built:
        contenders = {"dilconv auto": _process(SCRIPTS["dilconv auto"], empty_cache)}
        if "scipy" in peers:
            contenders["ndimage correlate"] = _process(SCRIPTS["ndimage correlate"])
        if "torch" in peers:
            contenders["torch conv2d"] = _process(SCRIPTS["torch conv2d"])
        figure = _over("dilconv_over_ndimage", "ndimage correlate")
        return Built(2.0 * 512 * 512 * 9, contenders, None, derived=figure)

    return Row("cold", label, build)


def _import_figure(med: dict[str, float]) -> dict[str, float]:
    """``import dilconv``'s time over ``import numpy``'s, start-up subtracted from both."""
    bare = med["no import"]
    return {"import_over_numpy": (med["dilconv auto"] - bare) / (med["numpy import"] - bare)}


def import_row() -> Row:
    """``import dilconv`` against ``import numpy``, each in a new interpreter."""

    def build(methods: tuple[str, ...], peers: tuple[str, ...], skip: float) -> Built:
        contenders = {name: _process(code) for name, code in IMPORTS.items()}
        return Built(0.0, contenders, None, derived=_import_figure)

    return Row("cold", "import", build)


def cold_rows() -> list[Row]:
    """The ``cold`` case's rows (the same sizes with ``--quick``: it is the script)."""
    return [cold_row("warm cache", False), cold_row("empty cache", True), import_row()]

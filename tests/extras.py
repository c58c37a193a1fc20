"""Skips for a missing peer framework, browser or optional package, which become
failures where every one of them was installed.

``./dev test`` installs every extra (the peers, the notebook and docs tools) and
Chromium before it runs the suite, and sets ``DILCONV_REQUIRE_EXTRAS=1``: there a
parity test that finds PyTorch missing is a broken setup, not a test to skip, so it
fails and CI goes red. A plain ``pytest`` run without the variable skips, as on a
machine that installed only ``.[test]``. Skips for the platform (no AVX, no LLVM)
stay skips everywhere.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest

#: The environment variable that turns these skips into failures.
REQUIRE = "DILCONV_REQUIRE_EXTRAS"


def required() -> bool:
    """Whether the run asked for every extra (``DILCONV_REQUIRE_EXTRAS=1``)."""
    return os.environ.get(REQUIRE, "") == "1"


def missing(why: str) -> NoReturn:
    """Skip the test because an extra is missing, or fail it where every extra is
    required."""
    if required():
        pytest.fail(f"{why} ({REQUIRE}=1: ./dev test installs every extra)", pytrace=False)
    pytest.skip(why, allow_module_level=True)  # module level too, as importorskip


def peer_or_missing(name: str) -> str:
    """``name`` if the peer framework loads here, else :func:`missing` with why not."""
    from dilconv.peers import available

    why = available(name)
    if why is not None:
        missing(why)
    return name


def import_peer(name: str) -> ModuleType:
    """The peer framework ``name``'s module (``"torch"``, ``"tensorflow"``), else
    :func:`missing` with :func:`dilconv.peers.available`'s reason, which says how
    to install it (PyTorch pinned to its CPU wheel)."""
    from dilconv.peers import load

    module: ModuleType = load(peer_or_missing(name)).framework()
    return module


def import_or_missing(module: str) -> ModuleType:
    """The imported ``module``, else :func:`missing` with the import error."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        missing(f"{module} is not installed ({error})")

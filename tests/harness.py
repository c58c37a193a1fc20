"""Small helpers the test modules share: threads started together, calls counted, benchmark
scripts loaded."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

#: The repository's ``benchmarks`` folder.
BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def in_threads(work: Callable[[], None], count: int) -> None:
    """Run ``work`` on ``count`` threads at once and wait for every one."""
    threads = [threading.Thread(target=work) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def count_calls(monkeypatch: pytest.MonkeyPatch, module: ModuleType, name: str) -> list[int]:
    """A list that gains an item at each call of ``module.name`` (which still runs)."""
    runs: list[int] = []
    real = getattr(module, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        runs.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return runs


def benchmark_script(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` loaded as a module (not run as a script)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script

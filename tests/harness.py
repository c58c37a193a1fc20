"""Small helpers the test modules share: threads started together, calls counted, benchmark
scripts loaded, Winograd on both layouts."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import dilconv

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


def conv2d_through_nhwc(x: Any, w: Any, **options: Any) -> Any:
    """``dilconv.conv2d`` of NCHW ``x`` and OIHW ``w`` run on NHWC copies of them (HWIO
    weights), its result moved back to NCHW: what an NCHW call must give."""
    import numpy as np

    import dilconv

    y = dilconv.conv2d(
        np.ascontiguousarray(x.transpose(0, 2, 3, 1)),
        np.ascontiguousarray(w.transpose(2, 3, 1, 0)),
        data_format="NHWC",
        **options,
    )
    return y.transpose(0, 3, 1, 2)


def benchmark_script(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` loaded as a module (not run as a script)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def winograd_both_layouts(
    x: np.ndarray, w: np.ndarray, **options: Any
) -> tuple[np.ndarray, np.ndarray]:
    """``winograd`` on NCHW ``x`` and OIHW ``w``, and on the same data in NHWC (its
    result moved to NCHW)."""
    nchw = dilconv.conv2d(x, w, method="winograd", **options)
    xh = np.ascontiguousarray(np.moveaxis(x, -3, -1))
    nhwc = dilconv.conv2d(
        xh, w.transpose(2, 3, 1, 0), method="winograd", data_format="NHWC", **options
    )
    return nchw, np.moveaxis(nhwc, -1, -3)


def assert_nchw_winograd_exact(x: np.ndarray, w: np.ndarray, **options: Any) -> None:
    """Winograd's NCHW result is its NHWC result bit for bit, and within tolerance of
    the loop oracle."""
    from tests.tolerance import assert_close

    nchw, nhwc = winograd_both_layouts(x, w, **options)
    np.testing.assert_array_equal(nchw, nhwc)
    scale = dilconv.conv2d(np.abs(x), np.abs(w), method="direct", **options)
    assert_close(nchw, dilconv.conv2d(x, w, method="direct", **options), magnitude=scale)


def square_layer(
    shape: tuple[int, ...], dtype: type = np.float32, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Random NCHW input of ``shape`` and OIHW 3x3 weights with as many outputs as
    input channels."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    return x, rng.standard_normal((shape[1], shape[1], 3, 3)).astype(dtype)

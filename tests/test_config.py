"""Settings: get_config/set_config/config_context, their thread safety and the environment."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import dilconv
from dilconv import _config
from dilconv._native import pool, spin, tile_kernel

SRC = str(Path(dilconv.__file__).resolve().parents[1])


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No environment defaults and no process-wide values leak into or out of a test."""
    for variable in _config.ENVIRONMENT.values():
        if variable:
            monkeypatch.delenv(variable, raising=False)
    saved = dict(_config._process)
    _config._process.clear()
    yield
    _config._process.clear()
    _config._process.update(saved)


def test_defaults() -> None:
    config = dilconv.get_config()
    assert config == {
        "threads": _config.available_cpus(),
        "spin_ms": spin.DEFAULT_SPIN_MS,
        "cache_dir": _config._default_cache_dir(),
        "workspace_bytes": _config.DEFAULT_WORKSPACE_BYTES,
        "recycle_bytes": _config.DEFAULT_RECYCLE_BYTES,
        "allow_fft": False,
        "first_calls": "tiered",
    }
    assert _config.get("allow_fft") is False
    config["threads"] = 99  # a copy: changing it changes nothing
    assert dilconv.get_config()["threads"] == _config.available_cpus()


def test_set_config_reaches_the_readers(tmp_path: Path) -> None:
    dilconv.set_config(threads=1, spin_ms=7.5, cache_dir=tmp_path / "c", workspace_bytes=2**21)
    dilconv.set_config(allow_fft=True)
    assert pool.num_threads() == 1
    assert spin.spin_seconds() == pytest.approx(0.0075)
    assert tile_kernel.cache_dir() == tmp_path / "c"
    assert dilconv.get_workspace_limit() == 2**21
    assert _config.get("allow_fft") is True
    dilconv.set_config(threads=None)  # None leaves a value as it is
    assert dilconv.get_config()["threads"] == 1


def test_environment_gives_the_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DILCONV_THREADS", "1")
    monkeypatch.setenv("DILCONV_SPIN_MS", "2.5")
    monkeypatch.setenv("DILCONV_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("DILCONV_WORKSPACE_BYTES", str(3 * 2**20))
    monkeypatch.setenv("DILCONV_FIRST_CALLS", "wait")
    monkeypatch.setenv("DILCONV_RECYCLE_BYTES", "0")
    assert dilconv.get_config() == {
        "threads": 1,
        "spin_ms": 2.5,
        "cache_dir": str(tmp_path),
        "workspace_bytes": 3 * 2**20,
        "recycle_bytes": 0,
        "allow_fft": False,
        "first_calls": "wait",
    }
    dilconv.set_config(spin_ms=0)  # set_config wins over the environment
    assert spin.spin_seconds() == 0.0


def test_threads_are_clamped_to_the_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    dilconv.set_config(threads=10**6)
    assert pool.num_threads() == _config.available_cpus()
    monkeypatch.setenv("DILCONV_THREADS", "4096")
    _config._process.clear()
    assert pool.num_threads() == _config.available_cpus()


def test_environment_replaced_by_a_plain_mapping_still_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The settings read CPython's ``os.environ`` store directly; a program (or a test
    tool) that replaces ``os.environ`` with another mapping is read through it."""
    monkeypatch.setattr(os, "environ", {**os.environ, "DILCONV_WORKSPACE_BYTES": str(2**21)})
    assert dilconv.get_config()["workspace_bytes"] == 2**21
    os.environ["DILCONV_WORKSPACE_BYTES"] = str(2**22)
    assert dilconv.get_config()["workspace_bytes"] == 2**22


def test_the_cpus_are_read_again_after_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1e6]
    monkeypatch.setattr(_config.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(_config, "_cpus_read", (-float("inf"), 1))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert _config.available_cpus() == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    now[0] += _config.CPUS_SECONDS / 2
    assert _config.available_cpus() == 3  # remembered for a while
    now[0] += _config.CPUS_SECONDS
    assert _config.available_cpus() == 1
    assert pool.num_threads() == 1


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"threads": 0}, ValueError, r"threads must be a positive int .* got 0"),
        ({"threads": 2.0}, TypeError, r"threads must be an int, got 2.0 of type float"),
        ({"threads": True}, TypeError, r"threads must be an int, got True"),
        ({"spin_ms": -1}, ValueError, r"spin_ms must be between 0 and 100 milliseconds, got -1"),
        ({"spin_ms": float("inf")}, ValueError, r"spin_ms must be between 0 and 100 .* inf"),
        ({"spin_ms": 101}, ValueError, r"spin_ms must be between 0 and 100 .* got 101"),
        ({"spin_ms": "5"}, TypeError, r"spin_ms must be a number of milliseconds, got '5'"),
        ({"cache_dir": ""}, ValueError, r"cache_dir must name a folder, got ''"),
        ({"cache_dir": 3}, TypeError, r"cache_dir must be a str or a path, got 3"),
        ({"workspace_bytes": -1}, ValueError, r"workspace_bytes must be at least 1 MiB .* -1"),
        ({"workspace_bytes": 2.5e8}, TypeError, r"workspace_bytes must be an int, got 2"),
        ({"allow_fft": 1}, TypeError, r"allow_fft must be True or False, got 1"),
        ({"recycle_bytes": -5}, ValueError, r"recycle_bytes must be .* at least 0 .* got -5"),
        ({"recycle_bytes": 1.5}, TypeError, r"recycle_bytes must be an int, got 1.5"),
    ],
)
def test_bad_values_are_refused_and_change_nothing(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    before = dilconv.get_config()
    with pytest.raises(error, match=match):
        dilconv.set_config(**options)
    with pytest.raises(error, match=match), dilconv.config_context(**options):
        pass  # pragma: no cover - never entered
    assert dilconv.get_config() == before


def test_unknown_settings_are_refused() -> None:
    with pytest.raises(TypeError, match="threds"):
        dilconv.set_config(threds=1)  # type: ignore[call-arg]


def test_context_nests_and_restores_after_an_exception() -> None:
    dilconv.set_config(workspace_bytes=8 * 2**20)
    with dilconv.config_context(workspace_bytes=2**20, threads=1):
        assert dilconv.get_config()["workspace_bytes"] == 2**20

        def fails() -> None:
            with dilconv.config_context(workspace_bytes=4 * 2**20, allow_fft=True):
                assert dilconv.get_workspace_limit() == 4 * 2**20
                assert dilconv.get_config()["threads"] == 1
                raise RuntimeError("inside")

        with pytest.raises(RuntimeError, match="inside"):
            fails()
        assert dilconv.get_config()["workspace_bytes"] == 2**20
        assert dilconv.get_config()["allow_fft"] is False
        dilconv.set_config(workspace_bytes=16 * 2**20)  # the block keeps precedence ...
        assert dilconv.get_workspace_limit() == 2**20
    assert dilconv.get_workspace_limit() == 16 * 2**20  # ... until it ends


def test_workspace_aliases() -> None:
    dilconv.set_workspace_limit(5 * 2**20)
    assert dilconv.get_config()["workspace_bytes"] == 5 * 2**20
    with dilconv.workspace_limit(2**20):
        assert dilconv.get_config()["workspace_bytes"] == 2**20
    assert dilconv.get_workspace_limit() == 5 * 2**20
    with pytest.raises(ValueError, match="nbytes must be at least 1 MiB"):
        dilconv.workspace_limit(10).__enter__()
    assert dilconv.get_workspace_limit() == 5 * 2**20


def test_contexts_in_many_threads_never_see_each_other() -> None:
    """The old process-wide ``workspace_limit`` left the limit stuck at 1 MiB when
    threads' blocks interleaved; each thread now sees only its own blocks."""
    before = dilconv.get_config()
    start = threading.Barrier(8)
    seen: list[str] = []

    def worker(k: int) -> None:
        start.wait()
        for round_ in range(200):
            limit = (k + 1) * 2**20
            with dilconv.workspace_limit(limit), dilconv.config_context(allow_fft=k % 2 == 0):
                config = dilconv.get_config()
                if (config["workspace_bytes"], config["allow_fft"]) != (limit, k % 2 == 0):
                    seen.append(f"thread {k} round {round_}: {config}")
            if dilconv.get_config() != before:
                seen.append(f"thread {k} round {round_} after its block: {dilconv.get_config()}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == []
    assert dilconv.get_config() == before


def test_calls_in_threads_follow_their_own_context() -> None:
    """Two threads, one allowed only 1 MiB of workspace: its call is refused, the other's runs."""
    x, w = np.ones((1, 16, 128, 128), np.float32), np.ones((16, 16, 3, 3), np.float32)
    outcomes: dict[str, str] = {}

    def call(name: str, limit: int) -> None:
        with dilconv.workspace_limit(limit):
            try:
                dilconv.conv2d(x, w, dilation=3, method="fft")
                outcomes[name] = "ran"
            except ValueError as err:
                outcomes[name] = str(err)

    threads = [
        threading.Thread(target=call, args=("small", 2**20)),
        threading.Thread(target=call, args=("large", 2**30)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes["large"] == "ran"
    assert "workspace" in outcomes["small"]


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DILCONV_")}
    clean["PYTHONPATH"] = SRC + os.pathsep + clean.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-W", "always", "-c", code],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=120,
    )


_THREAD_NAMES = (
    "import json, threading, numpy as np, dilconv\n"
    "x = np.ones((1, 512, 512, 16), np.float32); w = np.ones((3, 3, 16, 16), np.float32)\n"
    "for method in ('shift_add', 'tap_gemm', 'blocked'):\n"
    "    dilconv.conv2d(x, w, padding='same', dilation=2, data_format='NHWC', method=method)\n"
    "print(json.dumps(sorted(t.name for t in threading.enumerate())))\n"
)


@pytest.mark.skipif(_config.available_cpus() < 2, reason="one CPU: no pool either way")
def test_one_thread_runs_on_the_caller_with_no_pool() -> None:
    pooled = _python(_THREAD_NAMES)
    assert pooled.returncode == 0, pooled.stderr
    assert any(name.startswith("dilconv-") for name in json.loads(pooled.stdout))
    alone = _python(_THREAD_NAMES.replace("import json", "import dilconv\n"
                    "dilconv.set_config(threads=1)\nimport json"))  # fmt: skip
    assert alone.returncode == 0, alone.stderr
    assert json.loads(alone.stdout) == ["MainThread"]


_BAD_ENVIRONMENT = (
    "import warnings, numpy as np, dilconv\n"
    "with warnings.catch_warnings(record=True) as caught:\n"
    "    warnings.simplefilter('always')\n"
    "    for _ in range(3):\n"
    "        dilconv.conv2d(np.ones((1, 8, 96, 96), np.float32), np.ones((8, 8, 3, 3), np.float32),"
    " padding='same', dilation=2)\n"
    "        config = dilconv.get_config()\n"
    "for w in caught:\n"
    "    print('WARNING', w.category.__name__, w.message)\n"
    "print('CONFIG', config['threads'], config['spin_ms'], config['workspace_bytes'])\n"
)


@pytest.mark.parametrize(
    ("env", "warned"),
    [
        (
            {
                "DILCONV_WORKSPACE_BYTES": "abc",
                "DILCONV_SPIN_MS": "inf",
                "DILCONV_THREADS": "0",
                "DILCONV_FIRST_CALLS": "eager",
            },
            [
                "DILCONV_WORKSPACE_BYTES='abc'",
                "DILCONV_SPIN_MS='inf'",
                "DILCONV_THREADS='0'",
                "DILCONV_FIRST_CALLS='eager'",
            ],
        ),
        (
            {"DILCONV_WORKSPACE_BYTES": "-1", "DILCONV_SPIN_MS": "nan", "DILCONV_THREADS": "64"},
            ["DILCONV_WORKSPACE_BYTES='-1'", "DILCONV_SPIN_MS='nan'"],
        ),
    ],
)
def test_bad_environment_values_warn_once_and_fall_back(
    env: dict[str, str], warned: list[str]
) -> None:
    out = _python(_BAD_ENVIRONMENT, **env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    warnings_ = [line for line in lines if line.startswith("WARNING")]
    assert len(warnings_) == len(warned), warnings_  # one each, though read many times
    for text in warned:
        assert sum(text in line for line in warnings_) == 1, (text, warnings_)
    assert all("RuntimeWarning" in line and "using the default" in line for line in warnings_)
    threads = min(64, _config.available_cpus())
    expected = f"CONFIG {threads} {spin.DEFAULT_SPIN_MS} {_config.DEFAULT_WORKSPACE_BYTES}"
    assert lines[-1] == expected


def test_threadpoolctl_limits_the_blas_dilconv_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """``threadpool_limits`` holds inside dilconv's products and is still in force after a
    method that limits BLAS itself (``tap_gemm`` nests its own limit and restores it)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas() -> set[int]:
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    if not blas():
        pytest.skip("no BLAS library that threadpoolctl can see")
    seen: list[set[int]] = []
    product = pool.accumulate_product

    def recording(*args: Any) -> None:
        seen.append(blas())
        product(*args)

    monkeypatch.setattr(pool, "accumulate_product", recording)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 64, 64, 8)).astype(np.float32)
    w = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
    for method in ("shift_add", "tap_gemm"):  # loads SciPy's BLAS, lazily imported, first:
        # threadpoolctl limits the libraries loaded when its block starts (README, Settings)
        dilconv.conv2d(x, w, padding="same", dilation=2, data_format="NHWC", method=method)
    seen.clear()
    before = blas()
    with threadpool_limits(limits=1, user_api="blas"):
        for method in ("shift_add", "tap_gemm", "shift_add"):
            dilconv.conv2d(x, w, padding="same", dilation=2, data_format="NHWC", method=method)
            assert blas() == {1}
    assert seen
    assert all(s == {1} for s in seen)
    assert blas() == before


_LATE_BLAS = """
from threadpoolctl import threadpool_info
from dilconv._native import pool

def threads():
    return sorted(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")

with pool.single_threaded_blas():  # before SciPy's BLAS is loaded
    pass
import scipy.linalg.blas  # a second BLAS library
with pool.single_threaded_blas():
    print("INSIDE", threads())
"""


def test_one_blas_thread_reaches_a_blas_loaded_later() -> None:
    """``pool.single_threaded_blas`` limits every BLAS loaded when it is entered, also
    one loaded after its first use (threadpoolctl sees only the libraries loaded when
    its controller is made)."""
    out = _python(_LATE_BLAS)
    assert out.returncode == 0, out.stderr
    inside = [line for line in out.stdout.splitlines() if line.startswith("INSIDE")]
    assert inside
    counts = ast.literal_eval(inside[-1].split(" ", 1)[1])
    assert counts  # NumPy's BLAS and SciPy's, every one on one thread
    assert set(counts) == {1}, counts


def test_measuring_takes_turns_and_never_spins(monkeypatch: pytest.MonkeyPatch) -> None:
    """``choose_method(measure=True)`` no longer spins every core before each candidate
    (the settle pause belongs to ``dilconv bench``); the candidates take turns."""
    from dilconv import _select

    def no_spinning(*args: object) -> None:
        raise AssertionError("choose_method(measure=True) spun the cores")

    monkeypatch.setattr(spin, "busy_pause", no_spinning)
    order: list[str] = []
    times = _select.measure(order.append, ["a", "b", "c"], repeats=2)
    assert order == ["a", "b", "c", "a", "b", "c"]
    assert set(times) == {"a", "b", "c"}
    x, w = np.ones((1, 2, 16, 16), np.float32), np.ones((2, 2, 3, 3), np.float32)
    best, measured = dilconv.choose_method(x, w, dilation=2, measure=True)
    assert best in measured
    assert all(t > 0 for t in measured.values())


def test_allow_fft_lets_auto_choose_the_fft() -> None:
    """Off by default; on for a block, ``"auto"`` may rank ``"fft"`` among the others."""
    from dilconv import _select
    from dilconv._spec import make_spec

    spec = make_spec((1, 3, 64, 64), (1, 3, 15, 15), dtypes=[np.dtype(np.float64)]).lowered()
    assert not _select.allow_fft()
    assert "fft" not in _select.candidates(spec)
    with dilconv.config_context(allow_fft=True):
        assert _select.allow_fft()
        assert "fft" in _select.candidates(spec)
    dilconv.set_config(allow_fft=True)
    assert _select.allow_fft()

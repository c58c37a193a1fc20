"""What the numbers were measured on: CPU, load, versions, BLAS, threads, matmul peak."""

from __future__ import annotations

import os
import platform
import time
from importlib import metadata
from typing import Any

import numpy as np

from dilconv._native import pool

#: Packages whose versions a result records.
VERSIONS = ("dilconv", "numpy", "scipy", "torch", "tensorflow", "threadpoolctl")


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
    """Installed versions of the packages in :data:`VERSIONS` (missing ones left out)."""
    found = {}
    for name in VERSIONS:
        try:
            found[name] = metadata.version("tensorflow-cpu" if name == "tensorflow" else name)
        except metadata.PackageNotFoundError:
            try:
                found[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
    return found


def thread_pools() -> list[dict[str, Any]]:
    """threadpoolctl's view: each BLAS / OpenMP library, its kernel and thread count."""
    from threadpoolctl import threadpool_info

    keep = ("user_api", "internal_api", "prefix", "version", "num_threads", "architecture")
    return [{k: info.get(k) for k in keep if k in info} for info in threadpool_info()]


def blas_summary(pools: list[dict[str, Any]]) -> str:
    """One line: each BLAS library with its kernel (architecture) and threads."""
    parts = [
        f"{p.get('internal_api')} {p.get('version')} {p.get('architecture', '')} "
        f"x{p.get('num_threads')}".replace("  ", " ")
        for p in pools
        if p.get("user_api") == "blas"
    ]
    return "; ".join(parts) or "no BLAS found by threadpoolctl"


def matmul_peak(n: int, repeats: int = 5) -> float:
    """Best float32 GFLOP/s of an ``n x n`` matrix product through NumPy's BLAS."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best / 1e9


def describe(peak_n: int) -> dict[str, Any]:
    """The machine record stored with every result."""
    pools = thread_pools()
    try:
        load = list(os.getloadavg())
    except OSError:  # pragma: no cover - not Unix
        load = []
    env = {k: os.environ[k] for k in sorted(os.environ) if k.startswith(("OPENBLAS_", "OMP_"))}
    env.update({k: os.environ[k] for k in ("TF_ENABLE_ONEDNN_OPTS",) if k in os.environ})
    return {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "dilconv_threads": pool.num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions(),
        "load_average": load,
        "environment": env,
        "thread_pools": pools,
        "blas": blas_summary(pools),
        "matmul_peak_gflops": matmul_peak(peak_n),
        "matmul_peak_n": peak_n,
    }

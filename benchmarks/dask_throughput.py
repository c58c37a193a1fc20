"""Throughput of ``dilconv apply`` on 1 and 2 Dask workers against in-memory ``conv2d``.

Also ``--scheduler threads`` (Dask's thread pool in the command's own process):
the difference is the cost of the cluster's processes and transfers.

Writes a float32 Zarr image, runs the command as a user would (a subprocess,
a fresh ``LocalCluster`` on 127.0.0.1 each time), checks the result against the
in-memory call, and prints a Markdown table of megapixels (of input) per second.
Two rates are given for ``apply``: the whole command (cluster start, worker
imports, reading and writing Zarr included) and the compute-and-write phase the
command reports. Run::

    .venv/bin/python benchmarks/dask_throughput.py --size 8192 --chunk 1024
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dask
import distributed
import numpy as np
import zarr

import dilconv


def write_image(path: Path, size: int, chunk: int) -> None:
    z = zarr.create_array(store=str(path), shape=(size, size), chunks=(chunk, chunk), dtype="f4")
    rng = np.random.default_rng(0)
    for r in range(0, size, chunk):
        z[r : r + chunk] = rng.standard_normal((min(chunk, size - r), size), dtype=np.float32)


def run_apply(argv: list[str]) -> tuple[float, float, str]:
    """``(wall seconds, reported compute-and-write seconds, stdout)`` of one command."""
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    found = re.search(r"computed and written in ([0-9.]+) s", done.stdout)
    if found is None:
        raise RuntimeError(f"unexpected output: {done.stdout}\n{done.stderr}")
    return wall, float(found.group(1)), done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192, help="image side (pixels)")
    parser.add_argument("--chunk", type=int, default=1024, help="Zarr chunk side (pixels)")
    parser.add_argument("--dilation", type=int, default=4)
    parser.add_argument("--kernel", type=int, default=3, help="kernel side (taps)")
    parser.add_argument("--memory-limit", default="512MiB")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="dilconv-dask-bench-"))
    try:
        image, kernel = tmp / "in.zarr", tmp / "k.npy"
        write_image(image, args.size, args.chunk)
        w = np.random.default_rng(1).standard_normal((args.kernel,) * 2).astype(np.float32)
        np.save(kernel, w)
        mpx = args.size * args.size / 1e6
        options = ["--dilation", str(args.dilation), "--padding", "same"]
        exe = str(Path(sys.executable).with_name("dilconv"))

        x = zarr.open_array(store=str(image), mode="r")[:]
        start = time.perf_counter()
        expected = dilconv.conv2d(x, w, dilation=args.dilation, padding="same")
        in_memory = time.perf_counter() - start
        method = dilconv.choose_method(x, w, dilation=args.dilation, padding="same")

        rows = [
            f"| in-memory `dilconv.conv2d` ({method}) | {in_memory:.2f} s | - | "
            f"{mpx / in_memory:.1f} |"
        ]
        for workers in (1, 2):
            out = tmp / f"out{workers}.zarr"
            argv = [exe, "apply", str(image), str(out), "--kernel", str(kernel), *options]
            argv += ["--workers", str(workers), "--memory-limit", args.memory_limit]
            wall, compute, _ = run_apply(argv)
            y = zarr.open_array(store=str(out), mode="r")[:]
            np.testing.assert_allclose(y, expected, rtol=2e-5, atol=2e-5)
            rows.append(
                f"| `dilconv apply`, {workers} worker{'s' * (workers > 1)} of "
                f"{args.memory_limit} | {wall:.2f} s | {compute:.2f} s | "
                f"{mpx / wall:.1f} (compute and write: {mpx / compute:.1f}) |"
            )
            shutil.rmtree(out)
        out = tmp / "out-threads.zarr"
        argv = [exe, "apply", str(image), str(out), "--kernel", str(kernel), *options]
        wall, compute, _ = run_apply([*argv, "--scheduler", "threads"])
        np.testing.assert_allclose(
            zarr.open_array(store=str(out), mode="r")[:], expected, rtol=2e-5, atol=2e-5
        )
        rows.append(
            f"| `dilconv apply --scheduler threads` (no cluster) | {wall:.2f} s | "
            f"{compute:.2f} s | {mpx / wall:.1f} (compute and write: {mpx / compute:.1f}) |"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"Image {args.size}x{args.size} float32 ({args.size**2 * 4 / 2**20:.0f} MiB), Zarr "
        f"chunks {args.chunk}x{args.chunk}, kernel {args.kernel}x{args.kernel}, "
        f"dilation {args.dilation}, padding same."
    )
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, numpy {np.__version__}, dask {dask.__version__}, "
        f"distributed {distributed.__version__}, zarr {zarr.__version__}; "
        f"load average after the run: {load}."
    )
    print()
    print("| run | wall time | compute and write | Mpx/s of input |")
    print("|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

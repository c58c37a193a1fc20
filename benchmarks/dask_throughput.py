"""Throughput of ``dilconv apply`` on Dask against in-memory ``conv2d`` and dask-image.

For each Zarr compressor (``none``, ``zstd``, ``blosc``; input and output alike)
the float32 image is written, then convolved Zarr to Zarr by:

- ``dilconv apply`` on a LocalCluster of 1 and 2 worker processes (the default
  cluster: one thread each, 127.0.0.1), run as a user would (a subprocess);
- ``dilconv apply --scheduler threads`` (Dask's thread pool in the command's own
  process: the difference is the cost of the cluster's processes);
- ``dask_image.ndfilters.correlate`` with the dilated kernel (zeros inserted),
  on a LocalCluster of the same shape, ``from_zarr`` to ``to_zarr``;

and compared with in-memory :func:`dilconv.conv2d` on the same image (its model's
choice loaded first, best of 5), and with a plain Zarr-to-Zarr copy on the same
cluster, no convolution: the store's own cost. Rates are
megapixels of input per second of computing and writing (cluster start and
imports excluded; the whole command's wall time is printed too). Every result is
checked against the in-memory one.

Then the graph of a 65,536^2 image in 512^2 chunks (16,384 chunks, never written):
the time to build ``dilconv apply``'s graph (convolution and writes) and its task
count after Dask's optimisation, without computing it.

Targets (issue 21), printed as met or not: on the 2-process cluster ``apply``
computes and writes at >= 0.8x the rate of ``--scheduler threads`` and >= 0.5x
in-memory ``conv2d``, ahead of dask-image; the large graph is built in < 2 s with
at most 2 tasks per chunk. Run (dask-image is needed for its row: ``pip install
dask-image``)::

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import distributed
import numpy as np
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

import dilconv
import dilconv.dask
from dilconv._dask_zarr import write_chunks
from dilconv.cli.apply import create_output, write_block

CODECS: dict[str, Any] = {"none": None, "zstd": ZstdCodec(), "blosc": BloscCodec()}


def write_image(path: Path, size: int, chunk: int, compressor: str) -> None:
    z = zarr.create_array(
        store=str(path),
        shape=(size, size),
        chunks=(chunk, chunk),
        dtype="f4",
        compressors=CODECS[compressor],
    )
    rng = np.random.default_rng(0)
    for r in range(0, size, chunk):
        z[r : r + chunk] = rng.standard_normal((min(chunk, size - r), size), dtype=np.float32)


def run_apply(argv: list[str]) -> tuple[float, float]:
    """``(wall seconds, reported compute-and-write seconds)`` of one command."""
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    found = re.search(r"computed and written in ([0-9.]+) s", done.stdout)
    if done.returncode or found is None:
        raise RuntimeError(f"{argv} failed: {done.stdout}\n{done.stderr}")
    return wall, float(found.group(1))


def _store_on_cluster(
    image: Path, out: Path, args: Any, compressor: str, step: Callable[[da.Array], da.Array]
) -> float:
    """Seconds to read the Zarr image, apply ``step`` and store the result as a new
    Zarr array, on a fresh 2-process LocalCluster (timed once its workers are up)."""
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            memory_limit=args.memory_limit,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.wait_for_workers(2)
        start = time.perf_counter()
        x = da.from_zarr(str(image))
        y = step(x)
        target = zarr.create_array(
            store=str(out), shape=y.shape, chunks=x.chunksize, dtype=y.dtype,
            compressors=CODECS[compressor],
        )  # fmt: skip
        da.store(y, target, lock=False)
        return time.perf_counter() - start


def dask_image_rate(image: Path, out: Path, w: np.ndarray, args: Any, compressor: str) -> float:
    """Seconds for dask-image's correlate, Zarr to Zarr, on a 2-process LocalCluster."""
    from dask_image import ndfilters

    d = args.dilation
    dilated = np.zeros(((w.shape[0] - 1) * d + 1,) * 2, dtype=w.dtype)
    dilated[::d, ::d] = w

    def correlate(x: da.Array) -> da.Array:
        return ndfilters.correlate(x, dilated, mode="constant", cval=0.0)

    return _store_on_cluster(image, out, args, compressor, correlate)


def copy_seconds(image: Path, out: Path, args: Any, compressor: str) -> float:
    """Seconds to copy the Zarr image to a new Zarr array on a 2-process LocalCluster,
    chunk by chunk, with no convolution: what reading and writing the store cost."""
    return _store_on_cluster(image, out, args, compressor, lambda x: x)


def graph_facts(size: int, chunk: int, tmp: Path) -> tuple[float, float, int, int]:
    """``(build s, optimise s, tasks, chunks)`` of ``apply``'s graph (nothing computed)."""
    z = zarr.create_array(
        store=str(tmp / "big.zarr"), shape=(size, size), chunks=(chunk, chunk), dtype="f4"
    )
    w = np.ones((3, 3), dtype=np.float32)
    start = time.perf_counter()
    y = dilconv.dask.conv2d_zarr(z, w, dilation=4, padding="same")
    kind = create_output(tmp / "big-out.zarr", y.shape, y.chunksize, y.dtype)
    marks = write_chunks(y, write_block, target=str(tmp / "big-out.zarr"), kind=kind)
    build = time.perf_counter() - start
    start = time.perf_counter()
    (optimised,) = dask.optimize(marks)
    tasks = len(dict(optimised.__dask_graph__()))
    return build, time.perf_counter() - start, tasks, y.npartitions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192, help="image side (pixels)")
    parser.add_argument("--chunk", type=int, default=1024, help="Zarr chunk side (pixels)")
    parser.add_argument("--dilation", type=int, default=4)
    parser.add_argument("--kernel", type=int, default=3, help="kernel side (taps)")
    parser.add_argument("--memory-limit", default="512MiB")
    parser.add_argument("--compressors", default="none,zstd,blosc", help="comma-separated")
    parser.add_argument("--graph-size", type=int, default=65536, help="0: no graph row")
    parser.add_argument("--graph-chunk", type=int, default=512)
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    args = parser.parse_args()
    compressors = args.compressors.split(",")

    tmp = Path(tempfile.mkdtemp(prefix="dilconv-dask-bench-"))
    rows: list[str] = []
    verdicts: list[str] = []
    try:
        kernel = tmp / "k.npy"
        w = np.random.default_rng(1).standard_normal((args.kernel,) * 2).astype(np.float32)
        np.save(kernel, w)
        mpx = args.size * args.size / 1e6
        options = ["--dilation", str(args.dilation), "--padding", "same"]
        exe = str(Path(sys.executable).with_name("dilconv"))
        expected = None
        in_memory_rate = 0.0
        for compressor in compressors:
            image = tmp / f"in-{compressor}.zarr"
            write_image(image, args.size, args.chunk, compressor)
            if expected is None:
                x = zarr.open_array(store=str(image), mode="r")[:]
                # The model's choice loaded before timing (first_calls="wait"), then
                # the best of 5: the in-memory rate at full speed.
                with dilconv.config_context(first_calls="wait"):
                    expected = dilconv.conv2d(x, w, dilation=args.dilation, padding="same")
                    times = []
                    for _ in range(5):
                        start = time.perf_counter()
                        dilconv.conv2d(x, w, dilation=args.dilation, padding="same")
                        times.append(time.perf_counter() - start)
                in_memory = min(times)
                in_memory_rate = mpx / in_memory
                method = dilconv.choose_method(x, w, dilation=args.dilation, padding="same")
                rows.append(
                    f"| in-memory `dilconv.conv2d` ({method}), no Zarr | - | "
                    f"{in_memory:.2f} s | {in_memory_rate:.1f} |"
                )
                del x
            rates: dict[str, float] = {}
            runs = [(f"{n} worker{'s' * (n > 1)}", ["--workers", str(n)]) for n in (1, 2)]
            runs.append(("threads", ["--scheduler", "threads"]))
            for label, extra in runs:
                out = tmp / "out.zarr"
                argv = [exe, "apply", str(image), str(out), "--kernel", str(kernel), *options]
                argv += ["--compressor", compressor, *extra]
                if label != "threads":
                    argv += ["--memory-limit", args.memory_limit]
                wall, compute = run_apply(argv)
                y = zarr.open_array(store=str(out), mode="r")[:]
                np.testing.assert_allclose(y, expected, rtol=2e-5, atol=2e-5)
                shutil.rmtree(out)
                rates[label] = mpx / compute
                name = f"LocalCluster of {label}" if label != "threads" else "--scheduler threads"
                rows.append(
                    f"| `dilconv apply`, {name} | {compressor} | {compute:.2f} s "
                    f"(whole command {wall:.2f} s) | {rates[label]:.1f} |"
                )
            try:
                seconds = dask_image_rate(image, tmp / "di.zarr", w, args, compressor)
            except ImportError:
                rows.append(f"| dask-image: not installed | {compressor} | - | - |")
            else:
                y = zarr.open_array(store=str(tmp / "di.zarr"), mode="r")[:]
                np.testing.assert_allclose(y, expected, rtol=2e-5, atol=2e-5)
                shutil.rmtree(tmp / "di.zarr")
                rates["dask-image"] = mpx / seconds
                rows.append(
                    f"| dask-image `ndfilters.correlate`, LocalCluster of 2 workers | "
                    f"{compressor} | {seconds:.2f} s | {rates['dask-image']:.1f} |"
                )
            seconds = copy_seconds(image, tmp / "copy.zarr", args, compressor)
            shutil.rmtree(tmp / "copy.zarr")
            rates["copy"] = mpx / seconds
            rows.append(
                f"| Zarr to Zarr copy, no convolution, LocalCluster of 2 workers | "
                f"{compressor} | {seconds:.2f} s | {rates['copy']:.1f} |"
            )
            two = rates["2 workers"]
            verdicts.append(
                f"{compressor}: 2 workers / threads {two / rates['threads']:.2f} (>= 0.8: "
                f"{'met' if two >= 0.8 * rates['threads'] else 'NOT met'}); 2 workers / "
                f"in-memory {two / in_memory_rate:.2f} (>= 0.5: "
                f"{'met' if two >= 0.5 * in_memory_rate else 'NOT met'}); 2 workers / the "
                f"same cluster's plain copy {two / rates['copy']:.2f}"
                + (
                    f"; 2 workers / dask-image {two / rates['dask-image']:.2f} (> 1: "
                    f"{'met' if two > rates['dask-image'] else 'NOT met'})"
                    if "dask-image" in rates
                    else ""
                )
            )
            shutil.rmtree(image)
        if args.graph_size:
            build, optimise, tasks, chunks = graph_facts(args.graph_size, args.graph_chunk, tmp)
            verdicts.append(
                f"graph of {args.graph_size}^2 in {args.graph_chunk}^2 chunks: {chunks} chunks, "
                f"{tasks} tasks after optimisation ({tasks / chunks:.2f} per chunk, <= 2: "
                f"{'met' if tasks <= 2 * chunks else 'NOT met'}); built in {build:.2f} s "
                f"(< 2 s: {'met' if build < 2 else 'NOT met'}), optimised in {optimise:.2f} s"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    report = [
        f"Image {args.size}x{args.size} float32 ({args.size**2 * 4 / 2**20:.0f} MiB), Zarr "
        f"chunks {args.chunk}x{args.chunk}, kernel {args.kernel}x{args.kernel}, "
        f"dilation {args.dilation}, padding same; workers of {args.memory_limit}.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, numpy {np.__version__}, dask {dask.__version__}, "
        f"distributed {distributed.__version__}, zarr {zarr.__version__}; "
        f"finished {when}, load average after the run: {load}.",
        "",
        "| run | compressor | compute and write | Mpx/s of input |",
        "|---|---|---|---|",
        *rows,
        "",
        *(f"- {v}" for v in verdicts),
    ]
    print("\n".join(report))
    if args.out is not None:
        args.out.write_text("\n".join(report) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``dilconv apply IN OUT --kernel K.npy``: convolve an array larger than memory on Dask.

The input is read lazily (a Zarr array, or a small ``.npy``) and convolved chunk
by chunk: by :func:`dilconv.dask.conv2d_zarr` for a Zarr array (each output
chunk's task reads its own window from the store), by :func:`dilconv.dask.conv2d`
for a ``.npy``. Chunks are written to a hidden sibling of OUT that replaces OUT
only when every chunk is written (:mod:`dilconv.cli._replace`): an interrupted or
failed run leaves the old OUT, or none, never half of one. ``--overwrite`` replaces
only an earlier Zarr array or ``.npy`` file, and OUT may never be, contain or lie
inside IN.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from dilconv.cli import _replace
from dilconv.cli._options import (
    STDOUT,
    add_conv_options,
    add_report_options,
    load_npy,
    per_axis,
    rank_options,
    write_report,
)

LOCAL_SCHEDULERS = ("threads", "processes")
COMPRESSORS = ("none", "zstd", "blosc")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "apply",
        help="convolve a Zarr (or .npy) array larger than memory, chunk by chunk on Dask",
        description=(
            "Convolve IN with --kernel on Dask and write OUT (Zarr unless OUT ends in .npy). "
            "By default a distributed.LocalCluster on 127.0.0.1 (no dashboard) runs it."
        ),
    )
    p.add_argument("input", type=Path, help="input: a Zarr array (directory) or a .npy file")
    p.add_argument("output", type=Path, help="output: a Zarr array (directory) or a .npy file")
    p.add_argument("--kernel", type=Path, required=True, help="weights (.npy)")
    p.add_argument("--bias", type=Path, help="bias vector (.npy)")
    add_conv_options(p, ranks=True)
    p.add_argument(
        "--chunks",
        type=per_axis,
        help="outputs per chunk, N or one per spatial axis "
        "(default: the input's chunks divided by the stride)",
    )
    p.add_argument(
        "--scheduler",
        default=None,
        help="threads, processes, or the ADDRESS of a running distributed scheduler "
        "(default: start a LocalCluster on 127.0.0.1)",
    )
    p.add_argument("--workers", type=int, help="LocalCluster workers (default 2)")
    p.add_argument(
        "--memory-limit", help="memory limit of each LocalCluster worker (default 512MiB)"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUT if it is an earlier output (a Zarr array, or an .npy file)",
    )
    p.add_argument(
        "--compressor",
        choices=COMPRESSORS,
        default="zstd",
        help="codec of a Zarr OUT's chunks (default zstd; random floats barely compress)",
    )
    add_report_options(p, "a JSON summary (shapes, chunks, seconds, rate)")
    p.set_defaults(run=run)


# --- input and output --------------------------------------------------------------------


def open_input(path: Path) -> Any:
    """A lazy Dask array over a Zarr array or a ``.npy`` file."""
    import dask.array as da
    import zarr

    if not path.exists():
        raise FileNotFoundError(f"input {str(path)!r} does not exist")
    if path.suffix == ".npy":
        return da.from_array(np.load(path, mmap_mode="r", allow_pickle=False))
    try:
        node = zarr.open(store=str(path), mode="r")
    except Exception as err:  # zarr raises several kinds for "not a Zarr store"
        raise ValueError(f"input {str(path)!r} is not a Zarr array or a .npy file: {err}") from err
    if not isinstance(node, zarr.Array):
        raise ValueError(f"input {str(path)!r} is a Zarr group; expected a Zarr array")
    return da.from_zarr(node)


def create_output(
    path: Path,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    dtype: Any,
    compressor: str = "zstd",
) -> str:
    """Create an empty output at ``path``; return its kind, ``"zarr"`` or ``"npy"``.

    ``compressor`` (one of :data:`COMPRESSORS`) is the Zarr chunks' codec.
    """
    if path.name.endswith(".npy") or ".npy.partial-" in path.name:
        np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape).flush()
        return "npy"
    import zarr
    from zarr.codecs import BloscCodec, ZstdCodec

    codecs = {"none": None, "zstd": ZstdCodec(), "blosc": BloscCodec()}
    if compressor not in codecs:
        raise ValueError(f"compressor must be one of {COMPRESSORS}, got {compressor!r}")
    zarr.create_array(
        store=str(path), shape=shape, chunks=chunks, dtype=dtype, compressors=codecs[compressor]
    )
    return "zarr"


def write_block(
    block: np.ndarray, *, target: str, kind: str, block_info: dict[Any, Any] | None = None
) -> np.ndarray:
    """Write one output chunk where it belongs in ``target``; return a one-element marker."""
    if block_info is None:
        raise TypeError("write_block runs under dask's map_blocks, which passes block_info")
    region = tuple(slice(start, stop) for start, stop in block_info[0]["array-location"])
    if kind == "zarr":
        import zarr

        zarr.open_array(store=target, mode="r+")[region] = block
    else:
        out = np.load(target, mmap_mode="r+")
        out[region] = block
        out.flush()
        del out
    return np.ones((1,) * block.ndim, dtype=np.int8)


# --- schedulers and progress -------------------------------------------------------------


@contextmanager
def _client(args: argparse.Namespace) -> Iterator[Any]:
    """A distributed client: a new LocalCluster on 127.0.0.1, or a running scheduler."""
    from dask.utils import parse_bytes
    from distributed import Client, LocalCluster

    from dilconv._native.pool import num_threads

    if args.scheduler is not None:
        if args.workers is not None or args.memory_limit is not None:
            raise ValueError(
                f"--workers and --memory-limit start a LocalCluster; they cannot be used with "
                f"--scheduler {args.scheduler!r}"
            )
        try:
            client = Client(args.scheduler, timeout="20s")
        except OSError as err:
            raise ValueError(f"cannot reach the scheduler at {args.scheduler!r}: {err}") from err
        with client:
            yield client
        return
    workers = 2 if args.workers is None else args.workers
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    limit = parse_bytes(args.memory_limit or "512MiB")
    # Each chunk's algorithm keeps its scratch memory to an eighth of the worker's.
    env = {"DILCONV_WORKSPACE_BYTES": str(max(2**20, limit // 8))}
    # And shares the CPUs with the other workers: 2 workers of 2 threads each on 2
    # CPUs would have their idle threads spin against each other's work.
    env["DILCONV_THREADS"] = str(max(1, num_threads() // workers))
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,  # no dashboard; the health endpoint on 127.0.0.1 only
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            memory_limit=limit,
            env=env,
        ) as cluster,
        Client(cluster) as client,
    ):
        # Its workers import dilconv now, as --scheduler threads has before its run.
        client.run(_import_dilconv)
        yield client


def _import_dilconv() -> None:
    import dilconv._dask_zarr  # noqa: F401


def _run_local(marks: Any, scheduler: str, workers: int | None, progress: bool) -> float:
    from concurrent.futures import ThreadPoolExecutor

    from dask.callbacks import Callback
    from dask.system import CPU_COUNT
    from tqdm import tqdm

    with tqdm(desc="dilconv apply", unit="task", file=sys.stderr, disable=not progress) as bar:

        class Progress(Callback):
            def _start_state(self, dsk: Any, state: Any) -> None:
                bar.total = len(dsk)
                bar.refresh()

            def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, wid: Any) -> None:
                bar.update(1)

        # The threads get a pool of their own, shut down before a failed run's partial
        # output is discarded: Dask's shared pool would let chunk tasks that had started
        # run on and write into it after the error (the processes scheduler's own pool
        # is shut down, waiting, by Dask itself).
        pool = ThreadPoolExecutor(workers or CPU_COUNT) if scheduler == "threads" else None
        start = time.perf_counter()
        try:
            with Progress():
                marks.compute(scheduler=scheduler, num_workers=workers, pool=pool)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        return time.perf_counter() - start


def _run_distributed(marks: Any, client: Any, progress: bool) -> float:
    from distributed import as_completed, futures_of
    from tqdm import tqdm

    start = time.perf_counter()
    futures = futures_of(client.persist(marks))
    bar = tqdm(
        total=len(futures),
        desc="dilconv apply",
        unit="chunk",
        file=sys.stderr,
        disable=not progress,
    )
    with bar:
        for _ in as_completed(futures):
            bar.update(1)
    client.gather(futures)  # raises the first error of a failed chunk
    return time.perf_counter() - start


def _describe(client: Any) -> str:
    workers = client.scheduler_info()["workers"].values()
    limits = sorted({w.get("memory_limit", 0) for w in workers})
    threads = sum(w.get("nthreads", 0) for w in workers)
    return f"{len(workers)} workers, {threads} threads, memory limit {limits} bytes each"


# --- the command ---------------------------------------------------------------------------


def plan(args: argparse.Namespace) -> tuple[Any, Any, int]:
    """``(x, y, samples)``: the lazy input and result of the arguments, validated, not
    computed, and the input's samples (pixels, voxels) over its batch and spatial axes."""
    import dilconv.dask
    from dilconv._dask_zarr import spatial_axes_nd, zarr_source
    from dilconv._spec import make_spec
    from dilconv._spec_nd import make_spec_nd

    for name, path in (("kernel", args.kernel), ("bias", args.bias)):
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"{name} {str(path)!r} does not exist")
    x = open_input(args.input)
    w = load_npy(args.kernel, "kernel")
    bias = None if args.bias is None else load_npy(args.bias, "bias")
    rank, options = rank_options(args, w.ndim)
    conv, conv_zarr = {
        1: (dilconv.dask.conv1d, dilconv.dask.conv1d_zarr),
        2: (dilconv.dask.conv2d, dilconv.dask.conv2d_zarr),
        3: (dilconv.dask.conv3d, dilconv.dask.conv3d_zarr),
    }[rank]
    try:
        source = zarr_source(x)
        if source is not None:  # each output chunk reads its window from the store
            y = conv_zarr(source, w, bias, chunks=args.chunks, **options)
        else:
            y = conv(x, w, bias, **options)
        geometry = {k: v for k, v in options.items() if k != "method"}
        if rank == 2:
            spec2 = make_spec(x.shape, w.shape, memory_check=False, **geometry)
            axes = list(dilconv.dask.spatial_axes(spec2)[:2])
            size: tuple[int, ...] = spec2.in_hw
            stride: tuple[int, ...] = spec2.stride
            batch = spec2.batch
        else:
            spec = make_spec_nd(rank, x.shape, w.shape, memory_check=False, **geometry)
            axes, c_axis = spatial_axes_nd(rank, spec.x_ndim, spec.channels_first)
            size, stride, batch = spec.in_size, spec.stride, spec.batch
        if source is None and args.chunks is not None:
            per = (args.chunks,) * rank if isinstance(args.chunks, int) else args.chunks
            if len(per) != rank or min(per) < 1:
                raise ValueError(
                    f"--chunks must be a positive N or {rank} of them, got {args.chunks}"
                )
            x = x.rechunk({a: n * s for a, n, s in zip(axes, per, stride, strict=True)})
            y = conv(x, w, bias, **options)
    except ValueError as err:
        raise ValueError(f"{args.input}: {err}") from err
    # Zarr needs regular chunks: all equal but the last (only a batch axis can differ).
    if any(c[:-1] != (c[0],) * (len(c) - 1) or c[-1] > c[0] for c in y.chunks):
        y = y.rechunk(tuple(c[0] for c in y.chunks))
    return x, y, batch * math.prod(size)


def run(args: argparse.Namespace) -> int:
    from dilconv._dask_zarr import plan_of, write_chunks

    output: Path = args.output
    _replace.check_target(args.input, output, overwrite=args.overwrite)
    if not output.parent.is_dir():
        raise FileNotFoundError(f"output directory {str(output.parent)!r} does not exist")
    if args.scheduler in LOCAL_SCHEDULERS and args.memory_limit is not None:
        raise ValueError(
            f"--memory-limit applies to a LocalCluster, not --scheduler {args.scheduler}"
        )
    x, y, samples = plan(args)
    chunks = tuple(c[0] for c in y.chunks)
    say = (lambda text: None) if args.json == STDOUT else print
    say(f"input  {args.input}: {x.dtype} {x.shape}, chunks {tuple(c[0] for c in x.chunks)}")
    say(f"output {output}: {y.dtype} {y.shape}, chunks {chunks} (regular; the last smaller)")
    sys.stdout.flush()
    progress = not args.no_progress
    scheduler = args.scheduler
    start = time.perf_counter()
    with _replace.signals_as_interrupts(), _replace.Replacement(output) as target:
        kind = create_output(target.partial, y.shape, chunks, y.dtype, args.compressor)
        target.pause("writing")
        marks = write_chunks(y, write_block, target=str(target.partial), kind=kind)
        zarr_plan = plan_of(y)
        if args.scheduler in LOCAL_SCHEDULERS:
            if zarr_plan is not None:
                zarr_plan.warm_up()
            seconds = _run_local(marks, args.scheduler, args.workers, progress)
        else:
            with _client(args) as client:
                scheduler = str(client.scheduler.address)
                say(f"scheduler {scheduler}: {_describe(client)}")
                sys.stdout.flush()
                if zarr_plan is not None:  # compiled on every worker before the clock starts
                    client.run(zarr_plan.warm_up)
                seconds = _run_distributed(marks, client, progress)
        target.commit()
    total = time.perf_counter() - start
    rate = samples / seconds / 1e6
    say(
        f"wrote {output}: computed and written in {seconds:.2f} s "
        f"({rate:.2f} Mpx/s of input), {total:.2f} s in all"
    )
    if args.json is not None:
        record = {
            "input": {"path": str(args.input), "dtype": str(x.dtype), "shape": list(x.shape),
                      "chunks": [c[0] for c in x.chunks]},
            "output": {"path": str(output), "dtype": str(y.dtype), "shape": list(y.shape),
                       "chunks": list(chunks), "kind": kind},
            "scheduler": scheduler or "LocalCluster",
            "seconds": seconds,
            "total_seconds": total,
            "mpx_per_second": rate,
        }  # fmt: skip
        write_report(args.json, record)
    return 0

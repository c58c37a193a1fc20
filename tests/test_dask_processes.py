"""``dilconv apply`` on a cluster started the way a user starts one: separate commands.

``dask scheduler`` and two ``dask worker`` processes (no nanny, so a killed worker
stays dead) on 127.0.0.1 at free ports, joined by ``dilconv apply --scheduler``,
itself a separate command. One worker is killed with SIGKILL mid-run: the run
still completes, and the output is exact and complete. Every process is started
in its own session and killed with it when the test ends, passed or failed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr
from distributed import Client

import dilconv
from tests.test_dask_cluster import METHOD, kernel_file, leftovers, write_image

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """The processes a test starts, each in its own session: all killed at the end."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for p in started:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        for p in started:
            p.wait(timeout=30)


def start(
    processes: list[subprocess.Popen[bytes]], argv: list[str], *, log: Path
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a session of its own, output to ``log``; add it to ``processes``."""
    with log.open("wb") as out:
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    processes.append(p)
    return p


def chunks_written(tmp_path: Path) -> int:
    """Chunk files in the run's partial output so far."""
    return sum(
        len(files) for p in tmp_path.glob(".out.zarr.partial-*") for _, _, files in os.walk(p / "c")
    )


def test_scheduler_and_workers_as_commands_with_a_worker_killed(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    shape, chunks = (2048, 8192), (256, 512)
    total = (shape[0] // chunks[0]) * (shape[1] // chunks[1])
    write_image(tmp_path / "in.zarr", shape, chunks, seed=12)
    k = kernel_file(tmp_path)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = [str(BIN / "dask")]
    scheduler = [*dask, "scheduler", "--host", "127.0.0.1", "--port", str(port)]
    start(processes, [*scheduler, "--no-dashboard"], log=tmp_path / "scheduler.log")
    worker = [*dask, "worker", address, "--host", "127.0.0.1", "--no-nanny", "--nthreads", "1"]
    worker += ["--memory-limit", "512MiB", "--no-dashboard"]
    workers = [
        start(processes, [*worker, "--name", f"w{i}"], log=tmp_path / f"worker{i}.log")
        for i in range(2)
    ]
    deadline = time.monotonic() + 60
    client = None
    while client is None:
        try:
            client = Client(address, timeout="5s")
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    with client:
        client.wait_for_workers(2, timeout=60)
        argv = [str(BIN / "dilconv"), "apply", str(tmp_path / "in.zarr")]
        argv += [
            str(tmp_path / "out.zarr"),
            "--kernel",
            str(k),
            "--dilation",
            "7",
            "--padding",
            "same",
        ]
        argv += ["--padding-mode", "reflect", "--method", METHOD, "--scheduler", address]
        run = start(processes, argv, log=tmp_path / "apply.log")
        deadline = time.monotonic() + 120
        while chunks_written(tmp_path) < 2 and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        victim, survivor = workers
        victim.send_signal(signal.SIGKILL)
        written_at_kill = chunks_written(tmp_path)
        status = run.wait(timeout=240)
        report = (tmp_path / "apply.log").read_text()
        # What the survivor fetched from other workers: the plan, never a halo or a chunk.
        fetched = client.run(
            lambda dask_worker: sorted(
                {str(key) for t in dask_worker.transfer_incoming_log for key in t["keys"]}
            )
        )
        assert len(client.scheduler_info()["workers"]) == 1
    assert victim.wait(timeout=10) == -signal.SIGKILL
    assert survivor.poll() is None
    assert status == 0, report
    assert f"scheduler {address}: 2 workers, 2 threads" in report
    assert 2 <= written_at_kill < total, "the worker was not killed in the middle of the run"
    assert all(key.startswith("plan-") for keys in fetched.values() for key in keys), fetched
    assert leftovers(tmp_path, "out.zarr") == ["out.zarr"]
    y = zarr.open_array(store=str(tmp_path / "out.zarr"), mode="r")
    assert y.chunks == chunks
    x = zarr.open_array(store=str(tmp_path / "in.zarr"), mode="r")[:]
    expected = dilconv.conv2d(
        x, np.load(k), dilation=7, padding="same", padding_mode="reflect", method=METHOD
    )
    np.testing.assert_array_equal(y[:], expected)

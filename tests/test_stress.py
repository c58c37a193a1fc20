"""Every native path from several threads at once, in a child process (tests/native_stress.py).

A crash (SIGSEGV, SIGABRT) fails this test with the signal's name instead of taking
pytest down. ``DILCONV_STRESS_SECONDS`` sets the run's length (20 s here; the
documented long run is 600).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests import native_stress

ROOT = Path(__file__).resolve().parent.parent


def run_child(seconds: float, threads: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DILCONV_THREADS": os.environ.get("DILCONV_THREADS", "2")}
    args = ["--seconds", str(seconds), "--threads", str(threads)]
    return subprocess.run(
        [sys.executable, "-m", "tests.native_stress", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds * 4 + 180,
        check=False,
    )


@pytest.mark.slow
def test_native_paths_survive_threads_and_cache_churn() -> None:
    seconds = float(os.environ.get("DILCONV_STRESS_SECONDS", "20"))
    proc = run_child(seconds, threads=4)
    tail = proc.stderr[-3000:]
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        pytest.fail(f"the stress child died of {name}; its stderr ends:\n{tail}")
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no summary (exit {proc.returncode}); stderr ends:\n{tail}"
    summary = json.loads(lines[-1])
    assert proc.returncode == 0, f"failures: {summary['failures']}"
    assert summary["threads"] >= 5
    for path in (*native_stress.PATHS, "large"):
        assert summary["calls"][path] > 0, f"{path} never ran: {summary}"
    # more specs than the largest cache of plans, layouts and calls (256 entries)
    assert summary["distinct_specs"] > 256, summary

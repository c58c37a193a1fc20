"""Run the test suite one test module per process, then print one closing summary.

TensorFlow, PyTorch and JAX each bring a native runtime; with all three loaded in one
long pytest process, TensorFlow's ``Conv2DBackpropFilter`` kernel has crashed the
whole process (SIGSEGV/SIGABRT) depending on which tests ran before it. One process
per module keeps a crash to the module that caused it and makes every run
independent of test order. With arguments, pytest runs once with exactly those.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)")


def targets() -> list[list[str]]:
    """Each test module alone, then the doctests of the package and the README."""
    modules = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py"))
    return [[m] for m in modules] + [["src/dilconv", "README.md"]]


def run(target: list[str], extra: list[str]) -> tuple[int, dict[str, int]]:
    """Run pytest on one target, echoing its output; return its status and counts."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra, *target]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    counts: dict[str, int] = {}
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    summary = lines[-1] if lines else ""
    for number, word in COUNT.findall(summary):
        key = "errors" if word.startswith("error") else word
        counts[key] = counts.get(key, 0) + int(number)
    return proc.returncode, counts


def main(argv: list[str]) -> int:
    if any(not a.startswith("-") for a in argv):  # explicit targets: one ordinary run
        status = subprocess.call([sys.executable, "-m", "pytest", *argv], cwd=ROOT)
        return 1 if status == 5 else status  # 5: no test collected, never a pass
    totals: dict[str, int] = {}
    broken: list[str] = []
    start = time.monotonic()
    for target in targets():
        print(f"\n=== {' '.join(target)} ===", flush=True)
        status, counts = run(target, argv)
        for key, value in counts.items():
            totals[key] = totals.get(key, 0) + value
        if status != 0:  # 5 (no tests collected) is a failure too
            broken.append(f"{' '.join(target)} (exit {status})")
    minutes = (time.monotonic() - start) / 60
    print(f"\n=== {len(targets())} pytest runs in {minutes:.1f} min ===")
    for item in broken:
        print(f"FAILED RUN: {item}")
    failed = totals.get("failed", 0) + totals.get("errors", 0)
    if broken and failed == 0:
        failed = len(broken)
    line = f"{totals.get('passed', 0)} passed, {failed} failed"
    if totals.get("skipped"):
        line += f", {totals['skipped']} skipped"
    print(line)
    return 1 if broken or failed or not totals.get("passed") else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

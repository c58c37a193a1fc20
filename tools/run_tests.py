"""Run the test suite one test module per process, then print one closing summary.

TensorFlow, PyTorch and JAX each bring a native runtime; with all three loaded in one
long pytest process, TensorFlow's ``Conv2DBackpropFilter`` kernel has crashed the
whole process (SIGSEGV/SIGABRT) depending on which tests ran before it. One process
per module keeps a crash to the module that caused it and makes every run
independent of test order. With arguments, pytest runs once with exactly those.

Then the native methods' modules (:data:`CHECKED`) run once more in checked mode
(``DILCONV_CHECK=1``: every call into machine code first checks the memory it will
touch), with fewer hypothesis examples (the fuzz target's too), a shorter stress run
and without the tests that exercise no machine code of dilconv's (parity with the
peers, the choice of BLAS products), to bound the time; ``DILCONV_CHECKED_RUN=0`` skips that pass.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)")


#: The modules of the native methods, run a second time in checked mode, less the
#: tests that run no compiled code of dilconv's: the peers' parity tests (TensorFlow
#: and PyTorch, 28 of test_transpose's 41 s) and the weight gradient's choice of BLAS
#: tap products (48 of test_grad_weight_taps's 59 s), timed on the 2-core machine.
CHECKED = (
    "tests/test_blocked.py",
    "tests/test_blocked_nchw.py",
    "tests/test_blocked_volume.py",
    "tests/test_winograd_volume.py",
    "tests/test_winograd.py",
    "tests/test_winograd_planar.py",
    "tests/test_threads.py",
    "tests/test_grad_weight_taps.py",
    "tests/test_transpose.py",
    "tests/test_native_calls.py",
    "tests/test_sequence.py",
    "tests/test_channels.py",
    "tests/test_stress.py",
    "tests/test_fuzz.py",
)
CHECKED_ARGS = ["-m", "not peers", "-k", "not tap_products_within_the_workspace"]

#: Examples of the fuzz target in the checked pass, drawn with DILCONV_FUZZ_NATIVE=1
#: (conv2d and grad_weight on the compiled methods: 400 examples made 169 checked
#: native calls, against 4 over the whole surface): 18 s wall for the module on the
#: loaded 2-core machine (9.6 s in pytest).
FUZZ_EXAMPLES = 300

#: The checked pass's environment: checked mode, the "checked" hypothesis profile
#: (derandomised, 10 examples), a 10-second stress run, and :data:`FUZZ_EXAMPLES`
#: examples of the fuzz target (which sets its own count, ignoring the profile's),
#: aimed at the compiled methods.
CHECKED_ENV = {
    "DILCONV_CHECK": "1",
    "HYPOTHESIS_PROFILE": "checked",
    "DILCONV_STRESS_SECONDS": "10",
    "DILCONV_FUZZ_EXAMPLES": str(FUZZ_EXAMPLES),
    "DILCONV_FUZZ_NATIVE": "1",
}


def targets() -> list[tuple[list[str], dict[str, str]]]:
    """Each test module alone, then the doctests of the package, the README and the
    site's pages, then the native modules in checked mode: (pytest arguments,
    environment additions)."""
    modules = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py"))
    plain: list[tuple[list[str], dict[str, str]]] = [([m], {}) for m in modules]
    plain.append((["src/dilconv", "README.md", "docs"], {}))
    if os.environ.get("DILCONV_CHECKED_RUN", "1") == "0":
        return plain
    return plain + [([*CHECKED_ARGS, m], CHECKED_ENV) for m in CHECKED if (ROOT / m).is_file()]


def run(target: list[str], extra: list[str], env: dict[str, str]) -> tuple[int, dict[str, int]]:
    """Run pytest on one target, echoing its output; return its status and counts."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra, *target]
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, check=False, env={**os.environ, **env}
    )
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
    for target, env in targets():
        label = target[-1] + " (checked mode)" if env else " ".join(target)
        print(f"\n=== {label} ===", flush=True)
        status, counts = run(target, argv, env)
        for key, value in counts.items():
            totals[key] = totals.get(key, 0) + value
        if status != 0:  # 5 (no tests collected) is a failure too
            broken.append(f"{label} (exit {status})")
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

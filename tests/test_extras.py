"""``tests.extras``: a missing peer or optional package skips a plain run and fails a
run that asked for every extra (``./dev test``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

BODY = """
from tests.extras import import_or_missing, missing

module = import_or_missing("{module}")


def test_needs_an_extra():
    missing("the frobnicator is not installed")


def test_plain():
    assert module is not None
"""


def run_pytest(
    tmp_path: Path, module: str, require: str | None
) -> subprocess.CompletedProcess[str]:
    """pytest on a file of two tests that need extras, ``DILCONV_REQUIRE_EXTRAS`` as
    given (None: unset)."""
    (tmp_path / "test_needs_extras.py").write_text(BODY.format(module=module))
    env = {k: v for k, v in os.environ.items() if k != "DILCONV_REQUIRE_EXTRAS"}
    env["PYTHONPATH"] = str(ROOT)
    if require is not None:
        env["DILCONV_REQUIRE_EXTRAS"] = require
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-c", os.devnull,
         "--rootdir", str(tmp_path), str(tmp_path)],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("require", [None, "0"])
def test_a_plain_run_skips(tmp_path: Path, require: str | None) -> None:
    done = run_pytest(tmp_path, "json", require)
    assert done.returncode == 0, done.stdout
    assert "1 passed, 1 skipped" in done.stdout
    assert "the frobnicator is not installed" in done.stdout


def test_a_run_that_requires_every_extra_fails(tmp_path: Path) -> None:
    done = run_pytest(tmp_path, "json", "1")
    assert done.returncode == 1, done.stdout
    assert "1 failed, 1 passed" in done.stdout
    assert "the frobnicator is not installed (DILCONV_REQUIRE_EXTRAS=1" in done.stdout


def test_a_missing_module_skips_the_module_or_fails_its_collection(tmp_path: Path) -> None:
    skipped = run_pytest(tmp_path, "dilconv_no_such_module", None)
    assert skipped.returncode == 5, skipped.stdout  # the whole module skipped: no test ran
    assert "1 skipped" in skipped.stdout
    assert "dilconv_no_such_module is not installed" in skipped.stdout
    failed = run_pytest(tmp_path, "dilconv_no_such_module", "1")
    assert failed.returncode == 2, failed.stdout  # an error while collecting
    assert "dilconv_no_such_module is not installed" in failed.stdout


def test_dev_test_requires_every_extra() -> None:
    """``./dev test`` installs every extra and Chromium, so it asks for them all."""
    dev = (ROOT / "dev").read_text()
    assert 'export DILCONV_REQUIRE_EXTRAS="${DILCONV_REQUIRE_EXTRAS:-1}"' in dev

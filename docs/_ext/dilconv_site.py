"""Sphinx hooks of dilconv's site: the figures and the Benchmarks page, made at build time.

Before reading the sources, the extension writes the tutorial's figures (with
``dilconv.viz.write_figures``, the code behind ``dilconv figures``) and the benchmark
tables and plots (from ``benchmarks/results.json``) into ``docs/_generated/``, which
the pages include. Figures already there and newer than dilconv's sources are kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import bench_page

DOCS = Path(__file__).resolve().parent.parent
ROOT = DOCS.parent
GENERATED = DOCS / "_generated"
RESULTS = ROOT / "benchmarks" / "results.json"


def _newest_source() -> float:
    return max(p.stat().st_mtime for p in (ROOT / "src" / "dilconv").rglob("*.py"))


def write_figures() -> list[Path]:
    """The figures of ``dilconv figures`` as PNG, redrawn when dilconv's code is newer."""
    from dilconv.viz import FIGURES
    from dilconv.viz import write_figures as write

    out = GENERATED / "figures"
    wanted = [out / f"{name}.png" for name in FIGURES]
    newest = _newest_source()
    if all(p.exists() and p.stat().st_mtime >= newest for p in wanted):
        return wanted
    return write(out, formats=["png"])


def write_benchmarks() -> Path:
    """``_generated/benchmarks.md``: the tables and plots of the recorded bench run."""
    results = json.loads(RESULTS.read_text())
    body = bench_page.render(results, GENERATED / "bench", "/_generated/bench")
    page = GENERATED / "benchmarks.md"
    page.write_text(body + "\n")
    return page


def _generate(app: Any) -> None:
    GENERATED.mkdir(exist_ok=True)
    write_figures()
    write_benchmarks()


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", _generate)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}

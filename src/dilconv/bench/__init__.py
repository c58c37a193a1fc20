"""The benchmark harness behind ``dilconv bench`` and ``benchmarks/``.

Named cases (:func:`dilconv.bench.cases.all_cases`) are timed side by side in one
process against the real peers (PyTorch in both memory formats, TensorFlow, SciPy),
alternating, warm-up first, median of at least 7 runs
(:func:`dilconv.bench.runner.run`), and reported as a table
(:func:`dilconv.bench.report.render`) or as JSON.
"""

from dilconv.bench.report import render
from dilconv.bench.runner import run

__all__ = ["render", "run"]

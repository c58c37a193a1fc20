"""Figures of dilated convolution, drawn with matplotlib from numbers dilconv computes.

``write_figures(out_dir)`` writes every figure as PNG and SVG; the files are the
same byte for byte on every run (fixed SVG hash salt, no dates in the metadata).

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> with tempfile.TemporaryDirectory() as tmp:
...     [p.name for p in write_figures(tmp, only=["kernel_dilation"])]
['kernel_dilation.png', 'kernel_dilation.svg']
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dilconv.viz._draw import save
from dilconv.viz.figures import (
    FIGURES,
    gradient_transposed,
    gridding,
    kernel_dilation,
    receptive_growth,
    stride_vs_dilation,
    tutorial_results,
)

FORMATS = ("png", "svg")


def write_figures(
    out_dir: str | Path, *, formats: Sequence[str] = FORMATS, only: Sequence[str] | None = None
) -> list[Path]:
    """Write the figures named in ``only`` (default: all of :data:`FIGURES`) into ``out_dir``.

    Returns the paths written, in order. Unknown names or formats raise ValueError.
    """
    names = list(FIGURES) if only is None else list(only)
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        raise ValueError(f"only names unknown figure {unknown[0]!r}; known: {', '.join(FIGURES)}")
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"formats must be among {list(FORMATS)}, got {list(formats)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name in names:
        fig = FIGURES[name]()
        written += save(fig, out, name, formats)
    return written


__all__ = [
    "FIGURES",
    "FORMATS",
    "gradient_transposed",
    "gridding",
    "kernel_dilation",
    "receptive_growth",
    "stride_vs_dilation",
    "tutorial_results",
    "write_figures",
]

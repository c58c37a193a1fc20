"""Drawing helpers shared by the figures: annotated grids, heat maps, reproducible saving.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot, so no
global state and no GUI backend) and saved through the Agg canvas.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

#: rcParams that make every saved file identical from run to run.
REPRODUCIBLE: dict[Any, Any] = {
    "svg.hashsalt": "dilconv",
    "svg.fonttype": "path",
    "font.family": "DejaVu Sans",
    "figure.dpi": 100,
    "savefig.dpi": 110,
    "axes.titlesize": 10.5,
    "axes.titleweight": "bold",
    "font.size": 9,
}
#: File metadata: no dates, no version strings that change between runs.
METADATA = {
    "png": {"Software": None},
    "svg": {"Date": None, "Creator": None},
}
PAD_GREY = "#e4e7ec"
GAP_GREY = "#f5f5f5"
INK = "#1d2330"


def tap_colours(n: int) -> list[tuple[float, float, float, float]]:
    """``n`` distinct colours, one per kernel tap (the explorer uses the same idea)."""
    cmap = mpl.colormaps["tab20" if n > 10 else "tab10"]
    return [cmap(i % cmap.N) for i in range(n)]


def new_figure(width: float, height: float) -> Figure:
    """A figure that needs no GUI backend."""
    with mpl.rc_context(REPRODUCIBLE):
        return Figure(figsize=(width, height), layout="constrained")


def grid(
    ax: Axes,
    values: np.ndarray,
    *,
    colours: dict[tuple[int, int], Any] | None = None,
    background: Any = "white",
    text: bool = True,
    fmt: str = "{:g}",
    fontsize: float = 8.0,
    muted: Iterable[tuple[int, int]] = (),
) -> None:
    """Draw ``values`` as a table of cells, each written out, with per-cell colours."""
    values = np.asarray(values)
    rows, cols = values.shape
    colours = colours or {}
    muted_set = set(muted)
    for r in range(rows):
        for c in range(cols):
            face = colours.get((r, c), background)
            ax.add_patch(
                mpl.patches.Rectangle((c, r), 1, 1, facecolor=face, edgecolor="#b9bfca", lw=0.6)
            )
            if text:
                ink = "#9aa1ad" if (r, c) in muted_set else INK
                ax.text(c + 0.5, r + 0.5, fmt.format(values[r, c]), ha="center", va="center",
                        fontsize=fontsize, color=ink)  # fmt: skip
    ax.set_xlim(0, cols)
    ax.set_ylim(rows, 0)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def heat(
    ax: Axes, counts: np.ndarray, *, size: int | None = None, vmax: float | None = None
) -> Any:
    """A heat map of path counts; zeros (gridding holes) pale red.

    With ``size``, the map is centred on a ``size`` x ``size`` canvas at the same
    scale, so maps of different fields compare.
    """
    counts = np.asarray(counts, dtype=float)
    n = counts.shape[0]
    size = size or n
    off = (size - n) / 2
    base = mpl.colormaps["Blues"]
    cmap = ListedColormap(base(np.linspace(0.15, 1.0, 256))).with_extremes(bad="#f1c9bf")
    image = ax.imshow(
        np.ma.masked_equal(counts, 0), cmap=cmap, vmin=1, vmax=vmax or max(counts.max(), 1),
        interpolation="nearest", extent=(off, off + n, off + n, off),
    )  # fmt: skip
    ax.add_patch(mpl.patches.Rectangle((off, off), n, n, fill=False, edgecolor=INK, lw=0.8))
    ax.set_xlim(0, size)
    ax.set_ylim(size, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    return image


def save(fig: Figure, out_dir: Path, name: str, formats: Sequence[str]) -> list[Path]:
    """Write ``fig`` as ``out_dir/name.<fmt>`` for each format, reproducibly."""
    written = []
    with mpl.rc_context(REPRODUCIBLE):
        for fmt in formats:
            path = out_dir / f"{name}.{fmt}"
            fig.savefig(path, format=fmt, metadata=METADATA[fmt], facecolor="white")
            written.append(path)
    return written

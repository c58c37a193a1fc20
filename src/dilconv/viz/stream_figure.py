"""The causal stack figure (WaveNet's Figure 3): which inputs one output reads.

Positions and edges come from :func:`dilconv.stream.causal_dependencies` and
:func:`dilconv.stream.causal_taps`; nothing here computes an index.
"""

from __future__ import annotations

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from dilconv.stream import causal_dependencies, causal_taps
from dilconv.viz._draw import INK, new_figure

HIGHLIGHT = "#d1495b"
FAINT = "#c9ced6"


def _panel(ax: Axes, dilations: tuple[int, ...], steps: int, kernel: int = 2) -> int:
    """One stack drawn as rows of dots; returns the receptive field it highlights."""
    layers = [(kernel, 1, d) for d in dilations]
    t = steps - 1
    needed = causal_dependencies(t, layers)
    rows = len(layers) + 1
    for level in range(rows):
        for x in range(steps):
            on = x in needed[level]
            ax.plot(x, level, "o", ms=6 if on else 4, color=HIGHLIGHT if on else FAINT, zorder=3)
    for level, (k, s, d) in enumerate(layers, start=1):
        for o in range(steps):
            on = o in needed[level]
            for i in causal_taps(o, kernel_size=k, stride=s, dilation=d):
                ax.plot([i, o], [level - 1, level], lw=1.6 if on else 0.5,
                        color=HIGHLIGHT if on else FAINT, zorder=2 if on else 1)  # fmt: skip
    labels = ["input"] + [f"d={d}" for d in dilations[:-1]] + [f"output d={dilations[-1]}"]
    ax.set_yticks(range(rows), labels)
    ax.set_xticks(range(0, steps, 4))
    ax.set_xlabel("time step")
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.tick_params(axis="y", length=0, colors=INK)
    return len(needed[0])


def causal_stack(dilated: tuple[int, ...] = (1, 2, 4, 8), steps: int = 20) -> Figure:
    """Causal layers of kernel 2 stacked, dilated and not: the inputs one output reads."""
    fig = new_figure(10.5, 4.2)
    axes = fig.subplots(1, 2)
    for ax, ds in zip(axes, (dilated, (1,) * len(dilated)), strict=True):
        field = _panel(ax, ds, steps)
        ax.set_title(f"dilations {', '.join(map(str, ds))}: the last output reads {field} inputs")
    fig.suptitle("Causal stacks (WaveNet, Figure 3): an output reads only the past; dilation "
                 "doubles the reach per layer")  # fmt: skip
    return fig

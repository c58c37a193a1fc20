"""The figures of the tutorial, every number computed by dilconv.

Each function returns a :class:`matplotlib.figure.Figure`; :func:`write_figures`
saves them all. Nothing here does convolution arithmetic of its own: kernels come
from :func:`dilconv.dilate_kernel`, fields from :func:`dilconv.receptive_field`
and :func:`dilconv.coverage`, read positions from the shape functions, values from
:func:`dilconv.conv2d`, :func:`dilconv.conv2d_grad_input` and
:func:`dilconv.conv2d_transpose`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure

from dilconv import _shapes
from dilconv._kernel import dilate_kernel
from dilconv._spec import make_spec
from dilconv.receptive import coverage, receptive_field
from dilconv.viz._draw import GAP_GREY, REPRODUCIBLE, grid, heat, new_figure, tap_colours

#: The 3x3 kernel the kernel figure dilates: its taps are numbered so they can be followed.
KERNEL = np.arange(1, 10).reshape(3, 3)


def styled(build: Callable[..., Figure]) -> Callable[..., Figure]:
    """Build the figure under the reproducible style."""

    @functools.wraps(build)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        with mpl.rc_context(REPRODUCIBLE):
            return build(*args, **kwargs)

    return wrapper


def _tap_cells(kernel: np.ndarray, dilation: int) -> dict[tuple[int, int], Any]:
    """Colour of each tap's cell in the dilated kernel (gaps get none)."""
    kh, kw = kernel.shape
    numbered = dilate_kernel(np.arange(1, kh * kw + 1).reshape(kh, kw), dilation)
    colours = tap_colours(kh * kw)
    return {
        (int(r), int(c)): (*colours[numbered[r, c] - 1][:3], 0.55)
        for r, c in zip(*np.nonzero(numbered), strict=True)
    }


@styled
def kernel_dilation(dilations: tuple[int, ...] = (1, 2, 3, 4)) -> Figure:
    """The 3x3 kernel dilated by each factor, zeros written out."""
    sizes = [dilate_kernel(KERNEL, d).shape[0] for d in dilations]
    fig = new_figure(2.3 * len(dilations) + 1, 3.4)
    axes = fig.subplots(1, len(dilations), width_ratios=sizes)
    for ax, d in zip(np.atleast_1d(axes), dilations, strict=True):
        dk = dilate_kernel(KERNEL, d)
        grid(ax, dk, colours=_tap_cells(KERNEL, d), background=GAP_GREY,
             muted=list(zip(*np.nonzero(dk == 0), strict=True)), fontsize=9)  # fmt: skip
        ax.set_title(f"dilation {d}: {dk.shape[0]}x{dk.shape[1]}")
        ax.set_xlabel(f"{d - 1} zero{'s' if d != 2 else ''} between taps", fontsize=8)
    fig.suptitle("A 3x3 kernel dilated: d - 1 zeros between neighbouring taps, extent d(k-1)+1")
    return fig


@styled
def receptive_growth(dilations: tuple[int, ...] = (1, 2, 4, 8)) -> Figure:
    """Receptive field after each layer of a 3x3 stack, with its coverage heat map."""
    layers = [(3, 1, d) for d in dilations]
    fields = receptive_field(layers)
    size = fields[-1].size
    fig = new_figure(2.6 * len(layers) + 0.8, 3.3)
    axes = fig.subplots(1, len(layers))
    vmax = int(coverage(layers).max())  # one colour scale for every panel
    images = []
    for n, ax in enumerate(np.atleast_1d(axes)):
        cover = coverage(layers[: n + 1])
        images.append(heat(ax, cover, size=size, vmax=vmax))
        f = fields[n].size
        ax.set_title(f"+ layer d={dilations[n]}: {f}x{f}")
        most = int(cover.max())
        ax.set_xlabel(f"{most} path{'s' if most != 1 else ''} at most", fontsize=8)
    fig.colorbar(images[-1], ax=axes, shrink=0.8, label="paths from one output pixel")
    grown = ", ".join(str(f.size) for f in fields)
    fig.suptitle(f"3x3 layers with dilations {', '.join(map(str, dilations))}: "
                 f"receptive field {grown} (exponential), parameters linear")  # fmt: skip
    return fig


@styled
def gridding(equal: tuple[int, ...] = (2, 2, 2), mixed: tuple[int, ...] = (1, 2, 5)) -> Figure:
    """Coverage of a stack of equal dilations (holes) against a mixed one (none)."""
    fig = new_figure(9.6, 4.3)
    axes = fig.subplots(1, 2)
    stacks = [[(3, 1, d) for d in equal], [(3, 1, d) for d in mixed]]
    size = max(receptive_field(s)[-1].size for s in stacks)
    for ax, stack, ds in zip(axes, stacks, (equal, mixed), strict=True):
        cover = coverage(stack)
        holes = int((cover == 0).sum())
        image = heat(ax, cover, size=size)
        fig.colorbar(image, ax=ax, shrink=0.75, label="paths (pale red: never read)")
        f = cover.shape[0]
        verdict = f"{holes} of {f * f} pixels never read" if holes else "every pixel read"
        ax.set_title(f"dilations {ds}: field {f}x{f}\n{verdict}")
    fig.suptitle("Gridding: equal dilations leave holes in the receptive field")
    return fig


def _reads(in_size: int, k: int, stride: int, dilation: int, out_pixel: int) -> list[int]:
    """Input pixels one output pixel reads (valid padding), from dilconv's shape arithmetic."""
    spec = make_spec((in_size, in_size), (k, k), stride=stride, dilation=dilation)
    return _shapes.read_positions(spec.out_hw[0], k, stride, dilation)[out_pixel]


@styled
def stride_vs_dilation(in_size: int = 11) -> Figure:
    """Which input pixels two neighbouring output pixels sample, with stride and with dilation."""
    from dilconv import conv2d_grad_input

    cases = [("stride 2, dilation 1", 2, 1), ("stride 1, dilation 2", 1, 2)]
    fig = new_figure(8.8, 8.2)
    axes = fig.subplots(2, 2)
    picks = [((0, 0), "#4c78a8"), ((1, 1), "#f58518")]
    for col, (label, s, d) in enumerate(cases):
        spec = make_spec((in_size, in_size), (3, 3), stride=s, dilation=d)
        colours: dict[tuple[int, int], Any] = {}
        for (oi, oj), colour in picks:
            for r in _reads(in_size, 3, s, d, oi):
                for c in _reads(in_size, 3, s, d, oj):
                    colours[(r, c)] = "#c9a0dc" if (r, c) in colours else colour
        ax = axes[0, col]
        grid(ax, np.zeros((in_size, in_size)), colours=colours, text=False)
        ho, wo = spec.out_hw
        ax.set_title(f"{label}: output {ho}x{wo}\nblue: output (0, 0), orange: (1, 1), "
                     "purple: both")  # fmt: skip
        # how many output pixels read each input pixel: the transposed convolution of ones
        counts = conv2d_grad_input(np.ones((ho, wo)), np.ones((3, 3)), (in_size, in_size),
                                   stride=s, dilation=d)  # fmt: skip
        ax = axes[1, col]
        grid(ax, counts, colours={}, fmt="{:.0f}", fontsize=7.5,
             muted=list(zip(*np.nonzero(counts == 0), strict=True)))  # fmt: skip
        heat_colours = mpl.colormaps["Greens"](counts / max(counts.max(), 1) * 0.8)
        for r in range(in_size):
            for c in range(in_size):
                ax.patches[r * in_size + c].set_facecolor(heat_colours[r, c])
        ax.set_title(f"outputs reading each pixel\n(conv2d_grad_input of ones, {label})")
    fig.suptitle(
        f"Stride skips outputs; dilation spreads taps ({in_size}x{in_size} input, 3x3 kernel)"
    )
    return fig


@styled
def tutorial_results(dilations: tuple[int, ...] = (1, 2, 3, 4), seed: int = 0) -> Figure:
    """The tutorial's experiment: the matrix, the kernel, and the result at each dilation."""
    from dilconv.tutorial import default_size, inputs, run_experiment

    x, kernel = inputs(default_size(dilations), seed)
    found = run_experiment(x, kernel, dilations)
    widths = [x.shape[1], kernel.shape[1]] + [
        next(iter(r.results.values())).shape[1] for r in found
    ]
    fig = new_figure(1.0 + 0.34 * sum(widths), 4.2)
    axes = fig.subplots(1, len(widths), width_ratios=widths)
    grid(axes[0], x, fontsize=7)
    axes[0].set_title(f"matrix {x.shape[0]}x{x.shape[1]}")
    grid(axes[1], kernel, fontsize=8, colours={(r, c): (*col[:3], 0.5) for (r, c), col in zip(
        np.ndindex(3, 3), tap_colours(9), strict=True)})  # fmt: skip
    axes[1].set_title("kernel")
    for ax, r in zip(axes[2:], found, strict=True):
        value = next(iter(r.results.values()))
        grid(ax, value, fontsize=7 if value.shape[0] > 4 else 8.5,
             colours={}, background="#eef3fb")  # fmt: skip
        ax.set_title(f"d={r.dilation}: {value.shape[0]}x{value.shape[1]}")
        ax.set_xlabel(f"routes differ by {r.max_difference:g}", fontsize=7.5)
    fig.suptitle(
        "The tutorial: convolve2d(x, dilate_kernel(k, d)) against "
        "dilconv.conv2d(x, k, dilation=d, flip=True), valid padding"
    )
    return fig


@styled
def gradient_transposed(
    in_size: int = 9, dilation: int = 2, pixel: tuple[int, int] = (2, 2)
) -> Figure:
    """One output-gradient pixel, sent back: the input pixels it reaches are the dilated kernel."""
    import dilconv

    w = KERNEL
    spec = make_spec((in_size, in_size), w.shape, dilation=dilation)
    g = np.zeros(spec.out_hw, dtype=np.int64)
    g[pixel] = 1
    grad = dilconv.conv2d_grad_input(g, w, (in_size, in_size), dilation=dilation)
    transposed = dilconv.conv2d_transpose(g[None, None], w[None, None], dilation=dilation)[0, 0]
    fig = new_figure(10.5, 4.2)
    axes = fig.subplots(1, 3, width_ratios=[g.shape[1], in_size, in_size])
    grid(axes[0], g, colours={pixel: "#ffd166"}, fontsize=8,
         muted=list(zip(*np.nonzero(g == 0), strict=True)))  # fmt: skip
    axes[0].set_title(f"output gradient {g.shape[0]}x{g.shape[1]}\none pixel set")
    reached = {rc: "#9ad1a4" for rc in zip(*np.nonzero(grad), strict=True)}
    for ax, values, title in (
        (axes[1], grad, "conv2d_grad_input"),
        (axes[2], transposed, "conv2d_transpose"),
    ):
        grid(ax, values, colours=reached, fontsize=8,
             muted=list(zip(*np.nonzero(values == 0), strict=True)))  # fmt: skip
        ax.set_title(f"{title} {values.shape[0]}x{values.shape[1]}\n"
                     f"{int(np.count_nonzero(values))} input pixels reached")  # fmt: skip
    diff = float(np.abs(grad - transposed).max())
    fig.suptitle(f"The gradient of a dilated convolution (d={dilation}) is a transposed "
                 f"convolution: max difference {diff:g}")  # fmt: skip
    return fig


#: File stem -> figure builder, in the order ``dilconv figures`` writes them.
FIGURES: dict[str, Callable[[], Figure]] = {
    "kernel_dilation": kernel_dilation,
    "receptive_field_growth": receptive_growth,
    "gridding": gridding,
    "stride_vs_dilation": stride_vs_dilation,
    "tutorial_results": tutorial_results,
    "gradient_transposed": gradient_transposed,
}

from dilconv.viz.stream_figure import causal_stack  # noqa: E402 (it needs _draw, not this)

FIGURES["causal_stack"] = styled(causal_stack)

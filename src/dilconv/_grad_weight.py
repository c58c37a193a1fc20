"""The weight gradient as one long matrix product per kernel tap, with nothing gathered.

``dw[i, j] = sum over pixels of x[pixel + offset(i, j)]^T g[pixel]``: the correlation
of the input with the output gradient, one ``(C, O)`` block per kernel tap. With
stride 1 each tap's input pixels can be laid out contiguously against the output
gradient's, in one of two ways, so that each tap is one matrix product whose inner
size is every pixel it reads:

* **Column windows.** The output columns where kernel column ``j`` reads real input
  are a range ``[c0, c1)``; its input columns are copied once into a contiguous
  window (and the gradient's columns ``[c0, c1)`` into another, unless they are all
  of them). In the windows every kernel row reads whole rows, a contiguous block.
  No padding is multiplied, but each partial kernel column costs two copies.
* **Pitched slabs.** The input rows a band of output rows reads are copied once
  into a zero-padded slab whose rows all have the padded width (the *pitch*),
  stored flat ``(rows * pitch, C)``, and the gradient into a slab of the same pitch
  whose extra columns are zero. Output pixel ``(r, c)`` is flat row
  ``r * pitch + c`` of the gradient slab and reads flat row
  ``r * pitch + c + i * dh * pitch + j * dw`` of the input slab through tap
  ``(i, j)``: a constant offset. One copy of each array, but the products also
  run over the pitch's padding columns (multiplied by the zero columns).

:func:`grad_weight` takes whichever route of :data:`ROUTES` the selector of
:mod:`dilconv._select` ranks fastest (each route declares its refusal, workspace
and estimate, as the forward algorithms do): for 3x3 kernels at stride 1 with
many channels, Winograd's F(3x3, 2x2) (:mod:`dilconv._grad_weight_winograd`: 16
multiply-adds a tile of 4 outputs instead of 36; ``context``, ``wave``,
``aspp``); windows when the padding is a large part of the width; else the
register-blocked tiles of :mod:`dilconv._grad_weight_tiles`, which copy nothing
and run near the machine's peak where BLAS runs these tall, thin products far
below it, or the slabs where the tiles hold too few sums to keep a core busy
(one channel). Windows and slabs share the taps among threads (BLAS on one
thread each; where whole taps would leave a thread idle, as 3 taps on 2 threads,
the windows give each thread a slice of every tap's pixels and add the partial
sums at the end; one-row images, 1-D signals, read their windows in place), and
apply to stride 1 and one group; the tiles to any stride and group count. All
need float32/float64; :mod:`dilconv.grad` otherwise runs the forward engine on
the swapped problem.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping

import numpy as np

from dilconv import _grad_weight_tiles, _grad_weight_winograd, _select
from dilconv._config import get_workspace_limit
from dilconv._cost import COST, gemm_seconds
from dilconv._methods import guarded
from dilconv._native import pool
from dilconv._padding import zero_padded_rows
from dilconv._spec import ConvSpec

Tap = tuple[int, int, int, int]  # kernel row, kernel column, first and stop output row


#: Target bytes of one band's two pitched slabs (larger bands only add memory).
BAND_BYTES = 64 * 2**20


def applies(spec: ConvSpec) -> bool:
    """float32/float64, something to compute, and a way within the workspace."""
    return (
        spec.dtype in (np.dtype(np.float32), np.dtype(np.float64))
        and min(*spec.out_hw, spec.batch) > 0
        and bool(routes(spec))
    )


def routes(spec: ConvSpec) -> list[str]:
    """The routes of :data:`ROUTES` that accept ``spec`` within the workspace limit."""
    return _select.eligible(ROUTES, spec)


def estimate_seconds(way: str, spec: ConvSpec) -> float:
    """Modelled time of route ``way`` ("windows", "slabs" or "tiles") on ``spec``."""
    return float(ROUTES[way].estimate_seconds(spec, COST))


def _products_refusal(spec: ConvSpec) -> str | None:
    """Windows and slabs: one long product per tap needs stride 1 and one group."""
    if spec.stride != (1, 1) or spec.groups != 1:
        return f"needs stride 1 and one group, got stride {spec.stride}, groups {spec.groups}"
    return None


def _products_seconds(
    spec: ConvSpec, costs: Mapping[str, float], pixels: int, copied: int
) -> float:
    """Products of ``pixels`` (summed over the taps) at the rate of a ``(C, pixels) @
    (pixels, O)`` product, plus copies. The products are tall and thin: with 21
    channels on each side they ran at a sixth of the large-product rate (2026-12-06,
    Xeon with AMX: slabs 18.5 ms, tiles 5.2)."""
    c, o = spec.in_channels, spec.out_channels
    products = gemm_seconds(spec, c, pixels, o, costs, shared=True) - costs["tap"]
    return products + copied / costs["copy"]


def slabs_seconds(spec: ConvSpec, costs: Mapping[str, float]) -> float:
    """Modelled time of the pitched slabs: products over the pitch, one copy of each array."""
    n, ho, c, o = spec.batch, spec.out_hw[0], spec.in_channels, spec.out_channels
    pitch, halo = spec.padded_hw[1], spec.effective_kernel_hw[0] - 1
    pixels = n * ho * pitch * spec.kernel_hw[0] * spec.kernel_hw[1]
    copied = n * ((ho + halo) * pitch * c + ho * pitch * o) * spec.dtype.itemsize
    return _products_seconds(spec, costs, pixels, copied)


def windows_seconds(spec: ConvSpec, costs: Mapping[str, float]) -> float:
    """Modelled time of the column windows: products over real input only, the windows' copies."""
    rows = [r1 - r0 for r0, r1 in row_ranges(spec).values()]
    cols = [c1 - c0 for c0, c1 in column_ranges(spec).values()]
    pixels = spec.batch * sum(rows) * sum(cols)
    return _products_seconds(spec, costs, pixels, window_bytes(spec))


def row_ranges(spec: ConvSpec) -> dict[int, tuple[int, int]]:
    """Output rows ``[r0, r1)`` where kernel row ``i`` reads real input (non-empty)."""
    return {i: r for i, r in enumerate(spec.tap_output_ranges(0)) if r[0] < r[1]}


def grad_weight(x: np.ndarray, g: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """``dw`` ``(kh, kw, C, O)`` for NHWC ``x`` and ``g`` of a lowered (zero-padded) spec.

    A non-finite Winograd result is computed again by the best route that sums as
    the direct sum does (its transforms may turn an Inf into a NaN).
    """
    name = _select.best(ROUTES, spec, "weight-gradient route")
    dw = ROUTES[name].run(x, g, spec)
    if name == "winograd" and not np.isfinite(dw).all():
        others = _select.eligible(ROUTES, spec, frozenset({"winograd"}))
        if others:  # else (a tight workspace limit) Winograd's answer stands
            name = min(others, key=lambda other: ROUTES[other].estimate_seconds(spec, COST))
            dw = ROUTES[name].run(x, g, spec)
    return dw


def column_ranges(spec: ConvSpec) -> dict[int, tuple[int, int]]:
    """Output columns ``[c0, c1)`` where kernel column ``j`` reads real input (non-empty)."""
    return {j: r for j, r in enumerate(spec.tap_output_ranges(1)) if r[0] < r[1]}


def window_bytes(spec: ConvSpec) -> int:
    """Every kernel column's input and gradient windows (the full-width ones are views)."""
    n, h, ho = spec.batch, spec.in_hw[0], spec.out_hw[0]
    if h == 1:  # one row: each image's window is a contiguous run of it, read in place
        return 0
    items = 0
    for c0, c1 in column_ranges(spec).values():
        if c1 - c0 != spec.in_hw[1]:
            items += n * h * (c1 - c0) * spec.in_channels
        if c1 - c0 != spec.out_hw[1]:
            items += n * ho * (c1 - c0) * spec.out_channels
    return items * spec.dtype.itemsize


def by_column_windows(x: np.ndarray, g: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """``dw`` by column windows (see the module docstring)."""
    w, (dh, dw), (top, left) = spec.in_hw[1], spec.dilation, (spec.pad[0][0], spec.pad[1][0])
    shape = (*spec.kernel_hw, spec.in_channels, spec.out_channels)
    windows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for j, (c0, c1) in column_ranges(spec).items():
        first = c0 + j * dw - left  # the input column output column c0 reads
        xs = x if (first, c1 - c0) == (0, w) else x[:, :, first : first + c1 - c0]
        gs = g if c1 - c0 == g.shape[2] else g[:, :, c0:c1]
        if spec.in_hw[0] > 1:  # one row: each image's window is already contiguous
            xs, gs = np.ascontiguousarray(xs), np.ascontiguousarray(gs)
        windows[j] = (xs, gs)
    taps = [(i, j, r0, r1) for i, (r0, r1) in row_ranges(spec).items() for j in windows]
    threads = max(1, pool.num_threads())
    parts = split_count(len(taps), threads)
    if parts == 1:  # whole taps per thread
        out = np.zeros(shape, dtype=spec.dtype)
        shares = [(out, 0, 1, taps[k::threads]) for k in range(min(threads, len(taps)))]
    else:  # every thread a slice of every tap, into its own partial sum
        partials = np.zeros((parts, *shape), dtype=spec.dtype)
        shares = [(partials[k], k, parts, taps) for k in range(parts)]
    work = functools.partial(_add_tap_products, windows, dh, top)
    with pool.single_threaded_blas():
        pool.parallel_map(work, shares)
    return out if parts == 1 else partials.sum(axis=0)


def split_count(taps: int, threads: int) -> int:
    """Slices of each tap's product: 1 (each thread takes whole taps) unless whole
    taps would leave threads idle over a fifth of the time (3 taps on 2 threads:
    a third), then one slice per thread, each summed apart and added at the end."""
    if threads <= 1 or taps == 0:
        return 1
    rounds = -(-taps // threads)
    return threads if rounds * threads > 1.2 * taps else 1


def split_bytes(spec: ConvSpec) -> int:
    """The partial sums of :func:`by_column_windows` when it slices the taps."""
    taps = len(row_ranges(spec)) * len(column_ranges(spec))
    parts = split_count(taps, pool.num_threads())
    if parts == 1:
        return 0
    kh, kw = spec.kernel_hw
    return parts * kh * kw * spec.in_channels * spec.out_channels * spec.dtype.itemsize


def band_rows(spec: ConvSpec) -> int:
    """Output rows per band: the slabs under the target and the workspace limit."""
    pitch, item = spec.padded_hw[1], spec.dtype.itemsize
    halo = spec.effective_kernel_hw[0] - 1
    per_row = pitch * (spec.in_channels + spec.out_channels) * item
    budget = min(BAND_BYTES, get_workspace_limit()) - halo * pitch * spec.in_channels * item
    return int(min(spec.out_hw[0], max(1, budget // per_row)))


def slab_bytes(spec: ConvSpec) -> int:
    """One band's input slab (with its halo) and gradient slab."""
    rows, pitch = band_rows(spec), spec.padded_hw[1]
    halo = spec.effective_kernel_hw[0] - 1
    items = (rows + halo) * pitch * spec.in_channels + rows * pitch * spec.out_channels
    return items * spec.dtype.itemsize


def by_pitched_slabs(x: np.ndarray, g: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """``dw`` by pitched slabs in bands of output rows (see the module docstring)."""
    (kh, kw), (dh, dw) = spec.kernel_hw, spec.dilation
    (ho, wo), pitch = spec.out_hw, spec.padded_hw[1]
    c, o = spec.in_channels, spec.out_channels
    halo = spec.effective_kernel_hw[0] - 1
    taps = [(i, j) for i in range(kh) for j in range(kw)]
    starts = {(i, j): i * dh * pitch + j * dw for i, j in taps}  # each tap's offset
    out = np.zeros((kh, kw, c, o), dtype=spec.dtype)
    step = band_rows(spec)
    grad_slab = np.zeros((step, pitch, o), dtype=spec.dtype)
    threads = min(pool.num_threads(), len(taps))
    shares = [taps[k::threads] for k in range(threads)]
    for b in range(spec.batch):
        for r0 in range(0, ho, step):
            r1 = min(ho, r0 + step)
            slab = zero_padded_rows(x[b : b + 1], spec.pad, r0, r1 + halo)
            flat = slab.reshape(-1, c)
            grad_slab[: r1 - r0, :wo] = g[b, r0:r1]
            length = (r1 - r0 - 1) * pitch + wo  # up to the band's last real pixel
            grads = grad_slab.reshape(-1, o)[:length]

            with pool.single_threaded_blas():
                pool.parallel_map(
                    functools.partial(_add_slab_products, out, flat, grads, starts), shares
                )
    return out


def _add_tap_products(
    windows: dict[int, tuple[np.ndarray, np.ndarray]],
    dh: int,
    top: int,
    share: tuple[np.ndarray, int, int, list[Tap]],
) -> None:
    """``out[i, j] += (input window rows of tap (i, j)).T @ (its gradient rows)``
    over slice ``part`` of ``parts`` of each image's pixels, for the taps of ``share``
    (``(out, part, parts, taps)``).

    Output row ``r`` reads input row ``r + i * dh - top`` through kernel row ``i``.
    """
    out, part, parts, taps = share
    for i, j, r0, r1 in taps:
        xs, gs = windows[j]
        c, o = xs.shape[3], gs.shape[3]
        start = r0 + i * dh - top
        for b in range(xs.shape[0]):
            a = xs[b, start : start + r1 - r0].reshape(-1, c)
            e = gs[b, r0:r1].reshape(-1, o)
            p0, p1 = len(a) * part // parts, len(a) * (part + 1) // parts
            out[i, j] += a[p0:p1].T @ e[p0:p1]


def _add_slab_products(
    out: np.ndarray,
    flat: np.ndarray,
    grads: np.ndarray,
    starts: dict[tuple[int, int], int],
    share: list[tuple[int, int]],
) -> None:
    """``out[i, j] += flat[block of tap (i, j)].T @ grads`` for the taps in ``share``."""
    length = grads.shape[0]
    for i, j in share:
        out[i, j] += flat[starts[i, j] : starts[i, j] + length].T @ grads


@dataclasses.dataclass(frozen=True)
class Route:
    """A registered way of computing the weight gradient (see :mod:`dilconv._select`)."""

    name: str
    run: Callable[[np.ndarray, np.ndarray, ConvSpec], np.ndarray]
    workspace_bytes: Callable[[ConvSpec], int]
    refusal: Callable[[ConvSpec], str | None]
    estimate_seconds: Callable[[ConvSpec, Mapping[str, float]], float]
    auto: bool = True


#: The routes, in the order ties are broken.
ROUTES: dict[str, Route] = {
    r.name: r
    for r in (
        Route(
            "windows",
            guarded(by_column_windows, ("x", "g")),
            lambda spec: window_bytes(spec) + split_bytes(spec),
            _products_refusal,
            windows_seconds,
        ),
        Route(
            "slabs",
            guarded(by_pitched_slabs, ("x", "g")),
            slab_bytes,
            _products_refusal,
            slabs_seconds,
        ),
        Route(
            "tiles",
            guarded(_grad_weight_tiles.by_tiles, ("x", "g")),
            _grad_weight_tiles.workspace_bytes,
            _grad_weight_tiles.refusal,
            _grad_weight_tiles.estimate_seconds,
        ),
        Route(
            "winograd",
            guarded(_grad_weight_winograd.grad_weight, ("x", "g")),
            _grad_weight_winograd.workspace_bytes,
            _grad_weight_winograd.refusal,
            _grad_weight_winograd.estimate_seconds,
        ),
    )
}

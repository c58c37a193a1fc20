"""The compiled functions as :class:`~dilconv._native.calls.Kernel` objects.

Each signature declares the arguments of one IR builder (whose ``ARGUMENTS``
names must match it, checked on import) by kind, and each extents function says
which elements of each array argument the machine code touches, from the
call's integers and descriptor tables, exactly as the IR computes its addresses:
the checked mode (:mod:`~dilconv._native.calls`) compares them with the arrays.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import numpy as np

from dilconv._native import (
    fold_kernel,
    planar_kernel,
    stencil_kernel,
    tile_kernel,
    transpose_kernel,
    winograd_kernel,
    winograd_planar,
    winograd_weights,
)
from dilconv._native.calls import Kernel, Param, Signature

Span = tuple[int, int] | None
Reader = Callable[[str, int], np.ndarray]


def _signature(function: str, names: tuple[str, ...], kinds: Mapping[str, str]) -> Signature:
    """``names`` (an IR builder's ``ARGUMENTS``), each ``"int"`` unless in ``kinds``."""
    if not set(kinds) <= set(names):
        raise RuntimeError(f"{function}: {sorted(set(kinds) - set(names))} not in {names}")
    return Signature(function, tuple(Param(n, kinds.get(n, "int")) for n in names))


TILES = _signature(
    "tiles",
    tile_kernel.ARGUMENTS,
    {"x": "array", "w": "array", "out": "array", "rows": "table", "columns": "table"},
)
PLANAR = _signature(
    "planar tiles",
    planar_kernel.ARGUMENTS,
    {"x": "array", "w": "array", "out": "array", "rows": "table", "columns": "table"},
)
TRANSFORM = _signature(
    "winograd transform",
    winograd_kernel.ARGUMENTS,
    {
        "source": "array",
        "spare": "array",
        "target": "array",
        "rows": "table",
        "columns": "table",
        "flags": "array",
    },
)
PLANAR_TRANSFORM = _signature(
    "winograd planar transform",
    winograd_planar.ARGUMENTS,
    {"source": "array", "target": "array", "flags": "array", "rows": "table", "columns": "table"},
)
WEIGHTS = _signature(
    "winograd weights",
    winograd_weights.ARGUMENTS,
    {"w": "array", "packed": "array", "taps": "array"},
)
TRANSPOSE = _signature(
    "transpose", transpose_kernel.ARGUMENTS, {"source": "array", "target": "array"}
)
FOLD = _signature(
    "fold sums",
    fold_kernel.ARGUMENTS,
    {"z": "array", "out": "array", "rows": "table", "runs": "table"},
)
STENCIL = _signature(
    "stencil rows", stencil_kernel.ARGUMENTS, {"x": "array", "w": "array", "out": "array"}
)


def _span(count: int, step: int) -> tuple[int, int]:
    """Lowest and highest of ``k * step`` for ``k`` in ``range(count)`` (count >= 1)."""
    last = (count - 1) * step
    return min(0, last), max(0, last)


def _range_span(first: np.ndarray, stop: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Per entry, lowest and highest of ``k * step`` for ``k`` in ``[first, stop)``."""
    a, b = first * step, (stop - 1) * step
    return np.minimum(a, b), np.maximum(a, b)


def _tile_extents(
    ints: Mapping[str, int],
    read: Reader,
    *,
    pixels: int,
    lanes: int,
    vectors: int,
    tail: int,
) -> dict[str, Span]:
    """The tile loop (:func:`~dilconv._native.tile_kernel._ir_source`): for every row
    ``r`` and tile ``t`` it stores ``pixels`` runs of ``width`` outputs, and, for the
    kernel rows and columns in their ranges and ``channels`` channels, loads a
    weight run and ``pixels`` inputs."""
    width = (vectors - 1) * lanes + (tail or lanes)
    p_lo, p_hi = _span(pixels, ints["out_pixel"])
    q_lo, q_hi = _span(pixels, ints["x_pixel"])
    return _tables_extents(ints, read, (p_lo, p_hi + width), (q_lo, q_hi + 1), width)


def _planar_extents(
    ints: Mapping[str, int], read: Reader, *, lanes: int, vectors: int, tail: int, outs: int
) -> dict[str, Span]:
    """The planar tile loop (:mod:`~dilconv._native.planar_kernel`): for every row and
    tile, ``outs`` runs of ``width`` outputs ``out_channel`` apart; for the kernel
    rows and columns in their ranges and ``channels`` channels, a run of ``width``
    inputs and ``outs`` weights."""
    width = (vectors - 1) * lanes + (tail or lanes)
    o_lo, o_hi = _span(outs, ints["out_channel"])
    return _tables_extents(ints, read, (o_lo, o_hi + width), (0, width), outs)


def _tables_extents(
    ints: Mapping[str, int],
    read: Reader,
    out_run: tuple[int, int],
    x_run: tuple[int, int],
    w_width: int,
) -> dict[str, Span]:
    """Extents of a loop over the row and column tables of
    :mod:`~dilconv._native.tile_kernel`'s format: each tile touches ``out_run``
    (first, one past the last) around its output offset; for the kernel rows and
    columns in their ranges and ``channels`` channels, ``x_run`` around each input
    offset and ``w_width`` weights from each weight offset."""
    n_rows, n_cols, channels = ints["n_rows"], ints["n_columns"], ints["channels"]
    if n_rows <= 0 or n_cols <= 0:
        return {"x": None, "w": None, "out": None}
    rows = read("rows", n_rows * tile_kernel.ROW_FIELDS).reshape(n_rows, -1)
    cols = read("columns", n_cols * tile_kernel.FIELDS).reshape(n_cols, -1)
    out = (
        int(rows[:, 1].min() + cols[:, 1].min()) + out_run[0],
        int(rows[:, 1].max() + cols[:, 1].max()) + out_run[1],
    )
    live_r, live_c = rows[:, 3] > rows[:, 2], cols[:, 3] > cols[:, 2]
    if channels <= 0 or not live_r.any() or not live_c.any():
        return {"x": None, "w": None, "out": out}
    rows, cols = rows[live_r], cols[live_c]
    c_lo, c_hi = _span(channels, ints["x_channel"])
    ry_lo, ry_hi = _range_span(rows[:, 2], rows[:, 3], ints["x_tap_row"])
    cx_lo, cx_hi = _range_span(cols[:, 2], cols[:, 3], ints["x_tap_col"])
    x = (
        int((rows[:, 0] + ry_lo).min() + (cols[:, 0] + cx_lo).min()) + c_lo + x_run[0],
        int((rows[:, 0] + ry_hi).max() + (cols[:, 0] + cx_hi).max()) + c_hi + x_run[1],
    )
    w_rows = np.where(rows[:, 4] < 0, -1 - rows[:, 4], rows[:, 4])  # -1 - offset: afresh
    wc_lo, wc_hi = _span(channels, ints["w_channel"])
    wy_lo, wy_hi = _range_span(rows[:, 2], rows[:, 3], ints["w_row"])
    wx_lo, wx_hi = _range_span(cols[:, 2], cols[:, 3], ints["w_col"])
    w = (
        int((w_rows + wy_lo).min() + wx_lo.min()) + wc_lo,
        int((w_rows + wy_hi).max() + wx_hi.max()) + wc_hi + w_width,
    )
    return {"x": x, "w": w, "out": out}


def _pixel_span(rows: np.ndarray, cols: np.ndarray, width: int) -> Span:
    """Elements touched from the image offsets ``row + col`` of every pixel whose row
    and column offsets are both inside (``>= 0``), ``width`` from each."""
    r, c = rows[rows >= 0], cols[cols >= 0]
    if len(r) == 0 or len(c) == 0:
        return None
    return int(r.min() + c.min()), int(r.max() + c.max()) + width


def _transform_extents(
    ints: Mapping[str, int], read: Reader, *, kind: str, lanes: int, tail: int
) -> dict[str, Span]:
    """The tile transforms (:mod:`~dilconv._native.winograd_kernel`): per tile, the
    16 (or 4) image pixels inside, the 16 positions of its ``V`` (or ``M``) run,
    and the spare row for pixels outside."""
    n_rows, n_cols = ints["n_rows"], ints["n_columns"]
    flags = (0, lanes) if kind == "output" else None  # ``input`` never touches it
    if n_rows <= 0 or n_cols <= 0:
        return {"source": None, "spare": None, "target": None, "flags": flags}
    span = 4 if kind == "input" else 2  # pixels per axis a tile reads or writes
    rows = read("rows", n_rows * span)
    cols = read("columns", n_cols * span)
    width = ints["vectors"] * lanes + tail
    t_lo, t_hi = _span(n_rows * n_cols, ints["tile"])
    p_lo, p_hi = _span(16, ints["position"])
    planes = (t_lo + p_lo, t_hi + p_hi + width)
    image = _pixel_span(rows, cols, width)
    if kind in ("input", "gradient"):
        return {"source": image, "spare": (0, width), "target": planes, "flags": None}
    return {"source": planes, "spare": (0, width), "target": image, "flags": flags}


def _planar_transform_extents(
    ints: Mapping[str, int], read: Reader, *, kind: str, lanes: int, spread: int
) -> dict[str, Span]:
    """The planar tile transforms (:mod:`~dilconv._native.winograd_planar`): per tile
    row, channel and vector of tiles, the 16 positions of one vector in ``V`` (or
    ``M``); of the image, the lanes of each window whose bit is on, ``input``
    reading 4 rows (those ``>= 0``) of 4 windows (2 vectors each with a spread),
    ``output`` writing 2 rows of 2 windows (the second ``lanes`` or ``dilation``
    on)."""
    n_rows, n_cols, channels = ints["n_rows"], ints["n_columns"], ints["channels"]
    flags = (0, lanes) if kind == "output" else None
    if n_rows <= 0 or n_cols <= 0 or channels <= 0:
        return {"source": None, "target": None, "flags": flags}
    fields = winograd_planar.ROW_FIELDS, winograd_planar.COLUMN_FIELDS
    rows = read("rows", n_rows * fields[0]).reshape(n_rows, -1)
    cols = read("columns", n_cols * fields[1]).reshape(n_cols, -1)
    c_lo, c_hi = _span(channels, ints["plane"])
    q_lo, q_hi = _span(16, ints["position"])
    planes = (
        int(rows[:, 6].min() + cols[:, 2].min()) + c_lo + q_lo,
        int(rows[:, 6].max() + cols[:, 2].max()) + c_hi + q_hi + lanes,
    )
    k = np.arange(lanes, dtype=np.int64)
    touched: list[np.ndarray] = []  # image offsets within a channel, per lane
    if kind == "input":
        for b in range(4):
            for window, field in ((0, 4 + b), (lanes, 8 + b)):
                if window and not spread:
                    continue
                on = (cols[:, field, None] >> k) & 1 == 1
                at = cols[:, 0, None] + b * ints["dilation"] + window + k
                for r in rows[:, :4].ravel():
                    if r >= 0:
                        touched.append(r + at[on])
    else:
        windows = ((0, 12), (lanes, 13)) if spread else ((0, 3), (ints["dilation"], 3))
        for shift, field in windows:
            on = (cols[:, field, None] >> k) & 1 == 1
            at = cols[:, 1, None] + shift + k
            for r in rows[:, 4:6].ravel():
                touched.append(r + at[on])
    every = np.concatenate(touched) if touched else np.empty(0, dtype=np.int64)
    i_lo, i_hi = _span(channels, ints["channel"])
    image = None if not every.size else (int(every.min()) + i_lo, int(every.max()) + i_hi + 1)
    if kind == "input":
        return {"source": image, "target": planes, "flags": None}
    return {"source": planes, "target": image, "flags": flags}


def _weight_extents(
    ints: Mapping[str, int], read: Reader, *, lanes: int, tail: int, copies: bool
) -> dict[str, Span]:
    """The weight transform (:mod:`~dilconv._native.winograd_weights`): per channel,
    9 taps of ``vectors`` (and a masked tail) read, 16 positions of whole vectors
    written; with ``copies``, 9 taps of whole vectors written to ``taps`` too."""
    del read
    channels, vectors = ints["channels"], ints["vectors"]
    if channels <= 0:
        return {"w": None, "packed": None, "taps": None}
    whole = (vectors + (tail > 0)) * lanes
    c_lo, c_hi = _span(channels, ints["w_channel"])
    t_lo, t_hi = _span(9, ints["w_tap"])
    u_lo, u_hi = _span(channels, ints["u_channel"])
    q_lo, q_hi = _span(16, ints["u_position"])
    taps = None
    if copies:
        k_lo, k_hi = _span(channels, ints["taps_channel"])
        p_lo, p_hi = _span(9, ints["taps_tap"])
        taps = (k_lo + p_lo, k_hi + p_hi + whole)
    return {
        "w": (c_lo + t_lo, c_hi + t_hi + vectors * lanes + tail),
        "packed": (u_lo + q_lo, u_hi + q_hi + whole),
        "taps": taps,
    }


@functools.cache
def tiles(
    dtype: np.dtype,
    pixels: int,
    vectors: int,
    lanes: int,
    tail: int,
    accumulate: bool,
    columns_outer: bool = False,
) -> Kernel:
    """The tile loop of :mod:`~dilconv._native.tile_kernel` for these parameters
    (one per compiled function, kept for the process like its machine code)."""
    dtype = np.dtype(dtype)
    fn = tile_kernel.tile_function(dtype, pixels, vectors, lanes, tail, accumulate, columns_outer)
    label = (
        f"tiles({dtype}, pixels={pixels}, vectors={vectors}, lanes={lanes}, tail={tail}, "
        f"accumulate={accumulate}{', columns_outer=True' if columns_outer else ''})"
    )
    extents = functools.partial(
        _tile_extents, pixels=pixels, lanes=lanes, vectors=vectors, tail=tail
    )
    return Kernel(label, TILES, fn, dtype, extents)


@functools.cache
def planar(
    dtype: np.dtype, lanes: int, vectors: int, tail: int, outs: int, accumulate: bool
) -> Kernel:
    """The NCHW tile loop of :mod:`~dilconv._native.planar_kernel` for these parameters."""
    dtype = np.dtype(dtype)
    fn = planar_kernel.planar_function(dtype, lanes, vectors, tail, outs, accumulate)
    label = (
        f"planar tiles({dtype}, lanes={lanes}, vectors={vectors}, tail={tail}, outs={outs}, "
        f"accumulate={accumulate})"
    )
    extents = functools.partial(_planar_extents, lanes=lanes, vectors=vectors, tail=tail, outs=outs)
    return Kernel(label, PLANAR, fn, dtype, extents)


@functools.cache
def transform(dtype: np.dtype, lanes: int, tail: int, kind: str, stream: bool = False) -> Kernel:
    """The ``kind`` ("input", "output" or "gradient") tile transform of
    :mod:`~dilconv._native.winograd_kernel` (``stream``: the output transform storing
    past the caches)."""
    dtype = np.dtype(dtype)
    fn = winograd_kernel.transform_function(dtype, lanes, tail, kind, stream)
    label = f"winograd {kind} transform({dtype}, lanes={lanes}, tail={tail}, stream={stream})"
    extents = functools.partial(_transform_extents, kind=kind, lanes=lanes, tail=tail)
    return Kernel(label, TRANSFORM, fn, dtype, extents)


@functools.cache
def planar_transform(
    dtype: np.dtype, lanes: int, spread: int, kind: str, stream: bool = False
) -> Kernel:
    """The planar ``kind`` ("input" or "output") tile transform of
    :mod:`~dilconv._native.winograd_planar` (``spread``: the dilation below ``lanes``,
    else 0; ``stream``: the output transform storing past the caches)."""
    dtype = np.dtype(dtype)
    fn = winograd_planar.planar_transform(dtype, lanes, spread, kind, stream)
    label = (
        f"winograd planar {kind} transform({dtype}, lanes={lanes}, spread={spread}, "
        f"stream={stream})"
    )
    extents = functools.partial(_planar_transform_extents, kind=kind, lanes=lanes, spread=spread)
    return Kernel(label, PLANAR_TRANSFORM, fn, dtype, extents)


@functools.cache
def weights(dtype: np.dtype, lanes: int, tail: int, copies: bool = False) -> Kernel:
    """The weight transform of :mod:`~dilconv._native.winograd_weights` (``copies``:
    storing the taps in ``blocked``'s packing too)."""
    dtype = np.dtype(dtype)
    fn = winograd_weights.weight_function(dtype, lanes, tail, copies)
    label = f"winograd weights({dtype}, lanes={lanes}, tail={tail}, copies={copies})"
    extents = functools.partial(_weight_extents, lanes=lanes, tail=tail, copies=copies)
    return Kernel(label, WEIGHTS, fn, dtype, extents)


def _fold_extents(
    ints: Mapping[str, int], read: Reader, *, lanes: int, vectors: int, tail: int
) -> dict[str, Span]:
    """The column sums (:mod:`~dilconv._native.fold_kernel`): per row and run, for each
    pixel, ``width`` outputs written and, for each kernel column of the run, ``width``
    sums read."""
    n_rows, n_runs = ints["n_rows"], ints["n_runs"]
    if n_rows <= 0 or n_runs <= 0:
        return {"z": None, "out": None}
    rows = read("rows", n_rows * fold_kernel.ROW_FIELDS).reshape(n_rows, -1)
    runs = read("runs", n_runs * fold_kernel.RUN_FIELDS).reshape(n_runs, -1)
    width = (vectors - 1) * lanes + (tail or lanes)
    runs = runs[runs[:, 1] > runs[:, 0]]
    if not len(runs):
        return {"z": None, "out": None}
    p_lo, p_hi = _range_span(runs[:, 0], runs[:, 1], ints["out_pixel"])
    out = (int(rows[:, 1].min() + p_lo.min()), int(rows[:, 1].max() + p_hi.max()) + width)
    runs = runs[runs[:, 3] > runs[:, 2]]
    if not len(runs):
        return {"z": None, "out": out}
    q_lo, q_hi = _range_span(runs[:, 0], runs[:, 1], ints["z_pixel"])
    k_lo, k_hi = _range_span(runs[:, 2], runs[:, 3], ints["z_tap"])
    z = (
        int(rows[:, 0].min() + (q_lo + k_lo).min()),
        int(rows[:, 0].max() + (q_hi + k_hi).max()) + width,
    )
    return {"z": z, "out": out}


@functools.cache
def fold(dtype: np.dtype, lanes: int, vectors: int, tail: int) -> Kernel:
    """The column sums of :mod:`~dilconv._native.fold_kernel` for these parameters."""
    dtype = np.dtype(dtype)
    fn = fold_kernel.fold_function(dtype, lanes, vectors, tail)
    label = f"fold sums({dtype}, lanes={lanes}, vectors={vectors}, tail={tail})"
    extents = functools.partial(_fold_extents, lanes=lanes, vectors=vectors, tail=tail)
    return Kernel(label, FOLD, fn, dtype, extents)


def _transpose_extents(ints: Mapping[str, int], read: Reader) -> dict[str, Span]:
    """The transpose (:mod:`~dilconv._native.transpose_kernel`): ``rows`` source rows of
    ``columns`` elements read, ``columns`` target rows of ``rows`` elements written."""
    del read
    rows, columns = ints["rows"], ints["columns"]
    if rows <= 0 or columns <= 0:
        return {"source": None, "target": None}
    s_lo, s_hi = _span(rows, ints["source_row"])
    t_lo, t_hi = _span(columns, ints["target_row"])
    return {"source": (s_lo, s_hi + columns), "target": (t_lo, t_hi + rows)}


@functools.cache
def transpose(dtype: np.dtype, stream: bool = False) -> Kernel:
    """The blocked transpose of :mod:`~dilconv._native.transpose_kernel`."""
    dtype = np.dtype(dtype)
    fn = transpose_kernel.transpose_function(dtype, stream)
    label = f"transpose({dtype}, stream={stream})"
    return Kernel(label, TRANSPOSE, fn, dtype, _transpose_extents)


def _stencil_extents(ints: Mapping[str, int], read: Reader, *, kh: int, kw: int) -> dict[str, Span]:
    """The one-channel row loop (:mod:`~dilconv._native.stencil_kernel`): output rows
    ``[first, last)`` of ``out_width`` written; of the input, whole rows of ``width``
    from the first row's top kernel row to the last row's bottom one, each clamped
    to its image (a masked lane, outside, reads nothing)."""
    del read
    first, last, ho, wo = ints["first"], ints["last"], ints["out_rows"], ints["out_width"]
    h, width = ints["height"], ints["width"]
    if last <= first or wo <= 0:
        return {"x": None, "w": None, "out": None}

    def image_row(q: int, a: int) -> int:
        n, i = divmod(q, ho)
        r = i * ints["row_stride"] - ints["top"] + a * ints["row_dilation"]
        return n * h + min(max(r, 0), h - 1)

    x = (image_row(first, 0) * width, (image_row(last - 1, kh - 1) + 1) * width)
    return {"x": x, "w": (0, kh * kw), "out": (first * wo, last * wo)}


@functools.cache
def stencil(
    dtype: np.dtype, kh: int, kw: int, stream: bool, columns: tuple[int, ...] | None = None
) -> Kernel:
    """The one-channel row loop of :mod:`~dilconv._native.stencil_kernel` (``columns``:
    the column offsets compiled into its carried loop, or None)."""
    dtype = np.dtype(dtype)
    fn = stencil_kernel.stencil_function(dtype, kh, kw, stream, columns)
    label = f"stencil rows({dtype}, {kh}x{kw}, stream={stream}, columns={columns})"
    extents = functools.partial(_stencil_extents, kh=kh, kw=kw)
    return Kernel(label, STENCIL, fn, dtype, extents)

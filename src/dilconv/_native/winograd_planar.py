"""Machine code for Winograd on NCHW arrays: F(2x2, 3x3) tile transforms along a row.

The transforms of :mod:`~dilconv._native.winograd_kernel` hold a vector of channels
per pixel, which suits NHWC. In NCHW a channel's row is contiguous, so these hold
a vector of *tiles* of one channel instead: lane ``k`` is the tile whose first
output column is ``x0 + offset(k)``, and the transformed values go to ``V`` (and
come from ``M``) as planes ``(16 positions, channels, tiles)``. Neither array is
transposed and no row is staged.

Which tiles share a vector follows from the dilation ``d``: the tiles of a row
start at the columns whose ``x // d`` is even
(:func:`dilconv._methods.winograd.whole_pairs`), in groups of ``d`` consecutive
columns ``2d`` apart. With ``d`` below the lane count ``L`` a vector holds
``g = L // d`` whole groups, ``offset(k) = (k // d) 2d + k % d``
(:func:`lane_offsets`): their inputs at kernel column ``b`` lie within the ``2L``
columns from ``x0 - pad + d b``, two loads that one constant shuffle sorts into
lanes, and their ``2 g d`` outputs on an output row are consecutive, two stores of
two shuffles of the tiles' first and second outputs (:func:`output_sources`).
From ``d = L`` on, a vector holds ``L`` consecutive tiles of one group: one load
per kernel column, two stores ``d`` apart. Where ``L`` is not a multiple of ``d``,
``L % d`` lanes stay idle.

Two functions are compiled per dtype, lane count and *spread* (``d`` below ``L``,
else 0), as LLVM IR through ``llvmlite`` like the other tile loops (whose
compiler and disk cache they share):

``input``
    ``V[p, c, t] = (B^T D_t B)[p]`` for the tiles of a band. It prefetches the
    lines of the next channel's rows as it goes: a channel's part of a row is a
    short run, too short for the hardware to fetch ahead (64 channels of 256x256:
    3.7 -> 3.1 ms for the input transforms of the whole image, one thread).
``output``
    ``Y_t = A^T M_t A``, each output row's values stored in place in the NCHW
    result, with the finite check of ``winograd_kernel``'s ``output`` (only over
    the lanes that hold a tile). Its stream variant stores whole, aligned vectors
    past the caches, checking each store's address and mask.

Both run channel by channel over a table of tile rows (:data:`ROW_FIELDS` integers
each) and a table of vectors of tiles (:data:`COLUMN_FIELDS` integers each): each
vector's first input and output column, its offset in ``V`` and ``M``, and bit
masks of the lanes that hold a tile, the input lanes inside the image for each
kernel column, and the output lanes to store. A lane whose bit is off is neither
read nor written.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from dilconv._native import tile_kernel
from dilconv._native.winograd_kernel import A_T, B_T, _combine, _tree_sum, add_to_flags

#: Argument order of both compiled functions (all int64; pointers as addresses).
ARGUMENTS = (
    "source",  # the NCHW image (first channel) for ``input``, M for ``output``
    "target",  # V for ``input``, the NCHW result (first channel) for ``output``
    "flags",  # ``output``: ``lanes`` scalars, finite while every output it writes is
    "rows",  # address of the (n_rows, ROW_FIELDS) int64 tile rows
    "n_rows",
    "columns",  # address of the (n_columns, COLUMN_FIELDS) int64 vectors of tiles
    "n_columns",
    "channels",  # channels transformed (input channels for ``input``, outputs else)
    "channel",  # elements between channels in the image
    "plane",  # elements between channels in V or M (tiles of the band)
    "position",  # elements between the 16 positions in V or M
    "dilation",  # columns between a tile's taps
)

#: Integers per tile row: four input row offsets (``input``; ``-1``: outside the
#: image), two output row offsets (``output``), the row's first tile in V or M.
ROW_FIELDS = 7
#: Integers per vector of tiles: first input column (may be negative), first
#: output column, first tile in the row's V or M, then bit masks: lanes holding a
#: tile, input lanes inside for kernel columns 0-3 (low window), the same for the
#: high window, output lanes to store in the low and high window.
COLUMN_FIELDS = 14

#: The transforms compiled.
KINDS = ("input", "output")

PlanarTransform = Callable[..., None]
Value = Any  # an llvmlite IR value


def lane_offsets(lanes: int, spread: int) -> tuple[int, ...]:
    """Column of each lane's tile after the vector's first (``spread``: the dilation
    below ``lanes``, else 0); lanes past the whole groups repeat lane 0's.

    >>> lane_offsets(8, 3)
    (0, 1, 2, 6, 7, 8, 0, 0)
    >>> lane_offsets(4, 0)
    (0, 1, 2, 3)
    """
    if spread == 0:
        return tuple(range(lanes))
    used = lanes // spread * spread
    return tuple((k // spread) * 2 * spread + k % spread if k < used else 0 for k in range(lanes))


def output_sources(lanes: int, spread: int) -> tuple[int, ...]:
    """For each of the ``2 lanes`` output columns after a vector's first (``spread``
    above 0), the lane of the tiles' first outputs (``k``) or second (``lanes + k``)
    that lands there; columns past the groups take lane 0's.

    >>> output_sources(4, 1)
    (0, 4, 1, 5, 2, 6, 3, 7)
    >>> output_sources(4, 3)
    (0, 1, 2, 4, 5, 6, 0, 0)
    """
    groups = lanes // spread
    sources = []
    for m in range(2 * lanes):
        group, r = divmod(m, 2 * spread)
        if group >= groups:
            sources.append(0)
        else:
            first = group * spread + r  # the tile of the first output there
            sources.append(first if r < spread else lanes + first - spread)
    return tuple(sources)


def _ir_source(dtype: np.dtype, lanes: int, spread: int, kind: str, stream: bool = False) -> str:
    """LLVM IR of the planar ``input`` or ``output`` transform (module docstring);
    ``stream``: ``output``'s whole, aligned vectors stored past the caches."""
    from llvmlite import ir

    scalar = ir.FloatType() if dtype == np.float32 else ir.DoubleType()
    vec = ir.VectorType(scalar, lanes)
    i64, i32, ptr = ir.IntType(64), ir.IntType(32), ir.PointerType()
    lane_bits, mask_type = ir.IntType(lanes), ir.VectorType(ir.IntType(1), lanes)
    module = ir.Module(name=f"dilconv_winograd_planar_{kind}")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [i64] * len(ARGUMENTS)), name=kind)
    args = dict(zip(ARGUMENTS, fn.args, strict=True))
    masked_load, masked_store = tile_kernel.masked_memory(module, vec)
    size = dtype.itemsize
    align = ir.Constant(i32, size)
    zero_vec = ir.Constant(vec, [0.0] * lanes)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    source, target = b.inttoptr(args["source"], ptr), b.inttoptr(args["target"], ptr)
    rows, columns = b.inttoptr(args["rows"], ptr), b.inttoptr(args["columns"], ptr)
    counters = {name: b.alloca(i64, name=name) for name in ("r", "c", "v")}
    finite = b.alloca(vec, name="finite")  # the running ``s - s`` of ``output``
    b.store(zero_vec, finite)

    def const(v: int) -> Value:
        return ir.Constant(i64, v)

    def loop(name: str, stop: Value, body: Callable[[Value], None]) -> None:
        tile_kernel.emit_loop(b, counters[name], const(0), stop, body)

    def field(table: Value, width: int, i: Value, k: int) -> Value:
        at = b.add(b.mul(i, const(width)), const(k))
        return b.load(b.gep(table, [at], source_etype=i64), typ=i64)

    def mask(bits: Value) -> Value:
        return b.bitcast(b.trunc(bits, lane_bits), mask_type)

    def shuffle(lo: Value, hi: Value, picks: tuple[int, ...]) -> Value:
        return b.shuffle_vector(lo, hi, ir.Constant(ir.VectorType(i32, lanes), list(picks)))

    def at(base: Value, offset: Value) -> Value:
        return b.gep(base, [offset], source_etype=scalar)

    def load(base: Value, offset: Value, bits: Value) -> Value:
        return b.call(masked_load, [at(base, offset), align, mask(bits), zero_vec])

    nontemporal = module.add_metadata([ir.Constant(i32, 1)]) if stream else None
    whole = const((1 << lanes) - 1)

    def store(value: Value, base: Value, offset: Value, bits: Value, past: bool = False) -> None:
        p = at(base, offset)
        if not (past and stream):
            b.call(masked_store, [value, p, align, mask(bits)])
            return
        # whole aligned vectors past the caches, the others as before
        aligned = b.icmp_unsigned(
            "==", b.and_(b.ptrtoint(p, i64), const(lanes * size - 1)), const(0)
        )
        with b.if_else(b.and_(aligned, b.icmp_unsigned("==", bits, whole))) as (fast, slow):
            with fast:
                b.store(value, p, align=lanes * size).set_metadata("nontemporal", nontemporal)
            with slow:
                b.call(masked_store, [value, p, align, mask(bits)])

    picks = lane_offsets(lanes, spread)
    dilation = args["dilation"]
    prefetch = ir.Function(
        module, ir.FunctionType(ir.VoidType(), [ptr, i32, i32, i32]), name="llvm.prefetch.p0"
    )

    def fetch(offset: Value) -> None:
        """A hint to load the line holding ``source[offset]`` (never faults)."""
        hint = [ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)]
        b.call(prefetch, [at(source, offset), *hint])

    def input_vector(r_off: list[Value], r_ok: list[Value], plane: Value, v: Value) -> None:
        in_col = field(columns, COLUMN_FIELDS, v, 0)
        v_at = b.add(plane, field(columns, COLUMN_FIELDS, v, 2))
        d = []
        for a in range(4):
            row = b.add(r_off[a], in_col)
            # the next channel's lines of this row (a channel's rows are short runs,
            # too short for the hardware to fetch ahead)
            ahead = b.add(row, args["channel"])
            last = b.add(b.mul(const(3), dilation), const(2 * lanes - 1 if spread else lanes - 1))
            for k in range(0, 2 * lanes if spread else lanes, 64 // size):
                fetch(b.add(ahead, const(k)))
            fetch(b.add(ahead, last))
            if not spread:
                for k in (1, 2):
                    fetch(b.add(ahead, b.mul(const(k), dilation)))
            for k in range(4):
                window = b.add(row, b.mul(const(k), dilation))
                lo_bits = b.select(r_ok[a], field(columns, COLUMN_FIELDS, v, 4 + k), const(0))
                lo = load(source, window, lo_bits)
                if spread:
                    hi_bits = b.select(r_ok[a], field(columns, COLUMN_FIELDS, v, 8 + k), const(0))
                    hi = load(source, b.add(window, const(lanes)), hi_bits)
                    lo = shuffle(lo, hi, picks)
                d.append(lo)
        rows_t = [
            [_combine(b, [d[4 * a + j] for a in range(4)], co) for j in range(4)] for co in B_T
        ]
        everything = const((1 << lanes) - 1)
        for i in range(4):
            for j, co in enumerate(B_T):
                where = b.add(v_at, b.mul(const(4 * i + j), args["position"]))
                store(_combine(b, rows_t[i], co), target, where, everything)

    def output_vector(o_off: list[Value], plane: Value, v: Value) -> None:
        out_col = field(columns, COLUMN_FIELDS, v, 1)
        m_at = b.add(plane, field(columns, COLUMN_FIELDS, v, 2))
        held = field(columns, COLUMN_FIELDS, v, 3)
        m = [
            b.load(at(source, b.add(m_at, b.mul(const(p), args["position"]))), typ=vec, align=size)
            for p in range(16)
        ]
        rows_t = [
            [_combine(b, [m[4 * a + j] for a in range(4)], co) for j in range(4)] for co in A_T
        ]
        y = [[_combine(b, rows_t[i], co) for co in A_T] for i in range(2)]
        for i in range(2):
            here = b.add(o_off[i], out_col)
            if spread:
                sources = output_sources(lanes, spread)
                low, high = (
                    shuffle(y[i][0], y[i][1], sources[:lanes]),
                    shuffle(y[i][0], y[i][1], sources[lanes:]),
                )
                store(low, target, here, field(columns, COLUMN_FIELDS, v, 12), True)
                high_bits = field(columns, COLUMN_FIELDS, v, 13)
                store(high, target, b.add(here, const(lanes)), high_bits, True)
            else:
                store(y[i][0], target, here, held, True)
                store(y[i][1], target, b.add(here, dilation), held, True)
        total = _tree_sum(b, [y[i][j] for i in range(2) for j in range(2)])
        kept = b.select(mask(held), b.fsub(total, total), zero_vec)
        b.store(b.fadd(b.load(finite, typ=vec), kept), finite)

    def channel(c: Value) -> None:
        image = b.mul(c, args["channel"])

        def row(r: Value) -> None:
            plane = b.add(field(rows, ROW_FIELDS, r, 6), b.mul(c, args["plane"]))
            if kind == "input":
                r_raw = [field(rows, ROW_FIELDS, r, a) for a in range(4)]
                r_ok = [b.icmp_signed(">=", o, const(0)) for o in r_raw]
                inside = zip(r_ok, r_raw, strict=True)
                r_off = [b.add(image, b.select(ok, o, const(0))) for ok, o in inside]
                loop("v", args["n_columns"], lambda v: input_vector(r_off, r_ok, plane, v))
            else:
                o_off = [b.add(image, field(rows, ROW_FIELDS, r, 4 + i)) for i in range(2)]
                loop("v", args["n_columns"], lambda v: output_vector(o_off, plane, v))

        loop("r", args["n_rows"], row)

    # channel by channel: a channel's rows are read (or written) together, the
    # rows that tile rows share while still in cache
    loop("c", args["channels"], channel)
    if stream:
        b.fence("seq_cst")
    if kind == "output":
        add_to_flags(b, args["flags"], finite, vec, size)
    b.ret_void()
    return str(module)


@functools.lru_cache(maxsize=64)
def planar_transform(
    dtype: np.dtype, lanes: int, spread: int, kind: str, stream: bool = False
) -> PlanarTransform:
    """The compiled planar ``kind`` ("input" or "output") transform, as a ctypes
    function; ``spread``: the dilation where it is below ``lanes``, else 0.
    Compiled once per process and kept on disk like the tile loops."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if stream and kind != "output":
        raise ValueError(f"only the output transform stores past the caches, not {kind!r}")
    if not 0 <= spread < lanes:
        raise ValueError(f"spread must be in [0, {lanes}), got {spread}")
    with tile_kernel.COMPILING:
        source = _ir_source(np.dtype(dtype), lanes, spread, kind, stream)
        return tile_kernel.compile_function(source, kind, len(ARGUMENTS))

"""Machine code for NCHW arrays: the tile loop with SIMD vectors along a row's pixels.

The tile loop of :mod:`~dilconv._native.tile_kernel` keeps a vector of output
channels per pixel, which suits NHWC. In NCHW (PyTorch's layout) a channel's row
is contiguous instead, so this loop turns the blocking around: a *tile* is
``vectors`` SIMD vectors of consecutive output pixels of one row (the last one
masked to ``tail`` pixels when the tile is narrower) times ``outs`` output
channels. For each tap and input channel it loads the tile's input vectors (one
contiguous run of the input row: stride 1 along the row), and for each output
channel broadcasts one packed weight and does ``vectors`` fused multiply-adds.
The ``outs x vectors`` sums stay in registers through every tap and channel and
are then stored as contiguous runs of each output channel's row (or added to
them when summing input channels in blocks). Neither array is transposed.

The tiles are the product of two tables of ``tile_kernel``'s formats
(:data:`~dilconv._native.tile_kernel.ROW_FIELDS` and
:data:`~dilconv._native.tile_kernel.FIELDS` int64 per entry), with offsets into
NCHW arrays. Compiled and cached on disk like the other tile loops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from dilconv._native.compiler import compiled_once
from dilconv._native.tile_kernel import FIELDS, ROW_FIELDS, emit_loop

#: Argument order of the compiled function (all int64; pointers as addresses).
ARGUMENTS = (
    "x",  # input address (NCHW, first channel summed)
    "w",  # packed weights: (taps, C, outs) per output block
    "out",  # output address (NCHW, first channel of the block)
    "rows",  # address of the (n_rows, ROW_FIELDS) int64 output row descriptors
    "n_rows",
    "columns",  # address of the (n_columns, FIELDS) int64 tile column descriptors
    "n_columns",
    "channels",  # input channels summed by this call
    "w_row",  # elements between kernel rows in the weights
    "w_col",  # elements between kernel columns in the weights
    "w_channel",  # elements between summed channels in the weights
    "x_channel",  # elements between input channels (H * W)
    "x_tap_row",  # elements between kernel rows in the input (dilation * W)
    "x_tap_col",  # elements between kernel columns in the input (dilation)
    "out_channel",  # elements between output channels (Ho * Wo)
)

PlanarFunction = Callable[..., None]
Value = Any  # an llvmlite IR value


def _ir_source(
    dtype: np.dtype, lanes: int, vectors: int, tail: int, outs: int, accumulate: bool
) -> str:
    """LLVM IR of the loop (see the module docstring)."""
    from llvmlite import ir

    scalar = ir.FloatType() if dtype == np.float32 else ir.DoubleType()
    vec = ir.VectorType(scalar, lanes)
    i64, i32 = ir.IntType(64), ir.IntType(32)
    ptr = ir.PointerType()
    module = ir.Module(name="dilconv_planar")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [i64] * len(ARGUMENTS)), name="planar")
    args = dict(zip(ARGUMENTS, fn.args, strict=True))
    suffix = f"v{lanes}f{8 * dtype.itemsize}"
    fma = ir.Function(module, ir.FunctionType(vec, [vec] * 3), name=f"llvm.fma.{suffix}")
    mask_type = ir.VectorType(ir.IntType(1), lanes)
    masked_store = ir.Function(
        module,
        ir.FunctionType(ir.VoidType(), [vec, ptr, i32, mask_type]),
        name=f"llvm.masked.store.{suffix}.p0",
    )
    masked_load = ir.Function(
        module,
        ir.FunctionType(vec, [ptr, i32, mask_type, vec]),
        name=f"llvm.masked.load.{suffix}.p0",
    )
    size = dtype.itemsize
    zero = ir.Constant(vec, [0.0] * lanes)

    entry = fn.append_basic_block("entry")
    b = ir.IRBuilder(entry)
    x_base, w_base, out_base = (b.inttoptr(args[k], ptr) for k in ("x", "w", "out"))
    rows, columns = b.inttoptr(args["rows"], ptr), b.inttoptr(args["columns"], ptr)
    acc = [[b.alloca(vec, name=f"acc{j}_{q}") for q in range(vectors)] for j in range(outs)]
    counters = {name: b.alloca(i64, name=name) for name in ("r", "t", "ky", "kx", "c")}

    def const(n: int) -> Value:
        return ir.Constant(i64, n)

    def loop(name: str, start: Value, stop: Value, body: Callable[[Value], None]) -> None:
        emit_loop(b, counters[name], start, stop, body)

    def field(table: Value, i: Value, k: int, width: int) -> Value:
        index = b.add(b.mul(i, const(width)), const(k))
        return b.load(b.gep(table, [index], source_etype=i64), typ=i64)

    def mask(q: int) -> Value | None:
        if q < vectors - 1 or not tail:
            return None
        return ir.Constant(mask_type, [1 if k < tail else 0 for k in range(lanes)])

    def vector_at(base: Value, at: Value, q: int) -> Value:
        """Pointer to vector ``q`` of the run starting at element ``at``."""
        return b.gep(base, [b.add(at, const(q * lanes))], source_etype=scalar)

    def load(base: Value, at: Value, q: int) -> Value:
        p, m = vector_at(base, at, q), mask(q)
        if m is None:
            return b.load(p, typ=vec, align=size)
        return b.call(masked_load, [p, ir.Constant(i32, size), m, zero])

    def store(value: Value, at: Value, q: int) -> None:
        p, m = vector_at(out_base, at, q), mask(q)
        if m is None:
            b.store(value, p, align=size)
        else:
            b.call(masked_store, [value, p, ir.Constant(i32, size), m])

    def tile(r: Value, t: Value) -> None:
        x_off = b.add(field(rows, r, 0, ROW_FIELDS), field(columns, t, 0, FIELDS))
        out_off = b.add(field(rows, r, 1, ROW_FIELDS), field(columns, t, 1, FIELDS))
        w_off = field(rows, r, 4, ROW_FIELDS)
        out_at = [b.add(out_off, b.mul(const(j), args["out_channel"])) for j in range(outs)]
        for j in range(outs):
            for q in range(vectors):
                b.store(load(out_base, out_at[j], q) if accumulate else zero, acc[j][q])

        def kernel_row(ky: Value) -> None:
            def kernel_col(kx: Value) -> None:
                x_tap = b.add(
                    x_off, b.add(b.mul(ky, args["x_tap_row"]), b.mul(kx, args["x_tap_col"]))
                )
                w_tap = b.add(w_off, b.add(b.mul(ky, args["w_row"]), b.mul(kx, args["w_col"])))

                def channel(c: Value) -> None:
                    x_at = b.add(x_tap, b.mul(c, args["x_channel"]))
                    inputs = [load(x_base, x_at, q) for q in range(vectors)]
                    w_at = b.add(w_tap, b.mul(c, args["w_channel"]))
                    for j in range(outs):
                        p = b.gep(w_base, [b.add(w_at, const(j))], source_etype=scalar)
                        one = b.insert_element(
                            ir.Constant(vec, ir.Undefined),
                            b.load(p, typ=scalar),
                            ir.Constant(i32, 0),
                        )
                        splat = b.shuffle_vector(
                            one,
                            ir.Constant(vec, ir.Undefined),
                            ir.Constant(ir.VectorType(i32, lanes), [0] * lanes),
                        )
                        for q in range(vectors):
                            a = acc[j][q]
                            b.store(b.call(fma, [inputs[q], splat, b.load(a, typ=vec)]), a)

                loop("c", const(0), args["channels"], channel)

            loop("kx", field(columns, t, 2, FIELDS), field(columns, t, 3, FIELDS), kernel_col)

        loop("ky", field(rows, r, 2, ROW_FIELDS), field(rows, r, 3, ROW_FIELDS), kernel_row)
        for j in range(outs):
            for q in range(vectors):
                store(b.load(acc[j][q], typ=vec), out_at[j], q)

    def row(r: Value) -> None:
        loop("t", const(0), args["n_columns"], lambda t: tile(r, t))

    loop("r", const(0), args["n_rows"], row)
    b.ret_void()
    return str(module)


_FUNCTIONS: dict[tuple[object, ...], PlanarFunction] = {}


def planar_function(
    dtype: np.dtype, lanes: int, vectors: int, tail: int, outs: int, accumulate: bool
) -> PlanarFunction:
    """The compiled loop for these parameters, as a ctypes function.

    ``vectors``: SIMD vectors of pixels per tile; ``tail``: pixels in the last one
    when it is partly used (0: full); ``outs``: output channels per tile;
    ``accumulate``: add to the output instead of overwriting it. Compiled once per
    process, its machine code kept on disk for the next one.
    """
    key = (np.dtype(dtype), lanes, vectors, tail, outs, accumulate)
    return compiled_once(_FUNCTIONS, key, lambda: _ir_source(*key), "planar", len(ARGUMENTS))

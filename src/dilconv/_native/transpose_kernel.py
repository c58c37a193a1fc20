"""Machine code for moving activations between NCHW and NHWC (:mod:`dilconv._layout`).

``target[j * target_row + i] = source[i * source_row + j]`` for ``i`` in
``[0, rows)`` and ``j`` in ``[0, columns)``: the transpose of a ``rows x columns``
matrix. NCHW to NHWC is ``rows`` = channels and ``columns`` = pixels; the way back
swaps them. NumPy's strided copy does this element by element in the target's order,
each element from another page of the source (24 ms for 64 channels of 256x256
here, ten times a plain copy; a tiled scalar loop still ran at memory latency,
its power-of-two strides evicting its own lines). Here the matrix is cut into
square tiles of one SIMD vector (:data:`VECTOR_BYTES`) a side, transposed in
registers: :data:`STACK` tiles along ``i`` are loaded as vectors (each source row a
run along ``j``), and each target row of them stored as one 64-byte run. The rows
and columns past the last whole tile are copied one element at a time.

LLVM IR through ``llvmlite`` like :mod:`~dilconv._native.tile_kernel`, with whose
compiler and disk cache it shares.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from dilconv._native import tile_kernel

#: Argument order of the compiled function (all int64; pointers as addresses).
ARGUMENTS = (
    "source",
    "target",
    "rows",  # i runs over [0, rows)
    "columns",  # j runs over [0, columns)
    "source_row",  # elements between source rows i and i + 1
    "target_row",  # elements between target rows j and j + 1
)

#: Bytes of one vector: the tiles are ``lanes x lanes`` elements (8 float32, 4 float64).
VECTOR_BYTES = 32
#: Tiles stacked along ``i`` per pass over ``j``: two, so every target run is 64 bytes
#: (a whole cache line, written at once).
STACK = 2

TransposeFunction = Callable[..., None]
Value = Any  # an llvmlite IR value


def _ir_source(dtype: np.dtype) -> str:
    """LLVM IR of the tiled transpose (see the module docstring)."""
    from llvmlite import ir

    scalar = ir.FloatType() if dtype == np.float32 else ir.DoubleType()
    lanes = VECTOR_BYTES // dtype.itemsize
    vec = ir.VectorType(scalar, lanes)
    i64, i32, ptr = ir.IntType(64), ir.IntType(32), ir.PointerType()
    module = ir.Module(name="dilconv_transpose")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [i64] * len(ARGUMENTS)), name="t")
    args = dict(zip(ARGUMENTS, fn.args, strict=True))
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    source, target = b.inttoptr(args["source"], ptr), b.inttoptr(args["target"], ptr)
    names = ("ib", "jb", "i", "j", "ri", "rj")
    counters = {name: b.alloca(i64, name=name) for name in names}
    rows, columns = args["rows"], args["columns"]

    def const(v: int) -> Value:
        return ir.Constant(i64, v)

    def scalar_copy(i: Value, j: Value) -> None:
        value = b.load(b.gep(source, [b.add(b.mul(i, args["source_row"]), j)],
                             source_etype=scalar), typ=scalar)  # fmt: skip
        b.store(value, b.gep(target, [b.add(b.mul(j, args["target_row"]), i)],
                             source_etype=scalar))  # fmt: skip

    height = lanes * STACK
    whole_rows = b.mul(b.sdiv(rows, const(height)), const(height))
    whole_columns = b.mul(b.sdiv(columns, const(lanes)), const(lanes))

    def tiles(i0: Value) -> None:
        """Rows ``[i0, i0 + height)``: whole tiles along ``j``, then the last columns."""

        def tile(jb: Value) -> None:
            j0 = b.mul(jb, const(lanes))
            halves = []
            for s in range(STACK):
                loaded = []
                for r in range(lanes):
                    at = b.add(b.mul(b.add(i0, const(s * lanes + r)), args["source_row"]), j0)
                    p = b.gep(source, [at], source_etype=scalar)
                    loaded.append(b.load(p, typ=vec, align=dtype.itemsize))
                halves.append(loaded)
            for c in range(lanes):  # target row j0 + c: column c of each stacked tile
                row_at = b.add(b.mul(b.add(j0, const(c)), args["target_row"]), i0)
                for s, loaded in enumerate(halves):
                    out = ir.Constant(vec, None)
                    for r in range(lanes):
                        value = b.extract_element(loaded[r], ir.Constant(i32, c))
                        out = b.insert_element(out, value, ir.Constant(i32, r))
                    p = b.gep(target, [b.add(row_at, const(s * lanes))], source_etype=scalar)
                    b.store(out, p, align=dtype.itemsize)

        tile_kernel.emit_loop(b, counters["jb"], const(0), b.sdiv(columns, const(lanes)), tile)

        def last_columns(i: Value) -> None:
            tile_kernel.emit_loop(b, counters["j"], whole_columns, columns,
                                  lambda j: scalar_copy(i, j))  # fmt: skip

        tile_kernel.emit_loop(b, counters["i"], i0, b.add(i0, const(height)), last_columns)

    tile_kernel.emit_loop(b, counters["ib"], const(0), b.sdiv(rows, const(height)),
                          lambda k: tiles(b.mul(k, const(height))))  # fmt: skip

    def last_rows(i: Value) -> None:
        tile_kernel.emit_loop(b, counters["rj"], const(0), columns, lambda j: scalar_copy(i, j))

    tile_kernel.emit_loop(b, counters["ri"], whole_rows, rows, last_rows)
    b.ret_void()
    return str(module)


@functools.lru_cache(maxsize=4)
def transpose_function(dtype: np.dtype) -> TransposeFunction:
    """The compiled transpose for ``dtype`` (float32 or float64), as a ctypes function.

    Compiled once per process and kept on disk like the tile loops.
    """
    with tile_kernel.COMPILING:
        return tile_kernel.compile_function(_ir_source(np.dtype(dtype)), "t", len(ARGUMENTS))

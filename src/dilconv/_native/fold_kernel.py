"""Machine code for :mod:`dilconv._methods._blocked_folded`: the sums over kernel columns.

The folded route computes, per output row, ``z[q, kw * O + o]``: the sum over the
kernel rows and input channels of input column ``q``'s terms for kernel column
``kw`` and output channel ``o``. This function adds them up:
``out[p, o] = sum(z[p * z_pixel + kw * z_tap + o] for kw in [kw0, kw1))`` for the
output pixels ``p`` of each run of the run table, with offsets from each row of the
row table. The kernel columns of a run are those that read real input there, so
no term of padding is read. Each pixel's ``O`` outputs are ``vectors`` SIMD
vectors, the last under a mask where ``tail`` is not 0; each sum starts from zero
and adds the kernel columns' vectors in order.

LLVM IR through ``llvmlite`` like :mod:`~dilconv._native.tile_kernel`, with whose
compiler and disk cache it shares.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from dilconv._native import tile_kernel

#: Argument order of the compiled function (all int64; pointers as addresses).
ARGUMENTS = (
    "z",  # the column sums of the rows (address)
    "out",  # the NHWC output (address)
    "rows",  # address of the (n_rows, ROW_FIELDS) int64 row descriptors
    "n_rows",
    "runs",  # address of the (n_runs, RUN_FIELDS) int64 run descriptors
    "n_runs",
    "z_pixel",  # elements between neighbouring pixels' sums in z
    "z_tap",  # elements between neighbouring kernel columns' sums of one output pixel
    "out_pixel",  # elements between neighbouring output pixels
)

#: Per row: the offset in ``z`` of output pixel 0's first kernel column (before
#: ``kw0 * z_tap``), and the offset of the row's first output pixel.
ROW_FIELDS = 2
#: Per run: first and one-past-last output pixel, first and one-past-last kernel column.
RUN_FIELDS = 4

FoldFunction = Callable[..., None]
Value = Any  # an llvmlite IR value


def _ir_source(dtype: np.dtype, lanes: int, vectors: int, tail: int) -> str:
    """LLVM IR of the column sums (see the module docstring)."""
    from llvmlite import ir

    scalar = ir.FloatType() if dtype == np.float32 else ir.DoubleType()
    vec = ir.VectorType(scalar, lanes)
    i64, i32 = ir.IntType(64), ir.IntType(32)
    ptr = ir.PointerType()
    module = ir.Module(name="dilconv_fold")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [i64] * len(ARGUMENTS)), name="fold")
    args = dict(zip(ARGUMENTS, fn.args, strict=True))
    masked_load, masked_store = tile_kernel.masked_memory(module, vec)
    size = dtype.itemsize
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    z_base, out_base = b.inttoptr(args["z"], ptr), b.inttoptr(args["out"], ptr)
    rows, runs = b.inttoptr(args["rows"], ptr), b.inttoptr(args["runs"], ptr)
    counters = {name: b.alloca(i64, name=name) for name in ("r", "s", "p", "k")}
    acc = [b.alloca(vec, name=f"acc{v}") for v in range(vectors)]

    def const(v: int) -> Value:
        return ir.Constant(i64, v)

    def loop(name: str, start: Value, stop: Value, body: Callable[[Value], None]) -> None:
        tile_kernel.emit_loop(b, counters[name], start, stop, body)

    def field(table: Value, i: Value, k: int, width: int) -> Value:
        index = b.add(b.mul(i, const(width)), const(k))
        return b.load(b.gep(table, [index], source_etype=i64), typ=i64)

    def mask(v: int) -> Value | None:
        if v < vectors - 1 or not tail:
            return None
        return ir.Constant(ir.VectorType(ir.IntType(1), lanes), [k < tail for k in range(lanes)])

    def load(at: Value, m: Value | None) -> Value:
        p = b.gep(z_base, [at], source_etype=scalar)
        if m is None:
            return b.load(p, typ=vec, align=size)
        zero = ir.Constant(vec, [0.0] * lanes)
        return b.call(masked_load, [p, ir.Constant(i32, size), m, zero])

    def store(value: Value, at: Value, m: Value | None) -> None:
        p = b.gep(out_base, [at], source_etype=scalar)
        if m is None:
            b.store(value, p, align=size)
        else:
            b.call(masked_store, [value, p, ir.Constant(i32, size), m])

    def row(r: Value) -> None:
        z_row, out_row = field(rows, r, 0, ROW_FIELDS), field(rows, r, 1, ROW_FIELDS)

        def run(s: Value) -> None:
            p0, p1 = field(runs, s, 0, RUN_FIELDS), field(runs, s, 1, RUN_FIELDS)
            k0, k1 = field(runs, s, 2, RUN_FIELDS), field(runs, s, 3, RUN_FIELDS)

            def pixel(p: Value) -> None:
                z_at = b.add(z_row, b.mul(p, args["z_pixel"]))
                for a in acc:
                    b.store(ir.Constant(vec, [0.0] * lanes), a)

                def column(k: Value) -> None:
                    at = b.add(z_at, b.mul(k, args["z_tap"]))
                    for v, a in enumerate(acc):
                        term = load(b.add(at, const(v * lanes)), mask(v))
                        b.store(b.fadd(b.load(a, typ=vec), term), a)

                loop("k", k0, k1, column)
                out_at = b.add(out_row, b.mul(p, args["out_pixel"]))
                for v, a in enumerate(acc):
                    store(b.load(a, typ=vec), b.add(out_at, const(v * lanes)), mask(v))

            loop("p", p0, p1, pixel)

        loop("s", const(0), args["n_runs"], run)

    loop("r", const(0), args["n_rows"], row)
    b.ret_void()
    return str(module)


_FUNCTIONS: dict[tuple[object, ...], FoldFunction] = {}


def fold_function(dtype: np.dtype, lanes: int, vectors: int, tail: int) -> FoldFunction:
    """The compiled column sums for ``vectors`` vectors of ``lanes`` per pixel (the last
    holding ``tail`` values, 0: full), as a ctypes function; compiled once per process,
    its machine code kept on disk like the tile loop's."""
    dtype = np.dtype(dtype)
    key = (dtype, lanes, vectors, tail)
    return tile_kernel.compiled_once(
        _FUNCTIONS, key, lambda: _ir_source(dtype, lanes, vectors, tail), "fold", len(ARGUMENTS)
    )

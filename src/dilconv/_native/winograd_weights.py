"""Machine code for the weight transform of :mod:`dilconv._methods.winograd`.

``U = G w G^T`` for F(2x2, 3x3), with ``G = [[1, 0, 0], [1/2, 1/2, 1/2],
[1/2, -1/2, 1/2], [0, 0, 1]]``, written straight into the packed layout of
:func:`~dilconv._methods._winograd_products.transform_weights`. For each input
channel and each SIMD vector of output channels the nine taps are loaded once,
widened to float64, transformed (rows, then columns: ``g0``,
``(g0 + g1 + g2) / 2``, ``(g0 - g1 + g2) / 2``, ``g2``) and rounded once to the
weights' dtype as they are stored in the 16 positions. Every term is a tap times
1, 1/2 or 1/4, so in float64 the sums are exact for float32 weights, as in the
float64 matrix product this replaces, which took three passes over memory more
(a float64 copy, the product, a scatter into the packing: aspp's 2048 x 256
weights, 11-13 ms on two threads).

LLVM IR through ``llvmlite`` like :mod:`~dilconv._native.winograd_kernel`, with
whose compiler and disk cache it shares.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from dilconv._native import tile_kernel

#: Argument order of the compiled function (all int64; pointers as addresses).
ARGUMENTS = (
    "w",  # weights (kh=3, kw=3, C, O): address of the first channel and output taken
    "packed",  # packed U of one output block: address of its first channel
    "channels",  # input channels transformed
    "w_tap",  # elements between two taps of the weights (C * O)
    "w_channel",  # elements between two input channels of the weights (O)
    "u_position",  # elements between two of the 16 positions of U (C * vector width)
    "u_channel",  # elements between two input channels of U (vector width)
    "vectors",  # whole SIMD vectors of output channels (a masked one follows if tail)
    "taps",  # with ``copies``: the taps as ``blocked`` packs them (else not touched)
    "taps_tap",  # elements between two taps there (C * vector width)
    "taps_channel",  # elements between two input channels there (vector width)
)

WeightFunction = Callable[..., None]
Value = Any  # an llvmlite IR value


def _ir_source(dtype: np.dtype, lanes: int, tail: int, copies: bool = False) -> str:
    """LLVM IR of the weight transform (see the module docstring); with ``copies`` it
    also stores each loaded tap vector, as it is, into ``taps``."""
    from llvmlite import ir

    scalar = ir.FloatType() if dtype == np.float32 else ir.DoubleType()
    vec = ir.VectorType(scalar, lanes)
    wide = ir.VectorType(ir.DoubleType(), lanes)
    i64, i32, ptr = ir.IntType(64), ir.IntType(32), ir.PointerType()
    module = ir.Module(name="dilconv_winograd_weights")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [i64] * len(ARGUMENTS)), name="u")
    args = dict(zip(ARGUMENTS, fn.args, strict=True))
    suffix = f"v{lanes}f{8 * dtype.itemsize}"
    mask_type = ir.VectorType(ir.IntType(1), lanes)
    masked_load = ir.Function(
        module,
        ir.FunctionType(vec, [ptr, i32, mask_type, vec]),
        name=f"llvm.masked.load.{suffix}.p0",
    )
    size = dtype.itemsize
    tail_mask = ir.Constant(mask_type, [1 if k < tail else 0 for k in range(lanes)])
    half = ir.Constant(wide, [0.5] * lanes)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    w_base, u_base = b.inttoptr(args["w"], ptr), b.inttoptr(args["packed"], ptr)
    taps_base = b.inttoptr(args["taps"], ptr)
    zeros = ir.Constant(vec, [0.0] * lanes)
    counters = {name: b.alloca(i64, name=name) for name in ("c", "v")}

    def const(v: int) -> Value:
        return ir.Constant(i64, v)

    def halves(g0: Value, g1: Value, g2: Value) -> tuple[Value, Value]:
        """``(g0 + g1 + g2) / 2`` and ``(g0 - g1 + g2) / 2``."""
        outer = b.fadd(g0, g2)
        return b.fmul(b.fadd(outer, g1), half), b.fmul(b.fsub(outer, g1), half)

    def vector(c: Value, at: Value, masked: bool) -> None:
        w_at = b.add(b.mul(c, args["w_channel"]), at)
        taps_at = b.add(b.mul(c, args["taps_channel"]), at)
        g = []
        for tap in range(9):
            p = b.gep(w_base, [b.add(w_at, b.mul(const(tap), args["w_tap"]))], source_etype=scalar)
            if masked:  # lanes past the channels read as zeros, and are stored as zeros
                value = b.call(masked_load, [p, ir.Constant(i32, size), tail_mask, zeros])
            else:
                value = b.load(p, typ=vec, align=size)
            if copies:
                where = b.add(taps_at, b.mul(const(tap), args["taps_tap"]))
                b.store(value, b.gep(taps_base, [where], source_etype=scalar), align=size)
            g.append(value if dtype == np.float64 else b.fpext(value, wide))
        # G w, down each kernel column k: rows 0, 1, 2, 3 of t[.][k]
        t: list[list[Value]] = [[], [], [], []]
        for k in range(3):
            g0, g1, g2 = g[k], g[3 + k], g[6 + k]
            h1, h2 = halves(g0, g1, g2)
            for i, value in enumerate((g0, h1, h2, g2)):
                t[i].append(value)
        u_at = b.add(b.mul(c, args["u_channel"]), at)
        for i in range(4):  # (G w) G^T, along each row i
            h1, h2 = halves(*t[i])
            for j, value in enumerate((t[i][0], h1, h2, t[i][2])):
                where = b.add(u_at, b.mul(const(4 * i + j), args["u_position"]))
                p = b.gep(u_base, [where], source_etype=scalar)
                b.store(value if dtype == np.float64 else b.fptrunc(value, vec), p, align=size)

    def channel(c: Value) -> None:
        tile_kernel.emit_loop(
            b,
            counters["v"],
            const(0),
            args["vectors"],
            lambda v: vector(c, b.mul(v, const(lanes)), False),
        )
        if tail:
            vector(c, b.mul(args["vectors"], const(lanes)), True)

    tile_kernel.emit_loop(b, counters["c"], const(0), args["channels"], channel)
    b.ret_void()
    return str(module)


@functools.lru_cache(maxsize=32)
def weight_function(dtype: np.dtype, lanes: int, tail: int, copies: bool = False) -> WeightFunction:
    """The compiled weight transform, as a ctypes function.

    ``tail``: output channels in a last, partly used vector (0: none); its other
    lanes are stored as zeros. ``copies``: the taps are also stored as they were
    read, in ``blocked``'s packing (its output blocks are Winograd's), so that a call
    whose edges run ``blocked``'s tile loop packs its weights in the same pass.
    Compiled once per process and kept on disk like the tile loops.
    """
    with tile_kernel.COMPILING:
        source = _ir_source(np.dtype(dtype), lanes, tail, copies)
        return tile_kernel.compile_function(source, "u", len(ARGUMENTS))

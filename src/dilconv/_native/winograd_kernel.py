"""Machine code for :mod:`dilconv._methods.winograd`: the tile transforms of F(2x2, 3x3).

Winograd's minimal filtering algorithm F(2x2, 3x3) computes a 2x2 tile of output
from a 4x4 tile of input with 16 multiplications per channel pair instead of 36.
With dilation ``d`` the tile's pixels are ``d`` apart: outputs ``(y0 + d i,
x0 + d j)`` for ``i, j`` in 0, 1, reading inputs ``(y0 - pad + d a, x0 - pad + d b)``
for ``a, b`` in 0..3, which is ordinary F(2x2, 3x3) on one phase of the image.

Three functions are compiled here, as LLVM IR through ``llvmlite`` like the tile loop
of :mod:`~dilconv._native.tile_kernel` (whose compiler and disk cache they share):

``input``
    ``V[p, t, :] = (B^T D_t B)[p]`` for every tile ``t`` of a band: the 16 input
    vectors of the tile (or zeros where they fall in the padding) transformed
    channel-vector by channel-vector, with ``B^T = [[1, 0, -1, 0], [0, 1, 1, 0],
    [0, -1, 1, 0], [0, 1, 0, -1]]``.
``output``
    ``Y_t = A^T M_t A`` with ``A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]``, the four
    output vectors stored where they fall inside the output (else to a scratch
    vector). Each tile's four vectors also add ``s - s`` (``s`` their sum) into a
    running vector, added to the ``flags`` vector at the end: 0 while every output
    is finite, NaN once one is NaN or Inf. A NaN or Inf that a tile reads makes
    some of its outputs non-finite (every input enters ``V`` and every ``M``
    position enters an output with a coefficient of +-1, and no sum of Inf and
    finite values is finite), so a caller learns whether the call read one without
    another pass over the input (see :func:`dilconv._methods.winograd.finite_guard`).
    A sum that overflows in the transforms or products is flagged the same way. The
    check costs a few vector operations per output vector.
``gradient``
    ``G[p, t, :] = (A g_t A^T)[p]``: the adjoint of ``output``, for the weight
    gradient (:mod:`dilconv._grad_weight_winograd`). It reads a tile's four output
    gradient vectors (zeros where they fall outside the output) and stores 16, as
    ``input`` does.

Between them the caller forms ``M[p] = V[p] @ U[p]`` for the 16 positions ``p``
(one matrix product each, by BLAS). The tiles are the product of two tables of
element offsets: one entry per tile row (its 4 input rows, or its 2 output rows)
and one per tile column (4 input, or 2 output columns); ``-1`` marks a row or
column outside the image. SIMD vectors run along the channels, the last one
masked when the channel count is not a whole number of vectors.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from dilconv._native import tile_kernel

#: Argument order of both compiled functions (all int64; pointers as addresses).
ARGUMENTS = (
    "source",  # input image (NHWC) for ``input``, the products M for ``output``, the
    # output gradient (NHWC) for ``gradient``
    "spare",  # zeros (``input``, ``gradient``) or a scratch vector (``output``), one
    # channel row long
    "target",  # V for ``input``, G for ``gradient``; the output image for ``output``
    "flags",  # ``output``: ``lanes`` scalars, finite while every output it writes is
    "rows",  # address of the (n_rows, 4 or 2) int64 row offsets of the tiles
    "n_rows",
    "columns",  # address of the (n_columns, 4 or 2) int64 column offsets
    "n_columns",
    "vectors",  # whole SIMD vectors per channel row
    "tile",  # elements between consecutive tiles in V or M
    "position",  # elements between a tile's 16 positions in V or M
)

#: Input transform ``B^T``: row ``i`` of the 4x4 result as coefficients of the 4 inputs.
B_T = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
#: Output transform ``A^T``.
A_T = ((1, 1, 1, 0), (0, 1, -1, -1))
#: Its adjoint ``A`` (4x2), the output gradient's transform: row ``i`` of ``A g A^T``
#: as coefficients of the 2 rows of a 2x2 tile.
A = tuple(tuple(row[i] for row in A_T) for i in range(4))

#: The transforms compiled.
KINDS = ("input", "output", "gradient")

TransformFunction = Callable[..., None]
Value = Any  # an llvmlite IR value


def _combine(b: Any, terms: list[Value], coefficients: tuple[int, ...]) -> Value:
    """``sum(c * t)`` for coefficients in {-1, 0, 1}, as adds and subtracts."""
    total = None
    for c, t in zip(coefficients, terms, strict=True):
        if c == 0:
            continue
        if total is None:
            total = t if c == 1 else b.fneg(t)
        else:
            total = b.fadd(total, t) if c == 1 else b.fsub(total, t)
    return total


def _tree_sum(b: Any, terms: list[Value]) -> Value:
    """The sum of ``terms``, added in pairs (a short dependency chain)."""
    while len(terms) > 1:
        pairs = [b.fadd(terms[k], terms[k + 1]) for k in range(0, len(terms) - 1, 2)]
        terms = pairs + terms[len(terms) - len(terms) % 2 :]
    return terms[0]


def add_to_flags(b: Any, address: Value, finite: Value, vec: Any, size: int) -> None:
    """``flags += finite``: the vector at ``address`` (an i64) plus the running vector
    in the stack slot ``finite`` (the output transforms' check, module docstring)."""
    from llvmlite import ir

    flags = b.inttoptr(address, ir.PointerType())
    seen = b.load(flags, typ=vec, align=size)
    b.store(b.fadd(seen, b.load(finite, typ=vec)), flags, align=size)


def _ir_source(dtype: np.dtype, lanes: int, tail: int, kind: str, stream: bool = False) -> str:
    """LLVM IR of the ``input``, ``output`` or ``gradient`` transform (see the module
    docstring); ``stream``: ``output``'s whole vectors stored past the caches where
    the target and the spare vector are whole vectors (see :func:`transform_function`)."""
    from llvmlite import ir

    scalar = ir.FloatType() if dtype == np.float32 else ir.DoubleType()
    vec = ir.VectorType(scalar, lanes)
    i64, i32, ptr = ir.IntType(64), ir.IntType(32), ir.PointerType()
    module = ir.Module(name=f"dilconv_winograd_{kind}")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [i64] * len(ARGUMENTS)), name=kind)
    args = dict(zip(ARGUMENTS, fn.args, strict=True))
    mask_type = ir.VectorType(ir.IntType(1), lanes)
    masked_load, masked_store = tile_kernel.masked_memory(module, vec)
    size = dtype.itemsize
    align = ir.Constant(i32, size)
    tail_mask = ir.Constant(mask_type, [1 if k < tail else 0 for k in range(lanes)])
    zero_vec = ir.Constant(vec, [0.0] * lanes)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    source, spare, target = (b.inttoptr(args[k], ptr) for k in ("source", "spare", "target"))
    rows, columns = b.inttoptr(args["rows"], ptr), b.inttoptr(args["columns"], ptr)
    counters = {name: b.alloca(i64, name=name) for name in ("r", "s", "c")}
    width = 4 if kind == "input" else 2  # pixels a tile reads or writes per axis
    forward = kind != "output"  # reads an image, stores 16 positions
    coefficients = B_T if kind == "input" else A
    finite = b.alloca(vec, name="finite")  # the running ``s - s`` of ``output``
    b.store(zero_vec, finite)

    def const(v: int) -> Value:
        return ir.Constant(i64, v)

    def loop(name: str, stop: Value, body: Callable[[Value], None]) -> None:
        tile_kernel.emit_loop(b, counters[name], const(0), stop, body)

    def offsets(table: Value, i: Value) -> list[Value]:
        base = b.mul(i, const(width))
        return [
            b.load(b.gep(table, [b.add(base, const(k))], source_etype=i64), typ=i64)
            for k in range(width)
        ]

    def load(base: Value, at: Value, masked: bool) -> Value:
        p = b.gep(base, [at], source_etype=scalar)
        if not masked:
            return b.load(p, typ=vec, align=size)
        return b.call(masked_load, [p, align, tail_mask, zero_vec])

    # only the stream variant names the metadata (the others' IR, and disk-cache keys,
    # stay as they were)
    nontemporal = module.add_metadata([ir.Constant(i32, 1)]) if stream else None

    def store(value: Value, base: Value, at: Value, masked: bool, past: bool = False) -> None:
        p = b.gep(base, [at], source_etype=scalar)
        if masked:
            b.call(masked_store, [value, p, align, tail_mask])
        elif past:  # a whole aligned vector, past the caches
            b.store(value, p, align=lanes * size).set_metadata("nontemporal", nontemporal)
        else:
            b.store(value, p, align=size)

    def tile(r_off: list[Value], s: Value, t: Value, past: bool) -> None:
        c_off = offsets(columns, s)
        # one base pointer per tile pixel: the image where inside, else the spare row
        bases = []
        for ro in r_off:
            for co in c_off:
                inside = b.and_(
                    b.icmp_signed(">=", ro, const(0)), b.icmp_signed(">=", co, const(0))
                )
                image = b.gep(source if forward else target, [b.add(ro, co)], source_etype=scalar)
                bases.append(b.select(inside, image, spare))
        plane = b.mul(t, args["tile"])

        def vector(at: Value, masked: bool) -> None:
            here = b.add(plane, at)
            if forward:
                d = [load(base, at, masked) for base in bases]
                rows_t = [
                    [
                        _combine(b, [d[width * a + j] for a in range(width)], co)
                        for j in range(width)
                    ]
                    for co in coefficients
                ]
                for i in range(4):
                    for j, co in enumerate(coefficients):
                        value = _combine(b, rows_t[i], co)
                        where = b.add(here, b.mul(const(4 * i + j), args["position"]))
                        store(value, target, where, masked)
            else:
                m = [
                    load(source, b.add(here, b.mul(const(p), args["position"])), masked)
                    for p in range(16)
                ]
                rows_t = [
                    [_combine(b, [m[4 * a + j] for a in range(4)], co) for j in range(4)]
                    for co in A_T
                ]
                y = [_combine(b, rows_t[i], co) for i in range(2) for co in A_T]
                for k, value in enumerate(y):
                    store(value, bases[k], at, masked, past)
                total = _tree_sum(b, y)
                b.store(b.fadd(b.load(finite, typ=vec), b.fsub(total, total)), finite)

        loop("c", args["vectors"], lambda c: vector(b.mul(c, const(lanes)), False))
        if tail:
            vector(b.mul(args["vectors"], const(lanes)), True)

    def every_row(past: bool) -> None:
        def row(r: Value) -> None:
            r_off = offsets(rows, r)
            first = b.mul(r, args["n_columns"])
            loop("s", args["n_columns"], lambda s: tile(r_off, s, b.add(first, s), past))

        loop("r", args["n_rows"], row)

    if stream:  # the caller's offsets are whole vectors; the two pointers are checked
        vector_bytes = const(lanes * size - 1)
        misaligned = b.and_(b.or_(args["target"], args["spare"]), vector_bytes)
        with b.if_else(b.icmp_unsigned("==", misaligned, const(0))) as (past, through):
            with past:
                every_row(True)
            with through:
                every_row(False)
        b.fence("seq_cst")
    else:
        every_row(False)
    if kind == "output":
        add_to_flags(b, args["flags"], finite, vec, size)
    b.ret_void()
    return str(module)


@functools.lru_cache(maxsize=64)
def transform_function(
    dtype: np.dtype, lanes: int, tail: int, kind: str, stream: bool = False
) -> TransformFunction:
    """The compiled ``kind`` ("input", "output" or "gradient") transform, as a ctypes
    function.

    ``tail``: channels in a last, partly used vector (0: none). ``stream`` (``output``
    only): its whole vectors are stored past the caches (non-temporal stores, then a
    fence), for a result that outgrows the last-level cache, so that no output line
    is fetched before it is written; the caller's row and column offsets must be
    whole vectors, and where the target or the spare vector is not, the function
    stores as the plain variant does. Compiled once per process and kept on disk like
    the tile loops.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if stream and kind != "output":
        raise ValueError(f"only the output transform stores past the caches, not {kind!r}")
    with tile_kernel.COMPILING:
        source = _ir_source(np.dtype(dtype), lanes, tail, kind, stream)
        return tile_kernel.compile_function(source, kind, len(ARGUMENTS))

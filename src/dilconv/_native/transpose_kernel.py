"""Machine code for moving activations between NCHW and NHWC (:mod:`dilconv._layout`).

``target[j * target_row + i] = source[i * source_row + j]`` for ``i`` in
``[0, rows)`` and ``j`` in ``[0, columns)``: the transpose of a ``rows x columns``
matrix. NCHW to NHWC is ``rows`` = channels and ``columns`` = pixels; the way back
swaps them. NumPy's strided copy does this element by element in the target's order,
each element from another page of the source (24 ms for 64 channels of 256x256
here, ten times a plain copy; a tiled scalar loop still ran at memory latency,
its power-of-two strides evicting its own lines). Here the matrix is cut into
square tiles of one SIMD vector a side (:func:`tile_shape`), transposed in
registers by shuffles: a stack of tiles along ``i`` is loaded as vectors (each
source row a run along ``j``), and each target row of them stored as one 64-byte
run. The rows and columns past the last whole tile are copied one element at a
time. The ``stream`` variant (for moves that outgrow the last-level cache, see
:func:`dilconv._native.channels.streams`) stores the whole tiles past the caches
(non-temporal stores, then a fence) where the target and its row pitch are whole
vectors, so that no target line is fetched before it is written; elsewhere it
stores as the plain variant does.

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

#: Bytes of a cache line: each tile's loads along ``j`` and stores along ``i`` are
#: whole lines where the host's vectors are as wide.
LINE_BYTES = 64


def tile_shape(dtype: np.dtype) -> tuple[int, int]:
    """``(lanes, stack)``: tiles of ``lanes x lanes`` elements, one vector a side (the
    host's widest, 32 bytes at least: 16 float32 with AVX-512, 8 with AVX), and
    ``stack`` of them along ``i`` per pass over ``j``, so that every target run is a
    whole line. With 64-byte vectors each source row's load is a whole line too: at a
    power-of-two row pitch (channels of 256x256) the rows of a tile share one cache
    set, and half-line loads lost their line before its other half was read."""
    vector = min(LINE_BYTES, max(32, tile_kernel.host_lanes()["bytes"]))
    return vector // np.dtype(dtype).itemsize, LINE_BYTES // vector


TransposeFunction = Callable[..., None]
Value = Any  # an llvmlite IR value


def _ir_source(dtype: np.dtype, stream: bool = False) -> str:
    """LLVM IR of the tiled transpose (see the module docstring)."""
    from llvmlite import ir

    scalar = ir.FloatType() if dtype == np.float32 else ir.DoubleType()
    lanes, stack = tile_shape(dtype)
    vec = ir.VectorType(scalar, lanes)
    i64, i32, ptr = ir.IntType(64), ir.IntType(32), ir.PointerType()
    module = ir.Module(name="dilconv_transpose")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [i64] * len(ARGUMENTS)), name="t")
    args = dict(zip(ARGUMENTS, fn.args, strict=True))
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    nontemporal = module.add_metadata([ir.Constant(i32, 1)])
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

    def swap_blocks(rows: list[Value]) -> list[Value]:
        """The columns of the ``lanes x lanes`` tile whose rows are ``rows``: at each
        scale ``h`` (half the tile, then a quarter, ...) rows ``i`` and ``i + h`` swap
        their off-diagonal ``h``-wide blocks, one two-input shuffle per new row."""
        rows, mask = list(rows), ir.VectorType(i32, lanes)
        h = lanes // 2
        while h:
            low = [j if j & h == 0 else lanes + j - h for j in range(lanes)]
            high = [j + h if j & h == 0 else lanes + j for j in range(lanes)]
            for i in (i for i in range(lanes) if i & h == 0):
                a, z = rows[i], rows[i + h]
                rows[i] = b.shuffle_vector(a, z, ir.Constant(mask, low))
                rows[i + h] = b.shuffle_vector(a, z, ir.Constant(mask, high))
            h //= 2
        return rows

    height = lanes * stack
    whole_rows = b.mul(b.sdiv(rows, const(height)), const(height))
    whole_columns = b.mul(b.sdiv(columns, const(lanes)), const(lanes))

    def tile(i0: Value, j0: Value, past_caches: bool) -> None:
        """The stacked tiles at rows ``[i0, i0 + height)``, columns ``[j0, j0 + lanes)``."""
        halves = []
        for s in range(stack):
            loaded = []
            for r in range(lanes):
                at = b.add(b.mul(b.add(i0, const(s * lanes + r)), args["source_row"]), j0)
                p = b.gep(source, [at], source_etype=scalar)
                loaded.append(b.load(p, typ=vec, align=dtype.itemsize))
            halves.append(loaded)
        turned = [swap_blocks(loaded) for loaded in halves]
        for c in range(lanes):  # target row j0 + c: column c of each stacked tile
            row_at = b.add(b.mul(b.add(j0, const(c)), args["target_row"]), i0)
            for s, columns in enumerate(turned):
                p = b.gep(target, [b.add(row_at, const(s * lanes))], source_etype=scalar)
                if past_caches:  # whole aligned vectors, past the caches
                    stored = b.store(columns[c], p, align=lanes * dtype.itemsize)
                    stored.set_metadata("nontemporal", nontemporal)
                else:
                    b.store(columns[c], p, align=dtype.itemsize)

    def whole_tiles(past_caches: bool) -> None:
        """Every whole stacked tile. The inner loop runs along the rows of the array
        with the longer row pitch (the rows a tile's vectors spread over), so that
        each of them is read, or written, as one stream: NCHW to NHWC sweeps ``j``,
        NHWC to NCHW sweeps ``i``. Both ways between 64 channels of 256x256 and rows
        of NHWC staging, 32 rows at a time, against the 8x8 tiles of extracts and
        inserts before: 1.29-1.33 -> 1.03-1.17 ms into the rows, 3.11-3.13 ->
        1.27-1.28 ms out of them (3.11 and 1.91 with the loops the other way round)."""

        def row_blocks(j0: Value) -> None:
            tile_kernel.emit_loop(
                b, counters["ib"], const(0), b.sdiv(rows, const(height)),
                lambda k: tile(b.mul(k, const(height)), j0, past_caches),
            )  # fmt: skip

        def column_blocks(i0: Value) -> None:
            tile_kernel.emit_loop(
                b, counters["jb"], const(0), b.sdiv(columns, const(lanes)),
                lambda k: tile(i0, b.mul(k, const(lanes)), past_caches),
            )  # fmt: skip

        longer_source = b.icmp_signed(">=", args["source_row"], args["target_row"])
        with b.if_else(longer_source) as (along_j, along_i):
            with along_j:
                tile_kernel.emit_loop(b, counters["ib"], const(0), b.sdiv(rows, const(height)),
                                      lambda k: column_blocks(b.mul(k, const(height))))  # fmt: skip
            with along_i:
                tile_kernel.emit_loop(b, counters["jb"], const(0), b.sdiv(columns, const(lanes)),
                                      lambda k: row_blocks(b.mul(k, const(lanes))))  # fmt: skip

    if stream:  # every tile's stores aligned: the target and its row pitch
        vector_bytes = const(lanes * dtype.itemsize - 1)
        misaligned = b.or_(
            b.and_(args["target"], vector_bytes),
            b.and_(b.mul(args["target_row"], const(dtype.itemsize)), vector_bytes),
        )
        with b.if_else(b.icmp_unsigned("==", misaligned, const(0))) as (past, through):
            with past:
                whole_tiles(True)
            with through:
                whole_tiles(False)
    else:
        whole_tiles(False)

    def last_columns(i: Value) -> None:
        tile_kernel.emit_loop(b, counters["j"], whole_columns, columns,
                              lambda j: scalar_copy(i, j))  # fmt: skip

    tile_kernel.emit_loop(b, counters["i"], const(0), whole_rows, last_columns)

    def last_rows(i: Value) -> None:
        tile_kernel.emit_loop(b, counters["rj"], const(0), columns, lambda j: scalar_copy(i, j))

    tile_kernel.emit_loop(b, counters["ri"], whole_rows, rows, last_rows)
    if stream:
        b.fence("seq_cst")
    b.ret_void()
    return str(module)


@functools.lru_cache(maxsize=4)
def transpose_function(dtype: np.dtype, stream: bool = False) -> TransposeFunction:
    """The compiled transpose for ``dtype`` (float32 or float64), as a ctypes function.

    Compiled once per process and kept on disk like the tile loops.
    """
    with tile_kernel.COMPILING:
        return tile_kernel.compile_function(
            _ir_source(np.dtype(dtype), stream), "t", len(ARGUMENTS)
        )

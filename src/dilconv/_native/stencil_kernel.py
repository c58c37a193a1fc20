"""Machine code for one channel: whole output rows of a ``kh x kw`` stencil in one pass.

Output row ``q`` of the flattened ``(N * Ho)`` rows is image ``n = q // Ho``, row
``i = q % Ho``; kernel row ``a`` reads input row ``i * row_stride - top + a *
row_dilation`` and kernel column ``b`` input column ``j - left + b *
column_dilation`` for output column ``j`` (unit column stride). Each SIMD vector of
outputs is the sum of its ``kh * kw`` taps, a chain of multiply-adds per kernel row
and the rows' sums added, written once: no zeroing and no reloading of the output.

Where a vector's taps all read input (its columns and its kernel rows inside the
image) its loads are plain; elsewhere, near the borders, they are masked, a lane
whose column or row lies outside reading a zero, and so is the store of the last,
partial vector of a row. So the padding costs nothing but those masks, at any
dilation.

With ``stream``, a whole vector whose address is a multiple of its size is stored
past the caches (a non-temporal store): an output larger than the caches would be
read into them before each line is written and then evicted unread. A fence at
the end orders those stores before whatever the caller does next.

With ``columns`` (the column offsets ``c * column_dilation - left`` compiled in, a
few vectors apart at most), the vectors of a row whose taps all read input and whose
aligned neighbours lie inside the row are *carried*: each kernel column's sum down
the kernel rows, ``t_c[m] = sum_a w[a, c] x[row_a, m]``, is made once per aligned
vector ``m`` (``kh`` aligned loads, ``kh * kw`` multiply-adds per output vector) and
kept in registers while the outputs that read it pass; an output vector is then
``sum_c t_c`` moved by column ``c``'s offset, a lane shift of two neighbouring
vectors. The generic loop loads every tap, most of them straddling two cache lines;
this one loads ``kh`` whole vectors, and prefetches the newest kernel row
:data:`PREFETCH_VECTORS` ahead. Arguments whose offsets differ from the compiled ones
run the generic loop.

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
    "x",  # input address, (N, H, W)
    "w",  # the kh * kw taps, row by row
    "out",  # output address, (N, Ho, Wo)
    "first",  # output rows [first, last) of the flattened N * Ho
    "last",
    "height",  # H
    "width",  # W
    "out_rows",  # Ho
    "out_width",  # Wo
    "row_stride",
    "row_dilation",
    "column_dilation",
    "top",  # padding rows above the image
    "left",  # padding columns left of it
)

#: Taps unrolled in the loop at most (a larger kernel runs Numba's row loop).
MAX_TAPS = 64

#: Aligned vectors a carried column keeps at most (see :func:`carried_window`).
MAX_WINDOW = 4

#: How far ahead (vectors) the carried loop prefetches its newest kernel row, the one
#: that comes from memory (the others were read a few rows before and are in L2). On
#: ``seed`` (2048^2, 3x3) it took the loop from 1.26-1.31x ``np.copyto`` to 1.07-1.16x
#: here (AMD EPYC, Zen 4); 16 and 64 vectors gave less, and prefetching every kernel
#: row 1.16-1.21x. A prefetch is a hint: past the array it reads nothing and never faults.
PREFETCH_VECTORS = 32

StencilFunction = Callable[..., None]
Value = Any  # an llvmlite IR value


def lanes(dtype: np.dtype) -> int:
    """Elements per SIMD vector of ``dtype`` on this CPU (16 float32 with AVX-512)."""
    return max(1, tile_kernel.host_lanes()["bytes"] // np.dtype(dtype).itemsize)


def carried_window(columns: tuple[int, ...], n_lanes: int) -> tuple[int, int]:
    """The aligned vectors ``[k + low, k + high]`` that output vector ``k`` reads
    through column offsets ``columns`` (elements), ``n_lanes`` to a vector.

    Examples
    --------
    >>> carried_window((-4, 0, 4), 16)  # 3 taps, dilation 4, 'same'
    (-1, 1)
    >>> carried_window((-16, 0, 16), 16)
    (-1, 1)
    >>> carried_window((0,), 16)
    (0, 0)
    """
    low = min(c // n_lanes for c in columns)
    high = max(c // n_lanes + (1 if c % n_lanes else 0) for c in columns)
    return low, high


def carried_fits(columns: tuple[int, ...], n_lanes: int) -> bool:
    """Whether the carried loop's window for offsets ``columns`` is at most
    :data:`MAX_WINDOW` vectors.

    >>> carried_fits((-4, 0, 4), 16), carried_fits((0, 40, 80), 16)
    (True, False)
    """
    low, high = carried_window(columns, n_lanes)
    return high - low + 1 <= MAX_WINDOW


def _ir_source(
    dtype: np.dtype, kh: int, kw: int, stream: bool, columns: tuple[int, ...] | None
) -> str:
    """LLVM IR of the row loop (see the module docstring)."""
    from llvmlite import ir

    scalar = ir.FloatType() if dtype == np.float32 else ir.DoubleType()
    n_lanes, size = lanes(dtype), dtype.itemsize
    vec = ir.VectorType(scalar, n_lanes)
    i64, i32, i1, ptr = ir.IntType(64), ir.IntType(32), ir.IntType(1), ir.PointerType()
    index_vec, mask_type = ir.VectorType(i64, n_lanes), ir.VectorType(i1, n_lanes)
    module = ir.Module(name="dilconv_stencil")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [i64] * len(ARGUMENTS)), name="s")
    args = dict(zip(ARGUMENTS, fn.args, strict=True))
    suffix = f"v{n_lanes}f{8 * size}"
    fma = ir.Function(module, ir.FunctionType(vec, [vec] * 3), name=f"llvm.fma.{suffix}")
    masked_load, masked_store = tile_kernel.masked_memory(module, vec)
    prefetch_type = ir.FunctionType(ir.VoidType(), [ptr, i32, i32, i32])
    prefetch = ir.Function(module, prefetch_type, name="llvm.prefetch.p0")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    names = ("q", "head", "k2", "k1", "tail", "kc")
    counters = {name: b.alloca(i64, name=name) for name in names}
    zero = ir.Constant(vec, [0.0] * n_lanes)
    lane_index = ir.Constant(index_vec, list(range(n_lanes)))
    nontemporal = module.add_metadata([ir.Constant(i32, 1)])

    def const(v: int) -> Value:
        return ir.Constant(i64, v)

    def splat(value: Value, type_: Any) -> Value:
        one = b.insert_element(ir.Constant(type_, ir.Undefined), value, ir.Constant(i32, 0))
        zeros = ir.Constant(ir.VectorType(i32, n_lanes), [0] * n_lanes)
        return b.shuffle_vector(one, ir.Constant(type_, ir.Undefined), zeros)

    def added(values: list[Value]) -> Value:
        """The sum of ``values``, added pairwise."""
        while len(values) > 1:
            pairs = [b.fadd(values[u], values[u + 1]) for u in range(0, len(values) - 1, 2)]
            values = pairs + values[len(pairs) * 2 :]
        return values[0]

    def address(base: Value, element: Value) -> Value:
        return b.inttoptr(b.add(base, b.mul(element, const(size))), ptr)

    w = b.inttoptr(args["w"], ptr)
    taps = [
        splat(b.load(b.gep(w, [const(t)], source_etype=scalar), typ=scalar), vec)
        for t in range(kh * kw)
    ]
    width, out_width = args["width"], args["out_width"]
    width_vec = splat(width, index_vec)
    out_width_vec = splat(out_width, index_vec)
    image = b.mul(args["height"], width)
    # output column j reads input column j + shift[c] through kernel column c
    shifts = [b.sub(b.mul(const(c), args["column_dilation"]), args["left"]) for c in range(kw)]
    fast_lo = b.sub(const(0), shifts[0])  # from here every column reads input...
    fast_hi = b.sub(width, b.add(shifts[kw - 1], const(n_lanes)))  # ...up to here
    same_columns = ir.Constant(i1, 0)
    window: list[list[Value]] = []
    offsets = columns or ()
    low, high = carried_window(offsets, n_lanes) if offsets else (0, 0)
    if columns is not None:  # checked by stencil_function
        window = [[b.alloca(vec) for _ in range(high - low)] for _ in range(kw)]
        same_columns = functools.reduce(
            b.and_, [b.icmp_signed("==", shifts[c], const(v)) for c, v in enumerate(columns)]
        )

    def row(q: Value) -> None:
        n = b.sdiv(q, args["out_rows"])
        i = b.sub(q, b.mul(n, args["out_rows"]))
        top_row = b.sub(b.mul(i, args["row_stride"]), args["top"])
        starts, inside = [], []
        for a in range(kh):
            r = b.add(top_row, b.mul(const(a), args["row_dilation"]))
            inside.append(
                b.and_(b.icmp_signed(">=", r, const(0)), b.icmp_signed("<", r, args["height"]))
            )
            # a row outside reads nothing (its loads fully masked) but points at
            # the image's first row: a masked load from an address that is not
            # mapped takes the CPU hundreds of cycles, even with no lane loaded
            safe = b.select(inside[-1], r, const(0))
            starts.append(b.add(b.mul(n, image), b.mul(safe, width)))
        every_row = functools.reduce(b.and_, inside)
        out_row = b.mul(q, out_width)

        def taps_sum(j: Value, masked: bool) -> Value:
            """The sum of the taps of the vector of outputs from column ``j``."""
            masks = []
            if masked:
                for c in range(kw):
                    cols = b.add(splat(b.add(j, shifts[c]), index_vec), lane_index)
                    masks.append(
                        b.and_(
                            b.icmp_signed(">=", cols, ir.Constant(index_vec, [0] * n_lanes)),
                            b.icmp_signed("<", cols, width_vec),
                        )
                    )
            sums = []
            for a in range(kh):
                total = None
                row_mask = splat(inside[a], mask_type) if masked else None
                for c in range(kw):
                    p = address(args["x"], b.add(starts[a], b.add(j, shifts[c])))
                    if masked:
                        mask = b.and_(masks[c], row_mask)
                        value = b.call(masked_load, [p, ir.Constant(i32, size), mask, zero])
                    else:
                        value = b.load(p, typ=vec, align=size)
                    tap = taps[a * kw + c]
                    total = (
                        b.fmul(tap, value) if total is None else b.call(fma, [tap, value, total])
                    )
                sums.append(total)
            return added(sums)  # the kernel rows' sums

        def out_at(j: Value) -> Value:
            return b.inttoptr(b.add(args["out"], b.mul(b.add(out_row, j), const(size))), ptr)

        def border(k: Value) -> None:
            """Vector ``k`` of a row with masked loads and a masked store."""
            j = b.mul(k, const(n_lanes))
            cols = b.add(splat(j, index_vec), lane_index)
            mask = b.icmp_signed("<", cols, out_width_vec)
            b.call(masked_store, [taps_sum(j, True), out_at(j), ir.Constant(i32, size), mask])

        def store(total: Value, j: Value, past_caches: bool) -> None:
            if past_caches:
                kept = b.store(total, out_at(j), align=n_lanes * size)
                kept.set_metadata("nontemporal", nontemporal)
            else:
                b.store(total, out_at(j), align=size)

        def inner(k: Value, step: int, past_caches: bool) -> None:
            """Vectors ``[k, k + step)`` with plain loads, stored as they are."""
            for u in range(step):
                j = b.mul(b.add(k, const(u)), const(n_lanes))
                store(taps_sum(j, False), j, past_caches)

        def generic_run(k0: Value, k1: Value, past_caches: bool) -> None:
            pairs = b.sdiv(b.sub(k1, k0), const(2))
            tile_kernel.emit_loop(
                b, counters["k2"], const(0), pairs,
                lambda p: inner(b.add(k0, b.mul(p, const(2))), 2, past_caches),
            )  # fmt: skip
            tile_kernel.emit_loop(
                b, counters["k1"], b.add(k0, b.mul(pairs, const(2))), k1,
                lambda k: inner(k, 1, past_caches),
            )  # fmt: skip

        def column_sums(m: Value) -> list[Value]:
            """``t_c`` of aligned vector ``m`` for every kernel column ``c``."""
            rows = [
                b.load(address(args["x"], b.add(starts[a], b.mul(m, const(n_lanes)))),
                       typ=vec, align=size)
                for a in range(kh)
            ]  # fmt: skip
            sums = []
            for c in range(kw):
                total = b.fmul(taps[c], rows[0])
                for a in range(1, kh):
                    total = b.call(fma, [taps[a * kw + c], rows[a], total])
                sums.append(total)
            return sums

        def carried_run(ka: Value, kb: Value, past_caches: bool) -> None:
            """Vectors ``[ka, kb)`` from the carried column sums (module docstring)."""
            width_ = high - low + 1
            with b.if_then(b.icmp_signed("<", ka, kb)):
                for slot in range(width_ - 1):  # the window before vector ka's newest
                    for c, value in enumerate(column_sums(b.add(ka, const(low + slot)))):
                        b.store(value, window[c][slot])

                def step(k: Value) -> None:
                    ahead = b.add(k, const(high + PREFETCH_VECTORS))
                    at = address(args["x"], b.add(starts[kh - 1], b.mul(ahead, const(n_lanes))))
                    b.call(prefetch, [at, ir.Constant(i32, 0), ir.Constant(i32, 3),
                                      ir.Constant(i32, 1)])  # fmt: skip
                    newest = column_sums(b.add(k, const(high)))
                    held = [
                        [b.load(window[c][slot], typ=vec) for slot in range(width_ - 1)]
                        + [newest[c]]
                        for c in range(kw)
                    ]
                    parts = []
                    for c, offset in enumerate(offsets):
                        q, r = divmod(offset, n_lanes)
                        here = held[c][q - low]
                        if r:
                            mask = ir.Constant(
                                ir.VectorType(i32, n_lanes), list(range(r, r + n_lanes))
                            )
                            here = b.shuffle_vector(here, held[c][q - low + 1], mask)
                        parts.append(here)
                    store(added(parts), b.mul(k, const(n_lanes)), past_caches)
                    for c in range(kw):
                        for slot in range(width_ - 1):
                            b.store(held[c][slot + 1], window[c][slot])

                tile_kernel.emit_loop(b, counters["kc"], ka, kb, step)

        def inner_run(k0: Value, k1: Value, past_caches: bool) -> None:
            if columns is None:
                generic_run(k0, k1, past_caches)
                return
            # carried where the compiled offsets are the call's and the window's
            # aligned vectors lie inside the row: [ka, kb) within [k0, k1)
            ka = b.select(b.icmp_signed(">", const(-low), k0), const(-low), k0)
            ka = b.select(b.icmp_signed(">", ka, k1), k1, ka)
            kb = b.sub(b.sdiv(width, const(n_lanes)), const(high))
            kb = b.select(b.icmp_signed("<", kb, k1), kb, k1)
            kb = b.select(b.icmp_signed("<", kb, ka), ka, kb)
            ka = b.select(same_columns, ka, k1)
            kb = b.select(same_columns, kb, k1)
            generic_run(k0, ka, past_caches)
            carried_run(ka, kb, past_caches)
            generic_run(kb, k1, past_caches)

        # vectors [k0, k1) read input at every tap and end inside the row
        vectors = b.sdiv(b.add(out_width, const(n_lanes - 1)), const(n_lanes))
        k0 = b.sdiv(b.add(fast_lo, const(n_lanes - 1)), const(n_lanes))
        k0 = b.select(b.icmp_signed("<", k0, const(0)), const(0), k0)
        k1 = b.add(b.sdiv(fast_hi, const(n_lanes)), const(1))
        k1 = b.select(b.icmp_signed("<", fast_hi, const(0)), const(0), k1)
        k1 = b.select(b.icmp_signed(">", k1, b.sdiv(out_width, const(n_lanes))),
                      b.sdiv(out_width, const(n_lanes)), k1)  # fmt: skip
        k1 = b.select(every_row, k1, const(0))
        k0 = b.select(b.icmp_signed(">", k0, k1), k1, k0)
        tile_kernel.emit_loop(b, counters["head"], const(0), k0, border)
        if stream:
            first_at = b.ptrtoint(out_at(b.mul(k0, const(n_lanes))), i64)
            aligned = b.icmp_unsigned("==", b.and_(first_at, const(n_lanes * size - 1)), const(0))
            with b.if_else(aligned) as (past, through):
                with past:
                    inner_run(k0, k1, True)
                with through:
                    inner_run(k0, k1, False)
        else:
            inner_run(k0, k1, False)
        tile_kernel.emit_loop(b, counters["tail"], k1, vectors, border)

    tile_kernel.emit_loop(b, counters["q"], args["first"], args["last"], row)
    if stream:
        b.fence("seq_cst")
    b.ret_void()
    return str(module)


_FUNCTIONS: dict[tuple[object, ...], StencilFunction] = {}


def stencil_function(
    dtype: np.dtype, kh: int, kw: int, stream: bool, columns: tuple[int, ...] | None = None
) -> StencilFunction:
    """The compiled row loop for ``dtype`` (float32 or float64) and a ``kh x kw``
    kernel, as a ctypes function; ``columns``: the column offsets of the carried loop
    (module docstring; None: the generic loop only). Compiled once per process and
    kept on disk like the tile loops."""
    if kh * kw > MAX_TAPS or min(kh, kw) < 1:
        raise ValueError(f"a {kh}x{kw} kernel: expected 1 to {MAX_TAPS} taps")
    if columns is not None:
        if len(columns) != kw or not carried_fits(columns, lanes(np.dtype(dtype))):
            raise ValueError(
                f"columns {columns}: expected {kw} offsets within {MAX_WINDOW} vectors"
            )
        columns = tuple(int(c) for c in columns)
    key = (np.dtype(dtype), kh, kw, stream, columns)
    return tile_kernel.compiled_once(_FUNCTIONS, key, lambda: _ir_source(*key), "s", len(ARGUMENTS))

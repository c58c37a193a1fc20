"""Machine code for :mod:`dilconv._methods.blocked`: a register-blocked tile loop.

One compiled function computes the output *tiles* of some output rows. A tile is
``pixels`` consecutive output pixels of one row times a block of output channels
of one group. The tile's ``pixels x vectors`` sums (SIMD registers of ``lanes``
values) stay in registers through all its taps and input channels: for each tap
and input channel the kernel loads ``vectors`` weight vectors and, for each
pixel, broadcasts one input value and does ``vectors`` fused multiply-adds. Only
then are the sums stored (the last vector under a mask when the block is not a
whole number of vectors), or added to the output when summing input channels in
blocks. This is the register blocking of oneDNN's direct convolution, written as
LLVM IR with ``llvmlite`` (Numba's compiler back end, already a dependency) and
compiled for the host CPU.

The tiles are the product of two tables of :data:`FIELDS` integers: one per
output row (element offsets of its input row and of its output row, and the
kernel rows that read real input there) and one per tile of a row (offsets of
its first pixel's input and output columns, and the kernel columns that read real
input there). The offsets add up; the input is never padded, because every tap in
those ranges reads real input.

The functions are compiled once per ``(dtype, pixels, vectors, tail, accumulate)``
in a process (40-70 ms each here; the machine code is kept on disk, see
:mod:`dilconv._native.disk_cache`, so a later process loads it instead) and called through
``ctypes``, which releases the GIL, so rows can be shared among threads.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

# The compiler and its cache live in their own modules; these names stay here too.
from dilconv._native.compiler import COMPILING as COMPILING
from dilconv._native.compiler import compile_function as compile_function
from dilconv._native.compiler import compiled_once
from dilconv._native.disk_cache import cache_dir as cache_dir

#: Integers per column descriptor: x offset, out offset, first tap, one past the
#: last tap (kernel columns, for a tile of a row).
FIELDS = 4
#: Integers per row descriptor: the same (kernel rows, for an output row), then
#: the weights' offset; where the loop adds to its output, ``-1 - offset`` marks a
#: row that starts from zero instead (the first depth tap of a volume's row).
ROW_FIELDS = 5

#: Argument order of the compiled function (all int64; pointers as addresses).
ARGUMENTS = (
    "x",  # input address (NHWC, first channel of the group)
    "w",  # packed weights address: (taps, C_group, vectors * lanes)
    "out",  # output address (first channel of the group)
    "rows",  # address of the (n_rows, ROW_FIELDS) int64 output row descriptors
    "n_rows",
    "columns",  # address of the (n_columns, FIELDS) int64 tile column descriptors
    "n_columns",
    "channels",  # input channels summed by this call
    "w_row",  # elements between kernel rows in the weights
    "w_col",  # elements between kernel columns in the weights
    "w_channel",  # elements between summed channels in the weights
    "x_channel",  # elements between summed channels in the input (1)
    "x_pixel",  # elements between a tile's pixels' inputs (stride * C)
    "x_tap_row",  # elements between kernel rows (dilation * W * C)
    "x_tap_col",  # elements between kernel columns (dilation * C)
    "out_pixel",  # elements between a tile's pixels in the output (O)
)

TileFunction = Callable[..., None]
Value = Any  # an llvmlite IR value


#: LLVM's names of the CPUs whose widest vector multiply-adds run as two halves, at
#: half the rate per instruction: half-width registers do as many multiply-adds per
#: cycle there. Zen 1 splits 256-bit operations, Zen 4 512-bit ones (on a Zen 4
#: EPYC the 21-channel ``context`` layer ran 10-20% faster on 3 x 8 lanes than on
#: 2 x 16); the client cores with AVX-512 issue 512-bit FMAs on one port, 256-bit
#: ones on two. Zen 5 and server Xeons run 512-bit FMAs at full rate (on a Zen 5
#: EPYC the same layer took 2.1 ms on 2 x 16 lanes, 2.8 ms on 3 x 8).
HALF_RATE_WIDEST = frozenset(
    {"znver1", "znver4", "cannonlake", "icelake-client", "tigerlake", "rocketlake"}
)

#: CPU features that only server Xeons have (AMX: Sapphire Rapids and later), which
#: run 512-bit FMAs at full rate whatever LLVM names them. A virtual machine may show a
#: server part under a client model number: a 2-vCPU Xeon with AMX, a float32 matmul
#: peak of 350 GFLOP/s at 2.6 GHz (full rate), reported model 167, which LLVM names
#: ``rocketlake``; on it the 21-channel ``context`` layer took 2.8-3.0 ms on 2 x 16
#: lanes and 3.2-3.4 ms on 3 x 8.
SERVER_ONLY_FEATURES = ("amx-tile",)


def widest_at_half_rate(cpu_name: str, features: Mapping[str, bool]) -> bool:
    """Whether the widest vector multiply-adds of the CPU LLVM calls ``cpu_name``,
    with ``features``, run at half rate (see :data:`HALF_RATE_WIDEST`).

    Examples
    --------
    >>> widest_at_half_rate("znver4", {"avx512f": True})
    True
    >>> widest_at_half_rate("rocketlake", {"avx512f": True, "amx-tile": True})
    False
    """
    if any(features.get(name) for name in SERVER_ONLY_FEATURES):
        return False
    return cpu_name in HALF_RATE_WIDEST


@functools.lru_cache(maxsize=1)
def host_lanes() -> dict[str, int]:
    """SIMD lanes per register and register count for float32 on this CPU, and
    ``halved``: 1 where its widest multiply-adds run at half rate
    (:data:`HALF_RATE_WIDEST`), else 0."""
    from dilconv import _imports

    llvm = _imports.whole("llvmlite.binding")

    features = llvm.get_host_cpu_features()
    halved = int(widest_at_half_rate(llvm.get_host_cpu_name(), features))
    if features.get("avx512f"):
        return {"bytes": 64, "registers": 32, "halved": halved}
    if features.get("avx"):
        return {"bytes": 32, "registers": 16, "halved": halved}
    return {"bytes": 16, "registers": 16, "halved": 0}


def masked_memory(module: Any, vec: Any) -> tuple[Any, Any]:
    """Declarations in ``module`` of LLVM's masked load and store of vector type
    ``vec``: ``load(pointer, alignment, mask, passthrough)`` and ``store(value,
    pointer, alignment, mask)``. A lane whose mask bit is off is neither read nor
    written (a fully masked access to an address that is not mapped is still slow:
    hundreds of cycles)."""
    from llvmlite import ir

    lanes, element = vec.count, vec.element
    suffix = f"v{lanes}f{8 * (4 if isinstance(element, ir.FloatType) else 8)}"
    i32, ptr, mask_type = ir.IntType(32), ir.PointerType(), ir.VectorType(ir.IntType(1), lanes)
    load = ir.Function(
        module,
        ir.FunctionType(vec, [ptr, i32, mask_type, vec]),
        name=f"llvm.masked.load.{suffix}.p0",
    )
    store = ir.Function(
        module,
        ir.FunctionType(ir.VoidType(), [vec, ptr, i32, mask_type]),
        name=f"llvm.masked.store.{suffix}.p0",
    )
    return load, store


def emit_loop(
    b: Any, counter: Value, start: Value, stop: Value, body: Callable[[Value], None]
) -> None:
    """``for i in range(start, stop): body(i)`` at builder ``b``'s position, counting
    in the stack slot ``counter`` (an i64 ``alloca``)."""
    from llvmlite import ir

    fn = b.function
    name = counter.name
    b.store(start, counter)
    head = fn.append_basic_block(f"{name}_head")
    inner = fn.append_basic_block(f"{name}_body")
    done = fn.append_basic_block(f"{name}_done")
    b.branch(head)
    b.position_at_end(head)
    i = b.load(counter)
    b.cbranch(b.icmp_signed("<", i, stop), inner, done)
    b.position_at_end(inner)
    body(i)
    b.store(b.add(b.load(counter), ir.Constant(ir.IntType(64), 1)), counter)
    b.branch(head)
    b.position_at_end(done)


def _ir_source(
    dtype: np.dtype,
    pixels: int,
    vectors: int,
    lanes: int,
    tail: int,
    accumulate: bool,
    columns_outer: bool = False,
) -> str:
    """LLVM IR of the tile loop (see the module docstring); ``columns_outer``: the
    column table's taps in the outer loop (see :func:`tile_function`)."""
    from llvmlite import ir

    scalar = ir.FloatType() if dtype == np.float32 else ir.DoubleType()
    vec = ir.VectorType(scalar, lanes)
    i64 = ir.IntType(64)
    ptr = ir.PointerType()
    module = ir.Module(name="dilconv_tiles")
    fnty = ir.FunctionType(ir.VoidType(), [i64] * len(ARGUMENTS))
    fn = ir.Function(module, fnty, name="tiles")
    args = dict(zip(ARGUMENTS, fn.args, strict=True))
    suffix = f"v{lanes}f{8 * dtype.itemsize}"
    fma = ir.Function(module, ir.FunctionType(vec, [vec] * 3), name=f"llvm.fma.{suffix}")
    mask_type = ir.VectorType(ir.IntType(1), lanes)
    masked_store = ir.Function(
        module,
        ir.FunctionType(ir.VoidType(), [vec, ptr, ir.IntType(32), mask_type]),
        name=f"llvm.masked.store.{suffix}.p0",
    )
    masked_load = ir.Function(
        module,
        ir.FunctionType(vec, [ptr, ir.IntType(32), mask_type, vec]),
        name=f"llvm.masked.load.{suffix}.p0",
    )
    size = dtype.itemsize

    entry = fn.append_basic_block("entry")
    b = ir.IRBuilder(entry)
    x_base = b.inttoptr(args["x"], ptr)
    w_base = b.inttoptr(args["w"], ptr)
    out_base = b.inttoptr(args["out"], ptr)
    rows = b.inttoptr(args["rows"], ptr)
    # Each pixel's input offset from the tile's first, computed once and kept in a
    # register: behind an empty assembly statement LLVM cannot see that they are
    # multiples of one stride, which it otherwise rebuilds from each other inside
    # the innermost loop (integer operations that share ports with the multiply-adds).
    opaque = ir.FunctionType(i64, [i64])
    pixel_offsets = [
        b.asm(opaque, "", "=r,0", [b.mul(ir.Constant(i64, p_i), args["x_pixel"])], False)
        for p_i in range(pixels)
    ]
    columns = b.inttoptr(args["columns"], ptr)
    acc = [[b.alloca(vec, name=f"acc{p}_{v}") for v in range(vectors)] for p in range(pixels)]
    names = ("r", "t", "ky", "kx", "c", "x_run", "w_run")
    counters = {name: b.alloca(i64, name=name) for name in names}

    def loop(name: str, start: Value, stop: Value, body: Callable[[Value], None]) -> None:
        emit_loop(b, counters[name], start, stop, body)

    def field(table: Value, i: Value, k: int, width: int = FIELDS) -> Value:
        index = b.add(b.mul(i, ir.Constant(i64, width)), ir.Constant(i64, k))
        return b.load(b.gep(table, [index], source_etype=i64), typ=i64)

    def out_address(out_off: Value, p_i: int, v: int) -> Value:
        base = b.add(out_off, b.mul(ir.Constant(i64, p_i), args["out_pixel"]))
        return b.gep(out_base, [b.add(base, ir.Constant(i64, v * lanes))], source_etype=scalar)

    def mask(v: int) -> Value | None:
        if v < vectors - 1 or not tail:
            return None
        return ir.Constant(mask_type, [1 if k < tail else 0 for k in range(lanes)])

    def load(base: Value, at: Value, m: Value | None) -> Value:
        """A vector from ``base[at:at + lanes]``, only the lanes under mask ``m``."""
        p = b.gep(base, [at], source_etype=scalar)
        if m is None:
            return b.load(p, typ=vec, align=size)
        zero = ir.Constant(vec, [0.0] * lanes)
        return b.call(masked_load, [p, ir.Constant(ir.IntType(32), size), m, zero])

    def tile(r: Value, t: Value) -> None:
        x_off = b.add(field(rows, r, 0, ROW_FIELDS), field(columns, t, 0))
        out_off = b.add(field(rows, r, 1, ROW_FIELDS), field(columns, t, 1))
        w_off = field(rows, r, 4, ROW_FIELDS)
        fresh = None
        if accumulate:  # a row whose weights' offset is -1 - offset starts from zero
            fresh = b.icmp_signed("<", w_off, ir.Constant(i64, 0))
            w_off = b.select(fresh, b.sub(ir.Constant(i64, -1), w_off), w_off)

        def load_out(p_i: int, v: int) -> Value:
            base = b.add(out_off, b.mul(ir.Constant(i64, p_i), args["out_pixel"]))
            return load(out_base, b.add(base, ir.Constant(i64, v * lanes)), mask(v))

        ky0, ky1 = field(rows, r, 2, ROW_FIELDS), field(rows, r, 3, ROW_FIELDS)
        kx0, kx1 = field(columns, t, 2), field(columns, t, 3)
        zero = ir.Constant(vec, [0.0] * lanes)

        def start(add: bool) -> None:
            for p_i, row in enumerate(acc):
                for v, a in enumerate(row):
                    b.store(load_out(p_i, v) if add else zero, a)

        if fresh is None:
            start(False)
        else:  # the output is not read where the row starts afresh
            with b.if_else(fresh) as (from_zero, from_output):
                with from_zero:
                    start(False)
                with from_output:
                    start(True)

        def kernel_tap(ky: Value, kx: Value) -> None:
            x_tap = b.add(x_off, b.add(b.mul(ky, args["x_tap_row"]), b.mul(kx, args["x_tap_col"])))
            w_tap = b.add(b.mul(ky, args["w_row"]), b.mul(kx, args["w_col"]))
            w_tap = b.add(w_off, w_tap)

            def channel(x_at: Value, w_at: Value) -> None:
                weights = []
                for v in range(vectors):
                    at = b.add(w_at, ir.Constant(i64, v * lanes))
                    weights.append(load(w_base, at, mask(v)))
                for p_i in range(pixels):
                    at = b.add(x_at, pixel_offsets[p_i])
                    value = b.load(b.gep(x_base, [at], source_etype=scalar), typ=scalar)
                    splat = b.insert_element(
                        ir.Constant(vec, ir.Undefined), value, ir.Constant(ir.IntType(32), 0)
                    )
                    splat = b.shuffle_vector(
                        splat,
                        ir.Constant(vec, ir.Undefined),
                        ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes),
                    )
                    for v in range(vectors):
                        a = acc[p_i][v]
                        b.store(b.call(fma, [splat, weights[v], b.load(a, typ=vec)]), a)

            # the input and weight offsets are carried from one channel to the
            # next (an add each, not a multiply)
            x_run, w_run = counters["x_run"], counters["w_run"]
            b.store(x_tap, x_run)
            b.store(w_tap, w_run)

            def next_channel(_c: Value) -> None:
                x_at, w_at = b.load(x_run, typ=i64), b.load(w_run, typ=i64)
                channel(x_at, w_at)
                b.store(b.add(x_at, args["x_channel"]), x_run)
                b.store(b.add(w_at, args["w_channel"]), w_run)

            loop("c", ir.Constant(i64, 0), args["channels"], next_channel)

        def kernel_row(ky: Value) -> None:
            loop("kx", kx0, kx1, lambda kx: kernel_tap(ky, kx))

        if columns_outer:  # the column table's taps outermost (tiles down a column)
            loop("kx", kx0, kx1, lambda kx: loop("ky", ky0, ky1, lambda ky: kernel_tap(ky, kx)))
        else:
            loop("ky", ky0, ky1, kernel_row)
        for p_i in range(pixels):
            for v in range(vectors):
                p, m = out_address(out_off, p_i, v), mask(v)
                value = b.load(acc[p_i][v], typ=vec)
                if m is None:
                    b.store(value, p, align=size)
                else:
                    b.call(masked_store, [value, p, ir.Constant(ir.IntType(32), size), m])

    def row(r: Value) -> None:
        loop("t", ir.Constant(i64, 0), args["n_columns"], lambda t: tile(r, t))

    loop("r", ir.Constant(i64, 0), args["n_rows"], row)
    b.ret_void()
    return str(module)


_FUNCTIONS: dict[tuple[object, ...], TileFunction] = {}


def tile_function(
    dtype: np.dtype,
    pixels: int,
    vectors: int,
    lanes: int,
    tail: int,
    accumulate: bool,
    columns_outer: bool = False,
) -> TileFunction:
    """The compiled tile loop for these parameters, as a ctypes function.

    ``tail``: output channels in the last vector when it is partly used (0: full);
    ``accumulate``: add to the output instead of overwriting it; ``columns_outer``:
    the column table's taps in the outer loop, for tiles that run down a column
    (:func:`dilconv._methods.blocked.column_region_calls`), whose column table holds
    the kernel rows: each output then sums its taps in the order a row's tile
    does. Compiled once per process, its machine code kept on disk
    (:func:`disk_cache.cache_dir`) for the next one.
    """
    dtype = np.dtype(dtype)
    # the key (and the code) of the usual order stays as it was
    key = (dtype, pixels, vectors, lanes, tail, accumulate) + ((True,) if columns_outer else ())

    def source() -> str:
        return _ir_source(dtype, pixels, vectors, lanes, tail, accumulate, columns_outer)

    return compiled_once(_FUNCTIONS, key, source, "tiles", len(ARGUMENTS))

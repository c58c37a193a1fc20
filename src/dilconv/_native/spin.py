"""Waiting without sleeping: a compiled spin loop that runs without the GIL.

A thread that goes to sleep between calls hands its CPU back to the operating
system; on a virtual machine the CPU itself then halts, and waking it again can
take milliseconds (measured here: a worker thread woken 30 ms after its last job
started 1.5-2.7 ms late, and a 3.2 ms call took 6.5 ms). OpenMP runtimes avoid
this by letting idle workers spin for a while before they sleep; so do dilconv's
(:mod:`dilconv._native.pool`), through :func:`wait_for_change`, for
:func:`spin_seconds` (``DILCONV_SPIN_MS``, default :data:`DEFAULT_SPIN_MS`).

The loop is a few lines of LLVM IR compiled with llvmlite (like the tile loops);
it reads the watched integer with an atomic load and executes the CPU's pause
instruction between reads. Workers spin only in a process that has already
loaded LLVM for a compiled method: loading it just to wait would add about 50 MiB
to the process (enough to stall a Dask worker with a 256 MiB limit). Elsewhere,
or where it cannot be compiled, waiting falls back to sleeping at once.

Like every compiled function here, the loop never receives a bare address: it is a
:class:`~dilconv._native.calls.Kernel` (:func:`spin_kernel`) whose ``cell``
argument is an int64 array that each wait's :class:`~dilconv._native.calls.Call`
holds (a ``Ref``), so the cell lives as long as the loop reads it, and in checked
mode (``DILCONV_CHECK=1``) the one element it reads is checked before each slice.
"""

from __future__ import annotations

import ctypes
import functools
import sys
import time
from collections.abc import Callable

import numpy as np

from dilconv._native import calls

#: Milliseconds an idle worker spins before it sleeps, unless ``DILCONV_SPIN_MS`` says.
#: Shorter than the pause between timed calls (:data:`SETTLE_SECONDS`), so a
#: spinning worker never competes with the next contender.
DEFAULT_SPIN_MS = 20.0

#: Pause (spent in :func:`busy_pause`) before a call is timed against others, long
#: enough for every library's idle threads to stop spinning: OpenBLAS's spin for up
#: to 2**28 cycles after each threaded product (measured here: the 64-channel
#: ``context`` layer on ``winograd`` took 29 ms after a 30 ms pause that followed a
#: NumPy matrix product, 28 ms after 60 ms, 15 ms after 100 ms or more, as with
#: no product before it).
SETTLE_SECONDS = 0.15

#: Length of one native spin between two reads of the clock.
SLICE_SECONDS = 1e-3

SpinFunction = Callable[[int, int, int], int]

#: The spin loop's arguments, in order (all int64): the watched cell's address, the
#: value seen, the most reads to make.
ARGUMENTS = ("cell", "seen", "limit")

SIGNATURE = calls.Signature(
    "spin", (calls.Param("cell", "array"), calls.Param("seen", "int"), calls.Param("limit", "int"))
)


def spin_seconds() -> float:
    """How long an idle worker spins: ``dilconv.get_config()["spin_ms"]`` (0: never).

    ``DILCONV_SPIN_MS`` sets the default (milliseconds, at most 100).
    """
    from dilconv import _config

    return float(_config.get("spin_ms")) / 1000


def _ir_source(pause: bool) -> str:
    """``spin(cell, seen, limit)``: the int64 at address ``cell`` once it differs from
    ``seen``, or ``seen`` after ``limit`` reads (see :data:`ARGUMENTS`)."""
    from llvmlite import ir

    i64 = ir.IntType(64)
    module = ir.Module(name="dilconv_spin")
    fn = ir.Function(module, ir.FunctionType(i64, [i64, i64, i64]), name="spin")
    address, seen, limit = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    watched = b.inttoptr(address, ir.PointerType())
    count = b.alloca(i64)
    b.store(ir.Constant(i64, 0), count)
    head, body, changed, timeout = (
        fn.append_basic_block(name) for name in ("head", "body", "changed", "timeout")
    )
    b.branch(head)
    b.position_at_end(head)
    value = b.load_atomic(watched, "acquire", 8, typ=i64)
    b.cbranch(b.icmp_signed("!=", value, seen), changed, body)
    b.position_at_end(body)
    if pause:  # tells the core it is spinning: less power, no penalty on exit
        relax = ir.Function(module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
        b.call(relax, [])
    n = b.add(b.load(count), ir.Constant(i64, 1))
    b.store(n, count)
    b.cbranch(b.icmp_signed("<", n, limit), head, timeout)
    b.position_at_end(changed)
    b.ret(value)
    b.position_at_end(timeout)
    b.ret(seen)
    return str(module)


@functools.lru_cache(maxsize=1)
def spin_function() -> SpinFunction | None:
    """The compiled spin loop, or None where llvmlite cannot compile it (nor, for the
    rest of the process, where the address-space limit left too little to compile
    it: see :mod:`dilconv._native.headroom`)."""
    try:
        from dilconv import _imports
        from dilconv._native import compiler

        llvm = _imports.whole("llvmlite.binding")

        llvm.initialize_native_target()
        x86 = llvm.get_default_triple().split("-")[0] in ("x86_64", "i386", "i686")
        with compiler.COMPILING:
            source = _ir_source(pause=x86)
            return compiler.compile_function(source, "spin", len(ARGUMENTS), ctypes.c_int64)
    except (ImportError, RuntimeError, OSError, MemoryError):
        return None


def _extents(ints: object, read: object) -> dict[str, tuple[int, int] | None]:
    """The loop reads element 0 of ``cell`` and nothing else."""
    return {"cell": (0, 1)}


@functools.lru_cache(maxsize=1)
def spin_kernel() -> calls.Kernel | None:
    """The spin loop as a :class:`~dilconv._native.calls.Kernel` (None: not compiled)."""
    function = spin_function()
    if function is None:
        return None
    return calls.Kernel("spin(int64)", SIGNATURE, function, calls.INT64, _extents)


def _spin_call(kernel: calls.Kernel, cell: np.ndarray, seen: int, reads: int) -> calls.Call:
    """One wait's call: ``reads`` reads of ``cell[0]`` (held by the call) against ``seen``."""
    return kernel.call(cell=calls.Ref(cell), seen=seen, limit=reads)


@functools.lru_cache(maxsize=1)
def reads_per_second() -> float:
    """How many reads the spin loop makes in a second on this CPU (measured once)."""
    kernel = spin_kernel()
    if kernel is None:
        return 0.0
    reads = 20_000
    call = _spin_call(kernel, np.zeros(1, dtype=np.int64), 0, reads)
    start = time.perf_counter()
    call.result()
    return reads / max(time.perf_counter() - start, 1e-9)


def wait_for_change(cell: np.ndarray, seen: int, seconds: float, *, load: bool = False) -> int:
    """Spin until ``cell[0] != seen`` or ``seconds`` pass; the value read (``seen``: none).

    ``cell`` is a C-contiguous int64 array (``TypeError`` otherwise), held by the
    wait's call. The GIL is released while spinning. Returns ``seen`` at once where
    ``seconds`` is 0, where the spin loop cannot be compiled, or (unless ``load``)
    where this process has not loaded llvmlite for anything else.
    """
    if seconds <= 0 or not (load or "llvmlite.binding" in sys.modules):
        return seen
    kernel = spin_kernel()
    if kernel is None:
        return seen
    # In slices of about a millisecond, the clock read between them: the reads per
    # second measured once only set the slices' length, never the total time.
    reads = max(1, int(SLICE_SECONDS * reads_per_second()))
    call = _spin_call(kernel, cell, seen, reads)
    deadline = time.perf_counter() + seconds
    while True:
        now = call.result()
        if now != seen or time.perf_counter() >= deadline:
            return now


def busy_pause(seconds: float, threads: int) -> None:
    """Wait ``seconds`` with ``threads`` threads spinning (no CPU idles, none halts).

    Used between timed calls (``dilconv bench``, ``method="auto"`` with measuring):
    every contender then starts on CPUs that are awake. Falls back to
    :func:`time.sleep` without the spin loop.
    """
    if seconds <= 0:
        return
    if spin_function() is None:
        time.sleep(seconds)
        return
    import threading

    never = np.zeros(1, dtype=np.int64)
    helpers = [
        threading.Thread(target=wait_for_change, args=(never, 0, seconds), kwargs={"load": True})
        for _ in range(max(0, threads - 1))
    ]
    started = []
    for helper in helpers:
        try:
            helper.start()
        except RuntimeError:  # the system refused a thread: spin on fewer CPUs
            break
        started.append(helper)
    wait_for_change(never, 0, seconds, load=True)
    for helper in started:
        helper.join()

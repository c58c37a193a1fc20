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
"""

from __future__ import annotations

import ctypes
import functools
import sys
import time
from collections.abc import Callable

import numpy as np

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


def spin_seconds() -> float:
    """How long an idle worker spins: ``dilconv.get_config()["spin_ms"]`` (0: never).

    ``DILCONV_SPIN_MS`` sets the default (milliseconds, at most 100).
    """
    from dilconv import _config

    return float(_config.get("spin_ms")) / 1000


def _ir_source(pause: bool) -> str:
    """``spin(address, seen, limit)``: the int64 at ``address`` once it differs from
    ``seen``, or ``seen`` after ``limit`` reads."""
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
    """The compiled spin loop, or None where llvmlite cannot compile it."""
    try:
        import llvmlite.binding as llvm

        from dilconv._native import compiler

        llvm.initialize_native_target()
        x86 = llvm.get_default_triple().split("-")[0] in ("x86_64", "i386", "i686")
        with compiler.COMPILING:
            source = _ir_source(pause=x86)
            return compiler.compile_function(source, "spin", 3, ctypes.c_int64)
    except (ImportError, RuntimeError, OSError):
        return None


@functools.lru_cache(maxsize=1)
def reads_per_second() -> float:
    """How many reads the spin loop makes in a second on this CPU (measured once)."""
    spin = spin_function()
    if spin is None:
        return 0.0
    cell = np.zeros(1, dtype=np.int64)
    reads = 20_000
    start = time.perf_counter()
    spin(cell.ctypes.data, 0, reads)
    return reads / max(time.perf_counter() - start, 1e-9)


def wait_for_change(cell: np.ndarray, seen: int, seconds: float, *, load: bool = False) -> int:
    """Spin until ``cell[0] != seen`` or ``seconds`` pass; the value read (``seen``: none).

    The GIL is released while spinning. Returns ``seen`` at once where ``seconds``
    is 0, where the spin loop cannot be compiled, or (unless ``load``) where this
    process has not loaded llvmlite for anything else.
    """
    if seconds <= 0 or not (load or "llvmlite.binding" in sys.modules):
        return seen
    spin = spin_function()
    if spin is None:
        return seen
    # In slices of about a millisecond, the clock read between them: the reads per
    # second measured once only set the slices' length, never the total time.
    reads = max(1, int(SLICE_SECONDS * reads_per_second()))
    deadline = time.perf_counter() + seconds
    while True:
        now = int(spin(cell.ctypes.data, seen, reads))
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
    for helper in helpers:
        helper.start()
    wait_for_change(never, 0, seconds, load=True)
    for helper in helpers:
        helper.join()

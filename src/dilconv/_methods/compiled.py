"""Compiled shift and add: each tap's multiply-add on the columns where it reads input.

For one float channel with unit column stride the rows run in LLVM machine code
(:mod:`dilconv._native.stencil_rows`): each output vector the sum of its taps,
written once, the loads masked near the borders, and streamed past the caches
when the arrays outgrow them. Elsewhere (other dtypes and strides, and depthwise,
where each output channel reads one input channel) the output is built a row at
a time in machine code (Numba): the row is zeroed, then every tap that reads a
real input row adds ``weight * input`` over the output columns where it reads
real input columns, with the taps of a kernel row summed in one vectorised pass.
No zero is inserted and no padded copy is made, so the cost is the same at every
dilation and the only memory is the output. Rows of output are shared among
threads (the loops release the GIL).

The compiled loops are cached on disk after the first call on a machine (about
a second to compile); where Numba cannot cache (no writable source tree or home
directory) they are compiled in memory in each process, and
``choose_method(..., explain=True)`` says so. Numba is a dependency; where it
cannot be imported the method declines and ``"auto"`` chooses among the others.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Hashable, Mapping
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from dilconv import _imports
from dilconv._methods import shift_add
from dilconv._native import headroom, pool, stencil_rows
from dilconv._native import results as _results
from dilconv._spec import ConvSpec

#: The accumulation dtypes compiled.
DTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int64))

#: Multiply-adds (output elements times taps) below which one thread does all the
#: rows: handing rows to the pool costs about 0.1-0.3 ms here, which one thread
#: spends on about four million multiply-adds (timed on 128-512 pixel squares).
PARALLEL_WORK = 2**22

#: Multiply-adds in one piece of rows at most (tens of milliseconds on one core
#: here). A longer call is cut into more pieces than threads, taken in turn: one
#: thread running the pieces itself takes Ctrl+C between two of them, and the
#: running pieces of an interrupted call end soon after it.
PIECE_WORK = 2**28


@functools.lru_cache(maxsize=1)
def _unavailable() -> str | None:
    """Why the compiled loops cannot be used here, or None (checked once, on first need)."""
    if importlib.util.find_spec("numba") is None:
        return "Numba is not installed (pip install numba)"
    try:
        _loops()
    except (ImportError, RuntimeError) as err:
        return f"Numba could not be loaded: {err}"
    return None


def note() -> str | None:
    """How the loops run here, where that is worth saying (compiled in memory), or None."""
    if _unavailable() is not None:
        return None
    problem = _loops().CACHE_PROBLEM
    if problem is None:
        return None
    return (
        "compiled in memory in every process (its first call waits seconds), since Numba "
        f"cannot cache on disk here: {problem}"
    )


def numba_available() -> bool:
    """True when the compiled loops can be loaded: Numba is installed and, once loading
    was tried, loaded. Asking does not import Numba (which takes about 0.6 s; see
    :mod:`dilconv._first_calls`)."""
    if _unavailable.cache_info().currsize:
        return _unavailable() is None
    return _installed()


@functools.lru_cache(maxsize=1)
def _installed() -> bool:
    return importlib.util.find_spec("numba") is not None


#: (loop, dtype) that this process has loaded: Numba compiled (or loaded) them.
_LOADED: set[Hashable] = set()
#: What importing Numba and loading a loop is for, in the MemoryError without room.
_NUMBA = "loading and compiling Numba's loops"


def _loops() -> ModuleType:
    """Numba's loops (Numba imported whole on first use: see :mod:`dilconv._imports`)."""
    return _imports.whole("dilconv._native.jit_kernels", room=headroom.NUMBA_BYTES, what=_NUMBA)


def column_taps(spec: ConvSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per kernel column ``b``: input column offset and the output range ``[j0, j1)``.

    Output column ``j`` reads input column ``j * stride + off[b]`` through the taps
    of column ``b``; that is real input exactly for ``j0[b] <= j < j1[b]``.
    """
    kw, dw, left = spec.kernel_hw[1], spec.dilation[1], spec.pad[1][0]
    ranges = spec.tap_output_ranges(1)
    off = np.array([b * dw - left for b in range(kw)], dtype=np.int64)
    j0 = np.array([r[0] for r in ranges], dtype=np.int64)
    j1 = np.array([max(r[0], r[1]) for r in ranges], dtype=np.int64)
    return off, j0, j1


def conv(x: np.ndarray, w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Correlate NHWC ``x`` with HWIO ``w`` (one input channel per output channel).

    One channel runs LLVM's row loop where it applies (:func:`stencil_only`), without
    loading Numba; everything else runs Numba's loops.
    """
    stencil = stencil_only(spec)
    reason = refusal(spec) or (None if stencil else _unavailable())  # loads Numba
    if reason is not None:
        raise ValueError(f"method='compiled' cannot compute this call: {reason}")
    n, ho, wo, channels = spec.batch, *spec.out_hw, spec.out_channels
    x = np.ascontiguousarray(x, dtype=spec.dtype)
    rows = stencil_rows.folded(spec) if stencil else None
    if rows is not None:  # one kernel row of taps far apart: down rows of the cut
        cut = conv(x.reshape(rows.batch, *rows.in_hw, 1), w.reshape(*rows.kernel_hw, 1, 1), rows)
        return cut.reshape(n, ho, wo, channels)
    taps = np.ascontiguousarray(w[:, :, 0, :], dtype=spec.dtype)  # (kh, kw, O)
    y = _results.new_result((n, ho, wo, channels), spec.dtype, apart_from=x)
    if y.size == 0:
        return y
    plan = row_plan(spec, pool.num_threads())
    if stencil and stencil_rows.correlate(x[..., 0], taps[..., 0], y[..., 0], spec, plan.parts):
        return y  # LLVM's row loop (float, unit column stride, up to 64 taps)
    reason = _unavailable()  # Numba, where the row loop declined after all
    if reason is not None:
        raise ValueError(f"method='compiled' cannot compute this call: {reason}")
    loops = _loops()
    if channels == 1:
        kernel, args = loops.single_rows, (x[..., 0], taps[..., 0], y[..., 0])
    else:
        kernel, args = loops.depthwise_rows, (x, taps, y)
    # Numba compiles (or loads) the loop for these types on its first call: made
    # here once, on no rows (see dilconv._imports.load_once)
    _imports.load_once(
        _LOADED, (kernel.__name__, spec.dtype.str), lambda: kernel(*args, 0, 0, *plan.geometry),
        room=headroom.NUMBA_BYTES, what=_NUMBA,
    )  # fmt: skip
    pool.parallel_map(
        lambda p: kernel(*args, *p, *plan.geometry), plan.parts, key=("compiled", spec)
    )
    return y


@functools.lru_cache(maxsize=1024)
def stencil_route(spec: ConvSpec) -> bool:
    """Whether ``spec`` is for LLVM's row loop for one channel
    (:mod:`dilconv._native.stencil_rows`), which needs llvmlite but not Numba
    (remembered: a call asks several times)."""
    return spec.out_channels == 1 and stencil_rows.applies(spec)


def stencil_only(spec: ConvSpec) -> bool:
    """:func:`stencil_route`, with llvmlite loaded here where it is not yet."""
    return stencil_route(spec) and stencil_rows.load() is None


class RowPlan(NamedTuple):
    """What every call of one spec hands the row loops (see :func:`row_plan`)."""

    #: ``(first, end)`` of each thread's share of the flattened ``N * Ho`` output rows.
    parts: tuple[tuple[int, int], ...]
    #: Row stride, row dilation, top padding, column stride, then :func:`column_taps`.
    geometry: tuple[Any, ...]


@functools.lru_cache(maxsize=256)
def row_plan(spec: ConvSpec, threads: int) -> RowPlan:
    """The row shares and tap geometry of ``spec`` on ``threads`` threads (remembered).

    One share per thread, or more, shorter ones where a share would exceed
    :data:`PIECE_WORK`.

    Built once per spec: in a call of two milliseconds, building them again took
    0.1-0.2 ms when the interpreter's code was no longer in the CPU's caches.

    Examples
    --------
    >>> from dilconv._spec import make_spec
    >>> big = make_spec((1, 1, 2048, 2048), (1, 1, 3, 3), padding="same", dilation=2)
    >>> row_plan(big, threads=2).parts
    ((0, 1024), (1024, 2048))
    >>> small = make_spec((1, 1, 64, 64), (1, 1, 3, 3), padding="same", dilation=2)
    >>> row_plan(small, threads=2).parts  # too little work to hand to a second thread
    ((0, 64),)
    >>> huge = make_spec((1, 1, 4096, 4096), (1, 1, 31, 31), padding="same")
    >>> len(row_plan(huge, threads=2).parts)  # 16.1e9 multiply-adds: 31 pieces a thread
    62
    """
    rows = spec.batch * spec.out_hw[0]
    shares = min(threads, rows) if threaded(spec) else 1
    pieces = min(rows, shares * -(-work(spec) // (shares * PIECE_WORK)))
    bounds = np.linspace(0, rows, max(shares, pieces) + 1).astype(np.int64).tolist()
    parts = tuple(zip(bounds[:-1], bounds[1:], strict=True))
    taps = column_taps(spec)
    for table in taps:  # shared by every later call of the spec
        table.setflags(write=False)
    geometry = (spec.stride[0], spec.dilation[0], spec.pad[0][0], spec.stride[1], *taps)
    return RowPlan(parts, geometry)


def work(spec: ConvSpec) -> int:
    """Multiply-adds of the call: output elements times taps."""
    outputs = spec.batch * spec.out_hw[0] * spec.out_hw[1] * spec.out_channels
    return outputs * spec.kernel_hw[0] * spec.kernel_hw[1]


def threaded(spec: ConvSpec) -> bool:
    """True when the rows are shared among threads (enough work to pay for the hand-off)."""
    return work(spec) >= PARALLEL_WORK


def workspace_bytes(spec: ConvSpec) -> int:
    """No scratch memory beyond the output (and contiguous copies of strided input)."""
    return 0


def refusal(spec: ConvSpec) -> str | None:
    """Declines many-channel calls, other dtypes, and machines without Numba (except
    one channel where LLVM's row loop runs it)."""
    if spec.in_per_group != 1 or spec.out_per_group != 1:
        return "it needs one input channel per output channel (one channel, or depthwise)"
    if spec.dtype not in DTYPES:
        return f"it is compiled for float32, float64 and int64, not {spec.dtype}"
    if stencil_route(spec) and stencil_rows.usable():
        return None  # LLVM's row loop: Numba is not needed
    if not _installed():
        return "Numba is not installed (pip install numba)"
    return _unavailable() if _unavailable.cache_info().currsize else None


def estimate_seconds(spec: ConvSpec, costs: Mapping[str, float]) -> float:
    """Modelled time: the multiply-adds of the taps that read real input, per row pass."""
    area, _ = shift_add.tap_area(spec)
    rate = costs["compiled"] if spec.out_channels == 1 else costs["compiled_depthwise"]
    rate *= costs["threads"] if threaded(spec) and pool.num_threads() > 1 else 1
    rows = spec.batch * spec.out_hw[0] * spec.kernel_hw[0] * costs["compiled_row"]
    return costs["call"] + rows + area * spec.out_channels / rate

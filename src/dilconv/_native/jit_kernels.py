"""Numba-compiled row loops of :mod:`dilconv._methods.compiled` (imported on first use).

Every function here is compiled without the GIL (``nogil``), so the caller's own
threads run them side by side, and cached on disk (``cache``), so a process pays
the compilation once per machine; where Numba has nowhere to cache them (an
unwritable source tree and home directory), they are compiled in memory in every
process instead (:data:`CACHE_PROBLEM` says why). Each works on whole output rows ``[q0, q1)`` of
the flattened ``(N * Ho)`` row index, which is how the caller splits the work.

The arithmetic is a multiply-add per tap over the output columns where the tap
reads real input: ``j0[b] <= j < j1[b]`` for kernel column ``b``, reading input
column ``j * sw + off[b]``. These ranges come from :mod:`dilconv._shapes`; nothing
here computes a shape. Loops are written over contiguous slices so that LLVM
vectorises them; with one channel, up to three taps of a kernel row are summed
in one pass over the output row (a third of the loads and stores of one pass per
tap), and a 3x3 kernel whose three rows all lie inside the image is summed in one
pass that writes each output once (no zeroing, no reloads of the output row).
"""

from __future__ import annotations

import threading
from typing import Any

import numba
import numpy as np

from dilconv._native import forksafe


def _probe() -> None:  # pragma: no cover - decorated, never called
    """Decorated with ``cache=True`` to learn whether Numba can cache this file's loops."""


def _cache_problem() -> str | None:
    """Why Numba cannot keep this file's loops on disk, or None.

    Numba caches next to the source (``__pycache__``), else in ``NUMBA_CACHE_DIR``
    or the user's cache directory; where none is writable, decorating with
    ``cache=True`` raises.
    """
    try:
        numba.njit(cache=True)(_probe)
    except RuntimeError as err:
        return str(err)
    return None


def _release_numba_compile_lock() -> None:
    """In a forked child, a fresh Numba compile lock: one that another thread of the
    parent held at the fork would never be released, and the child's first
    compilation (a new dtype) would hang."""
    from numba.core import compiler_lock

    held = getattr(compiler_lock, "global_compiler_lock", None)
    if held is not None and hasattr(held, "_lock"):
        held._lock = threading.RLock()


forksafe.after_fork_in_child(_release_numba_compile_lock)

#: Why the loops are compiled in memory in every process (the first call waits seconds) instead
#: of once per machine, or None where Numba caches them on disk.
CACHE_PROBLEM = _cache_problem()
_CACHE = CACHE_PROBLEM is None

#: The loops: without the GIL, cached on disk where possible, no bounds checks,
#: fused multiply-adds.
_loop = numba.njit(nogil=True, cache=_CACHE, boundscheck=False, fastmath={"contract"})
#: The helpers, inlined into the loops that call them (a call per tap costs as much
#: as the arithmetic of a short row).
_inline = numba.njit(
    nogil=True, cache=_CACHE, boundscheck=False, fastmath={"contract"}, inline="always"
)


@_inline
def _madd1(ys: np.ndarray, x0: np.ndarray, w0: Any) -> None:
    for k in range(ys.shape[0]):
        ys[k] += w0 * x0[k]


@_inline
def _madd2(ys: np.ndarray, x0: np.ndarray, x1: np.ndarray, w0: Any, w1: Any) -> None:
    for k in range(ys.shape[0]):
        ys[k] += w0 * x0[k] + w1 * x1[k]


@_inline
def _madd3(
    ys: np.ndarray, x0: np.ndarray, x1: np.ndarray, x2: np.ndarray, w0: Any, w1: Any, w2: Any
) -> None:
    for k in range(ys.shape[0]):
        ys[k] += w0 * x0[k] + w1 * x1[k] + w2 * x2[k]


@_inline
def _one_tap(yr: np.ndarray, xr: np.ndarray, wv: Any, off: int, j0: int, j1: int, sw: int) -> None:
    """``yr[j] += wv * xr[j * sw + off]`` for ``j0 <= j < j1``."""
    if j1 <= j0:
        return
    s = j0 * sw + off
    if sw == 1:
        _madd1(yr[j0:j1], xr[s : s + j1 - j0], wv)
    else:
        _madd1(yr[j0:j1], xr[s : s + (j1 - j0 - 1) * sw + 1 : sw], wv)


@_inline
def _tap_group(
    yr: np.ndarray,
    xr: np.ndarray,
    wa: np.ndarray,
    off: np.ndarray,
    j0: np.ndarray,
    j1: np.ndarray,
    b: int,
    g: int,
    sw: int,
) -> None:
    """Taps ``b .. b + g - 1`` (``g <= 3``) of one kernel row, fused where all read input."""
    lo, hi = j0[b], j1[b]
    for t in range(1, g):
        lo, hi = max(lo, j0[b + t]), min(hi, j1[b + t])
    if g == 1 or hi <= lo:
        for t in range(g):
            _one_tap(yr, xr, wa[b + t], off[b + t], j0[b + t], j1[b + t], sw)
        return
    n = hi - lo
    s0, s1 = lo * sw + off[b], lo * sw + off[b + 1]
    s2 = lo * sw + off[b + g - 1]
    span = (n - 1) * sw + 1
    if sw == 1 and g == 2:
        _madd2(yr[lo:hi], xr[s0 : s0 + n], xr[s1 : s1 + n], wa[b], wa[b + 1])
    elif sw == 1:
        _madd3(
            yr[lo:hi],
            xr[s0 : s0 + n],
            xr[s1 : s1 + n],
            xr[s2 : s2 + n],
            wa[b],
            wa[b + 1],
            wa[b + 2],
        )
    elif g == 2:
        _madd2(yr[lo:hi], xr[s0 : s0 + span : sw], xr[s1 : s1 + span : sw], wa[b], wa[b + 1])
    else:
        _madd3(
            yr[lo:hi],
            xr[s0 : s0 + span : sw],
            xr[s1 : s1 + span : sw],
            xr[s2 : s2 + span : sw],
            wa[b],
            wa[b + 1],
            wa[b + 2],
        )
    for t in range(g):  # what each tap reads outside the shared range
        _one_tap(yr, xr, wa[b + t], off[b + t], j0[b + t], min(j1[b + t], lo), sw)
        _one_tap(yr, xr, wa[b + t], off[b + t], max(j0[b + t], hi), j1[b + t], sw)


@_inline
def _set9(
    ys: np.ndarray,
    a0: np.ndarray, a1: np.ndarray, a2: np.ndarray,
    b0: np.ndarray, b1: np.ndarray, b2: np.ndarray,
    c0: np.ndarray, c1: np.ndarray, c2: np.ndarray,
    w: np.ndarray,
) -> None:  # fmt: skip
    """``ys[k] =`` the 3x3 taps' sum, kernel row by kernel row, in one pass."""
    w00, w01, w02 = w[0, 0], w[0, 1], w[0, 2]
    w10, w11, w12 = w[1, 0], w[1, 1], w[1, 2]
    w20, w21, w22 = w[2, 0], w[2, 1], w[2, 2]
    for k in range(ys.shape[0]):
        top = w00 * a0[k] + w01 * a1[k] + w02 * a2[k]
        middle = w10 * b0[k] + w11 * b1[k] + w12 * b2[k]
        ys[k] = top + middle + (w20 * c0[k] + w21 * c1[k] + w22 * c2[k])


@_inline
def _rows3x3(
    yr: np.ndarray,
    xa: np.ndarray,
    xb: np.ndarray,
    xc: np.ndarray,
    w: np.ndarray,
    off: np.ndarray,
    j0: np.ndarray,
    j1: np.ndarray,
) -> bool:
    """A 3x3 kernel, unit column stride, every kernel row inside: one pass, no zeroing.

    The columns where all nine taps read input are written in one pass; the few
    columns near the edges where some tap reads padding are zeroed and summed tap
    by tap. Returns False (nothing written) where no column has all nine taps.
    """
    lo, hi = max(j0[0], max(j0[1], j0[2])), min(j1[0], min(j1[1], j1[2]))
    if hi <= lo:
        return False
    m = hi - lo
    s0, s1, s2 = lo + off[0], lo + off[1], lo + off[2]
    yr[:lo] = 0
    yr[hi:] = 0
    _set9(
        yr[lo:hi],
        xa[s0 : s0 + m], xa[s1 : s1 + m], xa[s2 : s2 + m],
        xb[s0 : s0 + m], xb[s1 : s1 + m], xb[s2 : s2 + m],
        xc[s0 : s0 + m], xc[s1 : s1 + m], xc[s2 : s2 + m],
        w,
    )  # fmt: skip
    for a in range(3):
        xr = xa if a == 0 else (xb if a == 1 else xc)
        for t in range(3):  # what each tap reads outside the shared range
            _one_tap(yr, xr, w[a, t], off[t], j0[t], min(j1[t], lo), 1)
            _one_tap(yr, xr, w[a, t], off[t], max(j0[t], hi), j1[t], 1)
    return True


@_loop
def single_rows(
    x: np.ndarray,
    w: np.ndarray,
    y: np.ndarray,
    q0: int,
    q1: int,
    sh: int,
    dh: int,
    top: int,
    sw: int,
    off: np.ndarray,
    j0: np.ndarray,
    j1: np.ndarray,
) -> None:
    """One channel: ``x (N, H, W)``, ``w (kh, kw)``, ``y (N, Ho, Wo)``, rows ``[q0, q1)``."""
    h, ho = x.shape[1], y.shape[1]
    kh, kw = w.shape
    for q in range(q0, q1):
        n = q // ho
        i = q - n * ho
        yr = y[n, i]
        r = i * sh - top
        if kh == 3 and kw == 3 and sw == 1 and r >= 0 and r + 2 * dh < h:
            if _rows3x3(yr, x[n, r], x[n, r + dh], x[n, r + 2 * dh], w, off, j0, j1):
                continue
        yr[:] = 0
        for a in range(kh):
            r = i * sh + a * dh - top
            if r < 0 or r >= h:
                continue
            xr = x[n, r]
            for b in range(0, kw, 3):
                _tap_group(yr, xr, w[a], off, j0, j1, b, min(3, kw - b), sw)


@_inline
def _channel_madd(ys: np.ndarray, xs: np.ndarray, wv: np.ndarray) -> None:
    """``ys[j, c] += wv[c] * xs[j, c]``."""
    for j in range(ys.shape[0]):
        for c in range(ys.shape[1]):
            ys[j, c] += wv[c] * xs[j, c]


@_loop
def depthwise_rows(
    x: np.ndarray,
    w: np.ndarray,
    y: np.ndarray,
    q0: int,
    q1: int,
    sh: int,
    dh: int,
    top: int,
    sw: int,
    off: np.ndarray,
    j0: np.ndarray,
    j1: np.ndarray,
) -> None:
    """Channel ``c`` out reads channel ``c`` in: ``x (N, H, W, C)``, ``w (kh, kw, C)``."""
    h, ho = x.shape[1], y.shape[1]
    kh, kw = w.shape[0], w.shape[1]
    for q in range(q0, q1):
        n = q // ho
        i = q - n * ho
        yr = y[n, i]
        yr[:, :] = 0
        for a in range(kh):
            r = i * sh + a * dh - top
            if r < 0 or r >= h:
                continue
            xr = x[n, r]
            for b in range(kw):
                if j1[b] <= j0[b]:
                    continue
                s = j0[b] * sw + off[b]
                if sw == 1:
                    _channel_madd(yr[j0[b] : j1[b]], xr[s : s + j1[b] - j0[b]], w[a, b])
                else:
                    span = (j1[b] - j0[b] - 1) * sw + 1
                    _channel_madd(yr[j0[b] : j1[b]], xr[s : s + span : sw], w[a, b])

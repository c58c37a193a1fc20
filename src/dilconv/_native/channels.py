"""Channels first to channels last and back, by the blocked transpose, on the pool.

:func:`move_channels` is what :mod:`dilconv._layout` calls for a caller's NCHW
(or NCW, NCDHW) activations: the compiled transpose of
:mod:`~dilconv._native.transpose_kernel`, each image's pixels shared among the
threads, where it applies; None where NumPy's copy should do it (small arrays,
other dtypes, or a process that has not loaded LLVM yet: a layout move never
makes a first call wait for the compiler, see :mod:`dilconv._first_calls`).
"""

from __future__ import annotations

import math
import sys

import numpy as np

from dilconv._native import calls, last_level_cache, pool, results

#: Elements below which NumPy's copy is as fast (and no pool hand-off is paid).
MIN_ELEMENTS = 2**16

#: Elements below which NumPy swaps a kernel's last two axes as fast
#: (:func:`swap_last_axes`): after a 150 ms pause, 3 x 3 x 64 x 256 took 0.19 ms in
#: NumPy, 0.65 compiled (the pool's hand-off); 3 x 3 x 256 x 2048, 6.5 and 4.2 ms.
SWAP_MIN_ELEMENTS = 2**20
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

#: Source bytes of one call of a move back to channels first. The kernel writes a
#: vector's channels at a time down every pixel of its call, reading each pixel's
#: channels once per vector of them: a call's pixels should stay in cache meanwhile.
#: Moves back by source bytes a call, 2^18 / 2^20 / a thread's whole share (ms,
#: 2026-12-06, AMD EPYC 7001, 2 threads, in one process): 64 channels of 256x256
#: 4.3 / 3.5 / 5.2; 32 channels of 64^3 7.8 / 6.0 / 10.3; 2048 channels of 65x65 8.7
#: / 8.2 / 14.6; 8 x 64 channels of 128x128 8.6 / 6.8 / 6.7 (runs of 2^15: 12-35).
RUN_BYTES = 2**20


def streams(nbytes: int) -> bool:
    """Whether a move of ``nbytes`` stores past the caches: where the source and the
    new array together outgrow the last-level cache, each target line would
    otherwise be fetched before it is written. ``aspp``'s input (2048 channels of
    65 x 65, 35 MiB) moved in 3.0 ms with stores through the caches and 2.0 ms past
    them (``np.copyto`` of it: 1.7 ms); 64 channels of 256 x 256, 1.17 -> 1.04 ms."""
    return last_level_cache.outgrown(2 * nbytes)


def _kernel(dtype: np.dtype, stream: bool = False) -> calls.Kernel | None:
    if "llvmlite.binding" not in sys.modules:
        return None
    try:
        from dilconv._native import kernels

        return kernels.transpose(dtype, stream)
    except (ImportError, RuntimeError, OSError, MemoryError):  # no LLVM here: NumPy's copy
        return None


def move_channels(a: np.ndarray, *, last: bool) -> np.ndarray | None:
    """``a`` ``(N, C, *S)`` as a new C-contiguous ``(N, *S, C)`` (``last``), or
    ``(N, *S, C)`` as ``(N, C, *S)``; None where NumPy should move it instead.

    ``a`` must be C-contiguous (else None). One channel, or one pixel, is None too:
    the move is then a reshape, and NumPy's transposed view is already C-contiguous
    (a one-channel signal of 2^24 samples took 15 ms more through the copy).

    Examples
    --------
    >>> import numpy as np
    >>> a = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    >>> out = move_channels(a, last=True)
    >>> out is None or bool((out == a.transpose(0, 2, 1)).all())
    True
    """
    if a.dtype not in DTYPES or a.size < MIN_ELEMENTS or not a.flags.c_contiguous or a.ndim < 3:
        return None
    if a.shape[1 if last else -1] == 1 or a.size == a.shape[0] * a.shape[1 if last else -1]:
        return None  # one channel or one pixel: a reshape, no copy
    kernel = _kernel(a.dtype, streams(a.nbytes))
    if kernel is None:
        return None
    n = a.shape[0]
    if last:
        c, spatial = a.shape[1], a.shape[2:]
        out = results.new_result((n, *spatial, c), a.dtype)
    else:
        c, spatial = a.shape[-1], a.shape[1:-1]
        out = results.new_result((n, c, *spatial), a.dtype)
    pixels = math.prod(spatial)
    run = max(64, RUN_BYTES // (c * a.dtype.itemsize) // 64 * 64)  # pixels a call back
    threads = pool.num_threads()
    bounds = np.linspace(0, pixels, min(threads, pixels) + 1).astype(int)
    shares: list[list[calls.Call]] = [[] for _ in range(len(bounds) - 1)]
    for image in range(n):
        at = image * c * pixels
        for k, (p0, p1) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            if p1 <= p0:
                continue
            if last:  # rows: channels; columns: this share's pixels
                call = kernel.call(
                    source=calls.Slot("source", at + int(p0)),
                    target=calls.Slot("target", at + int(p0) * c),
                    rows=c,
                    columns=int(p1 - p0),
                    source_row=pixels,
                    target_row=c,
                )
                shares[k].append(call)
                continue
            # rows: this share's pixels, a run at a time; columns: channels
            for q0 in range(int(p0), int(p1), run):
                q1 = min(int(p1), q0 + run)
                call = kernel.call(
                    source=calls.Slot("source", at + q0 * c),
                    target=calls.Slot("target", at + q0),
                    rows=q1 - q0,
                    columns=c,
                    source_row=c,
                    target_row=pixels,
                )
                shares[k].append(call)
    bound = calls.Binding(source=a.reshape(-1), target=out.reshape(-1))
    pool.parallel_map(bound.run, shares, key=("channels", a.shape, last))
    return out


def swap_last_axes(a: np.ndarray, *, reverse_first: bool = False) -> np.ndarray | None:
    """``a`` ``(B, R, C)`` as a new C-contiguous ``(B, C, R)``, its ``B`` blocks in
    reverse order with ``reverse_first``; None where NumPy should do it (fewer than
    :data:`SWAP_MIN_ELEMENTS`, or as :func:`move_channels`).

    A transposed convolution's kernel: taps reversed, each tap's ``(C, O)`` matrix
    transposed. NumPy's copy of ``aspp``'s (3 x 3 x 2048 x 256, 19 MiB) took 22 ms.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.arange(3 * 300 * 400, dtype=np.float32).reshape(3, 300, 400)
    >>> out = swap_last_axes(a, reverse_first=True)
    >>> out is None or bool((out == a[::-1].transpose(0, 2, 1)).all())
    True
    """
    if (
        a.dtype not in DTYPES
        or a.size < SWAP_MIN_ELEMENTS
        or a.ndim != 3
        or not a.flags.c_contiguous
    ):
        return None
    blocks, r, c = a.shape
    if min(r, c) == 1:
        return None  # a reshape, no copy
    kernel = _kernel(a.dtype, streams(a.nbytes))
    if kernel is None:
        return None
    out = np.empty((blocks, c, r), dtype=a.dtype)
    run = max(64, RUN_BYTES // (c * a.dtype.itemsize) // 64 * 64)  # source rows a call
    steps = []
    for k in range(blocks):
        to = blocks - 1 - k if reverse_first else k
        for q0 in range(0, r, run):
            q1 = min(r, q0 + run)
            steps.append(
                kernel.call(
                    source=calls.Slot("source", (k * r + q0) * c),
                    target=calls.Slot("target", to * c * r + q0),
                    rows=q1 - q0,
                    columns=c,
                    source_row=c,
                    target_row=r,
                )
            )
    threads = max(1, min(pool.num_threads(), len(steps)))
    bound = calls.Binding(source=a.reshape(-1), target=out.reshape(-1))
    shares = [steps[t::threads] for t in range(threads)]
    pool.parallel_map(bound.run, shares, key=("swap axes", a.shape, reverse_first))
    return out

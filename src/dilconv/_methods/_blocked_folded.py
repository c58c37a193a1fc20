"""``blocked`` with its kernel columns folded into the output channels.

With few output channels the tile loop's vectors are partly empty: 21 channels
take two vectors of 16 lanes, 32 lanes for 21 sums, at every one of the 9 taps of
a 3x3 kernel. Here the kernel's columns become output channels instead. For each
output row, the tile loop of :mod:`~dilconv._native.tile_kernel` computes, per
input column ``q`` and over the kernel rows and input channels,
``z[q, kw * O + o]``: what input column ``q`` adds to output channel ``o``
through kernel column ``kw``. That is a ``kh x 1`` convolution with ``kw * O``
output channels (63 for 21: four vectors, one lane empty, at 3 taps: 12 vectors
of multiply-adds a pixel and channel where there were 18). Then
:mod:`~dilconv._native.fold_kernel` adds each output pixel's terms of the kernel
columns that read real input: ``out[p, o] = sum(z[p * sw - pad + kw * dw, kw * O + o])``.

``z`` is a few rows at a time in a buffer of each thread's own (about
:data:`CHUNK_BYTES`), so it is written and read again in the core's cache; each
share of the output rows runs its chunks as one sequence of native calls.

Taken (:func:`pays`) for NHWC calls of one group, stride 1, kernel width 2 or
more, where the folded channels fill fewer vectors in one block of the tile loop
than the kernel's columns fill one by one, by enough multiply-adds to pay for the
second loop (:data:`MARGIN`). Sums come in another order than in ``blocked``'s tile
loop, so results differ from it by rounding only.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from dilconv._methods import blocked
from dilconv._native import calls, kernels, pool
from dilconv._native.sequence import Sequence
from dilconv._spec import ConvSpec

#: Bytes of ``z`` a thread holds at once (whole rows, at least one): well within a
#: core's L2 cache, beside the packed weights and the input rows being read.
CHUNK_BYTES = 2**18

#: Fewer output rows than this are not folded: the threads share rows here, where
#: ``blocked`` shares one row's tiles too (a 1-D signal is one row).
MIN_ROWS = 8

#: Folded only where the vectors of multiply-adds saved per output pixel (input
#: channels x kernel rows x vectors saved a channel) are at least this many times the
#: vectors the second loop stores and loads per pixel (``z``'s, and each kernel
#: column's sums). Measured (2-vCPU Xeon with AMX, 256x256 unless said, 1 and 2
#: threads, d = 1-16): 21 -> 21 channels saves 126 against 10 (0.86-0.95x the usual
#: loop on one thread, 0.93-1.06x on two); 16 -> 5 channels on 8 x 128x128, 96
#: against 4 (0.55-0.88x); 12 -> 21, 72 against 10 (0.95-1.10x); 8 -> 8, 24 against 5
#: (0.76-1.05x); 6 -> 21, 36 against 10 (1.06-1.28x); 3 -> 8 on 512x512, 9 against 5
#: (1.05-1.26x).
MARGIN = 12

#: A row of ``z`` larger than this is not folded (its chunk would leave the caches).
MAX_ROW_BYTES = 2**21


@dataclasses.dataclass(frozen=True)
class FoldedCalls:
    """Each thread's calls, with slots ``x`` (NHWC input), ``w`` (the folded packing),
    ``z`` (``threads x chunk`` rows of ``z``) and ``out`` (NHWC output)."""

    shares: tuple[Sequence, ...]
    z_elements: int  # elements of slot ``z``


@functools.lru_cache(maxsize=256)
def folded_spec(spec: ConvSpec) -> ConvSpec:
    """The ``kh x 1`` convolution computing ``z`` (shape arithmetic only): the same
    input and rows, every input column an output column, ``kw * O`` output channels
    (remembered: the same object each call, its hash made once)."""
    kh, kw = spec.kernel_hw
    return dataclasses.replace(
        spec,
        kernel_hw=(kh, 1),
        out_channels=kw * spec.out_channels,
        stride=(spec.stride[0], 1),
        dilation=(spec.dilation[0], 1),
        pad=(spec.pad[0], (0, 0)),
    )


def pays(spec: ConvSpec) -> bool:
    """Whether ``blocked`` folds the (lowered, NHWC) ``spec``: see the module docstring
    (remembered per spec and thresholds: the cost model and the call each ask).

    Examples
    --------
    >>> from dilconv._spec import make_spec
    >>> def spec(c, o):
    ...     return make_spec((1, 32, 32, c), (3, 3, c, o), data_format="NHWC",
    ...                      dtypes=[np.dtype(np.float32)]).lowered()
    >>> pays(spec(64, 64))  # whole vectors already
    False
    >>> pays(spec(3, 8))  # too few input channels to pay for the second loop
    False
    """
    return _pays(spec, MARGIN, MIN_ROWS, MAX_ROW_BYTES)


@functools.lru_cache(maxsize=256)
def _pays(spec: ConvSpec, margin: int, min_rows: int, max_row_bytes: int) -> bool:
    """:func:`pays` with the module's thresholds as they are now."""
    if spec.groups != 1 or spec.stride[1] != 1 or spec.kernel_hw[1] < 2:
        return False
    if spec.in_channels == 0 or spec.out_channels == 0 or math.prod(spec.out_hw) == 0:
        return False
    if spec.batch * spec.out_hw[0] < min_rows:  # too few rows to share among threads
        return False
    if _z_row(spec) * spec.dtype.itemsize > max_row_bytes:
        return False
    usual, folded = blocked.plan(spec), blocked.plan(folded_spec(spec))
    if len(folded.out_blocks) != 1 or len(usual.out_blocks) != 1:
        return False
    (kh, kw), sums = spec.kernel_hw, math.ceil(spec.out_channels / usual.lanes)
    saved = spec.in_channels * kh * (kw * usual.vectors - folded.vectors)
    return saved >= margin * (folded.vectors + kw * sums)


def _z_row(spec: ConvSpec) -> int:
    """Elements of one row of ``z``: every input column's folded channels."""
    return spec.in_hw[1] * spec.kernel_hw[1] * spec.out_channels


def thread_count(spec: ConvSpec) -> int:
    """Threads sharing the output rows: ``blocked``'s, at most one a row."""
    return min(blocked.thread_count(spec), spec.batch * spec.out_hw[0])


def chunk_rows(spec: ConvSpec, threads: int) -> int:
    """Rows of ``z`` each of ``threads`` shares holds at once (:data:`CHUNK_BYTES`)."""
    share = -(-spec.batch * spec.out_hw[0] // threads)
    return max(1, min(CHUNK_BYTES // (_z_row(spec) * spec.dtype.itemsize), share))


def workspace_bytes(spec: ConvSpec) -> int:
    """The folded packing and the threads' ``z`` chunks (arithmetic only: nothing is
    compiled or built)."""
    threads = thread_count(spec)
    z_bytes = threads * chunk_rows(spec, threads) * _z_row(spec) * spec.dtype.itemsize
    return blocked.packed_bytes(folded_spec(spec)) + z_bytes


def _runs(spec: ConvSpec) -> np.ndarray:
    """The output columns cut into runs whose pixels read real input through the same
    kernel columns: ``(p0, p1, kw0, kw1)`` each (read-only)."""
    wo = spec.out_hw[1]
    kx0, kx1 = blocked.column_taps(spec, np.arange(wo, dtype=np.int64), 1)
    change = np.flatnonzero((np.diff(kx0) != 0) | (np.diff(kx1) != 0))
    edges = np.array([0, *(change + 1).tolist(), wo], dtype=np.int64)
    runs = np.stack([edges[:-1], edges[1:], kx0[edges[:-1]], kx1[edges[:-1]]], axis=1)
    runs.flags.writeable = False
    return runs


@functools.lru_cache(maxsize=128)
def fold_calls(spec: ConvSpec, threads: int) -> FoldedCalls:
    """The calls of each of ``threads`` shares of the output rows (remembered): per
    chunk of its rows, the tile loop's calls writing the chunk's ``z`` rows to the
    share's part of slot ``z``, then the column sums writing its output rows."""
    fs = folded_spec(spec)
    lay = blocked.layout(fs)
    wo, o, fo = spec.out_hw[1], spec.out_channels, fs.out_channels
    z_row = _z_row(spec)
    chunk = chunk_rows(spec, threads)
    flat = np.arange(len(lay.rows), dtype=np.int64)
    parts = np.array_split(flat, threads)
    lanes = blocked.plan(spec).lanes
    vectors, tail = math.ceil(o / lanes), o % lanes
    fold = kernels.fold(spec.dtype, lanes, vectors, tail)
    runs = _runs(spec)
    strides = {"z_pixel": fo, "z_tap": spec.dilation[1] * fo + o, "out_pixel": o}
    left = spec.pad[1][0]
    shares = []
    for k, part in enumerate(parts):
        share: list[calls.Call] = []
        for start in range(0, len(part), chunk):
            rows = part[start : start + chunk]
            at = (k * chunk + np.arange(len(rows), dtype=np.int64)) * z_row
            tile_rows = lay.rows[rows].copy()
            tile_rows[:, 1] = at  # z rows in the share's chunk instead of output rows
            tile_rows.flags.writeable = False
            tiles = blocked.region_calls(fs, tile_rows, lay.columns, 1, out="z")
            share.extend(tiles.shares[0])
            sum_rows = np.stack([at - left * fo, rows * wo * o], axis=1)
            sum_rows.flags.writeable = False
            share.append(
                fold.call(
                    z=calls.Slot("z", 0),
                    out=calls.Slot("out", 0),
                    rows=calls.Ref(sum_rows),
                    n_rows=len(rows),
                    runs=calls.Ref(runs),
                    n_runs=len(runs),
                    **strides,
                )
            )
        shares.append(Sequence(share))
    return FoldedCalls(tuple(shares), threads * chunk * z_row)


def conv(x: np.ndarray, w: np.ndarray, spec: ConvSpec, y: np.ndarray) -> np.ndarray:
    """Correlate NHWC ``x`` with HWIO ``w`` into the new NHWC result ``y``, folded."""
    fs = folded_spec(spec)
    kh, kw = spec.kernel_hw
    c, o = spec.in_channels, spec.out_channels
    # (kh, kw, C, O) -> (kh, 1, C, kw * O): output channel kw * O + o of the folded kernel
    w_folded = np.asarray(w, dtype=spec.dtype).transpose(0, 2, 1, 3).reshape(kh, 1, c, kw * o)
    packed = blocked.pack_weights(w_folded, fs, blocked.plan(fs))
    threads = thread_count(spec)
    planned = fold_calls(spec, threads)
    z = calls.aligned_empty(planned.z_elements, spec.dtype)
    bound = calls.Binding(x=np.ascontiguousarray(x, dtype=spec.dtype), w=packed, z=z, out=y)
    pool.parallel_map(bound.run, planned.shares, key=("blocked folded", spec))
    return y

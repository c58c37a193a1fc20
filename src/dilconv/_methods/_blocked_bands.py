"""``blocked`` on NCHW arrays with many output channels: bands of rows turned in cache.

The planar loop (:mod:`~dilconv._methods._blocked_planar`) keeps vectors of pixels
and broadcasts one weight per output channel, so it reads the input once only while
one pass holds every output channel (28 or fewer here); beyond that each further
pass reads the input again. ``blocked``'s own tile loop keeps vectors of output
channels instead, and broadcasts one *input* value per pixel, which reads NCHW as
readily as NHWC (the channels are a plane apart instead of one). Its sums, though,
are vectors of output channels: stored into NCHW they would be scattered over as
many planes (64 channels of 256x256 by scatter: 1.4x the NHWC call, most of it
in address translation).

So here each thread computes a *band* of a few output rows into its own small NHWC
buffer (at most :data:`BAND_BYTES`, kept in its L2 cache), then moves the band into
the NCHW result with the compiled transpose (each plane's rows written as one
contiguous run). Neither the input nor the result is ever transposed whole; the
extra traffic is one pass over the band in cache. The threads take the bands one
at a time from one queue, like :mod:`~dilconv._methods.winograd`'s.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator

import numpy as np

from dilconv._methods import blocked
from dilconv._native import calls, kernels, pool
from dilconv._native.sequence import Sequence
from dilconv._spec import ConvSpec

#: Most bytes of one band of sums (a thread's buffer, about a quarter of an L2 cache).
BAND_BYTES = 2**19


@dataclasses.dataclass(frozen=True)
class BandCalls:
    """Per band of one image's output rows: the tile-loop calls computing it into slot
    ``band`` (NHWC, from NCHW slot ``x``), then the transpose into NCHW slot ``out``."""

    rows: int  # output rows per band (the last band may have fewer)
    steps: tuple[tuple[calls.Call, ...], ...]


def band_rows(spec: ConvSpec) -> int:
    """Output rows per band: as many as fit :data:`BAND_BYTES`, at least one."""
    row_bytes = spec.out_hw[1] * spec.out_channels * spec.dtype.itemsize
    return max(1, min(spec.out_hw[0], BAND_BYTES // max(1, row_bytes)))


@functools.lru_cache(maxsize=128)
def band_calls(spec: ConvSpec) -> BandCalls:
    """The calls of every band of one image (remembered per spec; the batch's images
    are bound one after another)."""
    (ho, wo), o = spec.out_hw, spec.out_channels
    per_band = band_rows(spec)
    lay = blocked.layout(spec, channels_first=True)
    image_rows = lay.rows[:ho]
    # NCHW input offsets, NHWC offsets in the band
    columns = tuple((width, _band_columns(table, o)) for width, table in lay.columns)
    move = kernels.transpose(spec.dtype)
    steps = []
    for r0 in range(0, ho, per_band):
        r1 = min(ho, r0 + per_band)
        rows = image_rows[r0:r1].copy()
        rows[:, 1] = np.arange(r1 - r0, dtype=np.int64) * wo * o
        rows.flags.writeable = False
        tiles = blocked.region_calls(
            spec, rows, columns, 1, channels_first_input=True, out="band"
        ).shares[0]
        turn = move.call(
            source=calls.Slot("band", 0),
            target=calls.Slot("out", r0 * wo),
            rows=(r1 - r0) * wo,
            columns=o,
            source_row=o,
            target_row=ho * wo,
        )
        steps.append(Sequence((*tiles, turn)))
    return BandCalls(per_band, tuple(steps))


def _band_columns(table: np.ndarray, out_channels: int) -> np.ndarray:
    """An NCHW column table with its output offsets (column 1) in an NHWC band."""
    band = table.copy()
    band[:, 1] *= out_channels
    band.flags.writeable = False
    return band


def conv(x: np.ndarray, w: np.ndarray, y: np.ndarray, spec: ConvSpec, threads: int) -> None:
    """Correlate NCHW ``x`` (C-contiguous, the computing dtype) with HWIO ``w`` into
    the NCHW ``y`` by bands (``spec`` lowered; ``blocked.refusal`` None)."""
    packed = blocked.pack_weights(np.asarray(w, dtype=spec.dtype), spec, blocked.plan(spec))
    plan = band_calls(spec)
    bands = [(image, k) for image in range(spec.batch) for k in range(len(plan.steps))]
    threads = max(1, min(threads, len(bands)))
    shared = iter(bands)
    size = plan.rows * spec.out_hw[1] * spec.out_channels

    def run(share: Iterator[tuple[int, int]]) -> None:
        bound = calls.Binding(w=packed, band=calls.aligned_empty(size, spec.dtype))
        current = -1
        for image, k in share:
            if image != current:  # one image's bands come one after another
                bound.set(x=x[image], out=y[image])
                current = image
            bound.run(plan.steps[k])

    pool.parallel_map(run, [shared] * threads, key=("blocked NCHW bands", spec))

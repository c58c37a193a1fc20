"""``winograd`` on NCHW arrays: each band's rows staged in cache, neither array moved whole.

:func:`conv_channels_first` takes vectors of tiles instead
(:mod:`~dilconv._methods._winograd_planar`) wherever they pay; this route runs past
128 output channels, and where many channels meet a dilation that would leave lanes
idle.

The tile transforms of :mod:`~dilconv._native.winograd_kernel` read and write
vectors of channels, so :mod:`~dilconv._methods.winograd` works on NHWC arrays, and
an NCHW call used to move its whole input to NHWC and its whole result back (64
channels of 256x256: 8.5 ms of moves beside 10.6 ms of Winograd). Here each band of
tiles instead stages what it needs in two small NHWC buffers of its thread:

1. for each block of input channels, the input rows its tiles read (the columns
   they span) are turned into ``S`` by the compiled transpose, and the input
   transform reads ``S`` where it read the NHWC image; a band run right after one
   that read some of the same rows keeps them (:func:`_segments`, :func:`_slots`);
2. the products run as in :mod:`~dilconv._methods.winograd`;
3. the output transform writes the band's output rows into ``Z``, and ``Z`` is
   turned into the NCHW result, each plane's rows written as contiguous runs.

The outputs that no whole tile covers are computed after every band, once for the
batch, by ``blocked``'s tile loop reading the NCHW input in place into a compact
NHWC buffer, and moved into the result (:func:`direct_calls`). Where a row of tiles
is too long for one band it is cut only between tiles whose outputs do not
interleave (a cut at tile ``i`` needs ``xs[i] > xs[i - 1] + d``), so each band owns
a contiguous run of output columns. The result is the NHWC route's bit for bit.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
from typing import NamedTuple

import numpy as np

from dilconv._methods import _winograd_planar, blocked, winograd
from dilconv._methods._winograd_nchw_edges import direct_calls, run_call, runs, table
from dilconv._methods._winograd_products import (
    block_channels,
    lanes,
    product_calls,
    product_plan,
    transform_weights,
)
from dilconv._native import calls, kernels, last_level_cache
from dilconv._native.sequence import Sequence
from dilconv._spec import ConvSpec


@dataclasses.dataclass(frozen=True)
class Plan:
    """The steps of one image (each a tuple of calls, run in order by one thread) and
    the elements of each thread's stages ``S`` (input rows) and ``Z`` (output rows).

    Slots: ``x``, ``y`` (the image's NCHW input and output), ``S`` and ``Z``, and
    those of :class:`~dilconv._methods.winograd.BandCalls`.
    """

    steps: tuple[tuple[calls.Call, ...], ...]
    stage_in: int
    stage_out: int
    tiles: int  # tiles in the largest band (snapped cuts may make it larger than
    # :func:`winograd.layout`'s)


def column_bands(xs: np.ndarray, d: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` runs ``[s0, s1)`` of the tiles ``xs`` (or fewer), cut only where the
    outputs of the tiles on either side do not interleave.

    >>> column_bands(np.array([0, 1, 4, 5, 8, 9]), 2, 3)
    [(0, 2), (2, 4), (4, 6)]
    >>> column_bands(np.array([0, 1, 2, 6, 7, 8]), 3, 4)
    [(0, 3), (3, 6)]
    """
    n = len(xs)
    valid = [i for i in range(1, n) if xs[i] > xs[i - 1] + d]
    cuts: list[int] = []
    for k in range(1, parts):
        if not valid:
            break
        want = n * k / parts
        best = min(valid, key=lambda i: abs(i - want))
        if (not cuts or best > cuts[-1]) and best < n:
            cuts.append(best)
    edges = [0, *cuts, n]
    return list(zip(edges[:-1], edges[1:], strict=True))


def bands(spec: ConvSpec) -> list[tuple[int, int, int, int, int, int]]:
    """The bands ``(r0, r1, s0, s1, c0, c1)``: tile rows, tiles and the output columns
    ``[c0, c1)`` each owns; as :func:`winograd.layout`'s where rows are not cut."""
    lay = winograd.layout(spec, staged=True)
    wo, dw = spec.out_hw[1], spec.dilation[1]
    xs, _ = winograd.whole_pairs(wo, dw)
    n = len(xs)
    result = [(r0, r1, 0, n, 0, wo) for r0, r1, s0, s1 in lay.bands if (s0, s1) == (0, n)]
    # the layout cuts long rows of tiles (one row a band) into parts anywhere
    parts = collections.Counter(r0 for r0, _, s0, s1 in lay.bands if (s0, s1) != (0, n))
    for r, count in parts.items():
        for s0, s1 in column_bands(xs, dw, count):
            c0 = 0 if s0 == 0 else int(xs[s0])
            c1 = wo if s1 == n else int(xs[s1])
            result.append((r, r + 1, s0, s1, c0, c1))
    return sorted(result)


def _slot_runs(staged: list[tuple[int, int]], whole: bool) -> list[tuple[int, int, int]]:
    """``(first row, first slot, count)`` of each run of ``(slot, row)`` pairs (sorted)
    whose slots and rows both go up by one; every pair alone unless rows are ``whole``
    (only whole rows lie one after another in the source)."""
    runs: list[tuple[int, int, int]] = []
    for slot, row in staged:
        if whole and runs and (row, slot) == (runs[-1][0] + runs[-1][2], runs[-1][1] + runs[-1][2]):
            runs[-1] = (runs[-1][0], runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((row, slot, 1))
    return runs


def _singly(values: list[int]) -> list[tuple[int, int, int]]:
    """``(value, its index, 1)`` for each value: :func:`runs` without merging."""
    return [(v, k, 1) for k, v in enumerate(values)]


def _turn_out(spec: ConvSpec, out_rows: list[int], c0: int, c1: int) -> list[calls.Call]:
    """The transposes of ``Z``'s rows (``out_rows``, increasing, columns ``[c0, c1)``)
    into the NCHW slot ``y``: one per run of consecutive whole rows."""
    (ho, wo), o = spec.out_hw, spec.out_channels
    move, width = kernels.transpose(spec.dtype, _streams(spec)), c1 - c0
    whole = width == wo
    steps = []
    for first, slot, count in runs(out_rows) if whole else _singly(out_rows):
        steps.append(
            move.call(
                source=calls.Slot("Z", slot * width * o),
                target=calls.Slot("y", first * wo + c0),
                rows=count * width,
                columns=o,
                source_row=o,
                target_row=ho * wo,
            )
        )
    return steps


def _streams(spec: ConvSpec) -> bool:
    """Whether the result's planes are stored past the caches: where input and output
    together outgrow the last-level cache
    (:func:`~dilconv._native.last_level_cache.call_outgrows`)."""
    return last_level_cache.call_outgrows(spec)


class _BandInput(NamedTuple):
    """What a band reads: its input columns, which rows and columns are inside, the
    first staged column and the count, each row's slot in ``S``, and the ``(slot,
    row)`` pairs to stage."""

    in_x: np.ndarray
    inside_y: np.ndarray
    inside_x: np.ndarray
    x0: int
    ncol: int
    slots: np.ndarray
    staged: list[tuple[int, int]]


#: Most bands in a segment of one chain (see :func:`_segments`).
SEGMENT = 8


def _input_rows(spec: ConvSpec, band: tuple[int, ...], ys: np.ndarray) -> set[int]:
    """The input rows inside the image that a band's tiles read."""
    r0, r1 = band[0], band[1]
    rows = ys[r0:r1, None] - spec.pad[0][0] + spec.dilation[0] * np.arange(4)[None, :]
    return set(rows[(rows >= 0) & (rows < spec.in_hw[0])].tolist())


def _segments(
    spec: ConvSpec, every: list[tuple[int, int, int, int, int, int]], ys: np.ndarray, threads: int
) -> list[list[int]]:
    """The bands in the groups one thread runs in order, each after one that shares
    input rows with it where one does.

    Where every band spans whole rows of tiles and the input channels are one block,
    a band is followed by the next one or by the one whose tile rows lie ``2d``
    lower, whichever shares more input rows (at ``d`` = 4 a row of tiles reads rows
    ``y - 4``, ``y``, ``y + 4``, ``y + 8`` and the one at ``y + 8`` reads two of
    them again); chains of such bands are cut into segments of at most
    :data:`SEGMENT`, at least two per thread where there are bands enough. Within
    a segment the rows a band shares with the one before stay staged
    (:func:`_slots`). Else each band alone.
    """
    n = len(every)
    full = len(winograd.whole_pairs(spec.out_hw[1], spec.dilation[1])[0])
    chained = len(product_plan(spec).in_blocks) == 1 and all(
        (s0, s1) == (0, full) for _, _, s0, s1, _, _ in every
    )
    if not chained:
        return [[k] for k in range(n)]
    rows = [_input_rows(spec, band, ys) for band in every]
    first = {int(ys[band[0]]): k for k, band in enumerate(every)}
    used = [False] * n
    chains = []
    for start in range(n):
        if used[start]:
            continue
        chain, used[start] = [start], True
        while True:
            here = chain[-1]
            lower = first.get(int(ys[every[here][0]]) + 2 * spec.dilation[0])
            options = [
                k for k in (here + 1, lower)
                if k is not None and k < n and not used[k] and rows[k] & rows[here]
            ]  # fmt: skip
            if not options:
                break
            chain.append(max(options, key=lambda k: len(rows[k] & rows[here])))
            used[chain[-1]] = True
        chains.append(chain)
    length = max(1, min(SEGMENT, n // (2 * threads)))
    return [chain[i : i + length] for chain in chains for i in range(0, len(chain), length)]


def _slots(
    spec: ConvSpec, every: list[tuple[int, int, int, int, int, int]], group: list[int],
    ys: np.ndarray,
) -> list[tuple[dict[int, int], list[int]]]:  # fmt: skip
    """Per band of a group: the slot in ``S`` of each input row it reads, and the rows
    to stage (those the band before did not read: the others keep their slots; new
    rows take the free slots in order, so runs of rows land in runs of slots)."""
    result: list[tuple[dict[int, int], list[int]]] = []
    read = [_input_rows(spec, every[k], ys) for k in group]
    size = max(len(rows) for rows in read)
    before: dict[int, int] = {}
    for rows in read:
        kept = {row: slot for row, slot in before.items() if row in rows}
        fresh = sorted(rows - kept.keys())
        free = sorted(set(range(size)) - set(kept.values()))
        slots = {**kept, **dict(zip(fresh, free, strict=False))}
        result.append((slots, fresh))
        before = slots
    return result


@functools.lru_cache(maxsize=64)
def plan(spec: ConvSpec, threads: int = 1) -> Plan:
    """The :class:`Plan` of ``spec`` (lowered; remembered: the same for every call)
    for ``threads`` threads."""
    (h, wd), (ho, wo) = spec.in_hw, spec.out_hw
    (dh, dw), (top, left) = spec.dilation, (spec.pad[0][0], spec.pad[1][0])
    o, width = spec.out_channels, lanes(spec)
    ys, _ = winograd.whole_pairs(ho, dh)
    xs, _ = winograd.whole_pairs(wo, dw)
    p = product_plan(spec)
    move = kernels.transpose(spec.dtype)
    backward = kernels.transform(spec.dtype, width, o % width, "output")
    unused = np.zeros(width, dtype=spec.dtype)
    steps: list[tuple[calls.Call, ...]] = []
    stage_in = stage_out = most = 0
    every = bands(spec)

    def inputs(band: int, slot_of: dict[int, int], fresh: list[int]) -> _BandInput:
        """The band's input columns, which rows and columns are inside, each row's
        slot in ``S``, and the ``(slot, row)`` pairs to stage."""
        r0, r1, s0, s1, _, _ = every[band]
        in_y = ys[r0:r1, None] - top + dh * np.arange(4)[None, :]
        in_x = xs[s0:s1, None] - left + dw * np.arange(4)[None, :]
        inside_y, inside_x = (in_y >= 0) & (in_y < h), (in_x >= 0) & (in_x < wd)
        x0 = int(in_x[inside_x].min()) if inside_x.any() else 0
        ncol = int(in_x[inside_x].max()) + 1 - x0 if inside_x.any() else 0
        lookup = np.full(h, -1, dtype=np.int64)
        for row, slot in slot_of.items():
            lookup[row] = slot
        slots = lookup[np.clip(in_y, 0, h - 1)]
        staged = sorted((slot_of[row], row) for row in fresh)
        return _BandInput(in_x, inside_y, inside_x, x0, ncol, slots, staged)

    for group in _segments(spec, every, ys, threads):
        step: list[calls.Call] = []
        for band, (slot_of, fresh) in zip(group, _slots(spec, every, group, ys), strict=True):
            r0, r1, s0, s1, c0, c1 = every[band]
            tiles = (r1 - r0) * (s1 - s0)
            most = max(most, tiles)
            # input: the rows and columns the tiles read, staged per block of channels
            in_x, inside_y, inside_x, x0, ncol, slots, staged = inputs(band, slot_of, fresh)
            count_slots = int(slots.max()) + 1 if slots.size else 0
            for (b0, b1), block in zip(p.in_blocks, product_calls(spec, tiles), strict=True):
                cb = b1 - b0
                stage_in = max(stage_in, count_slots * ncol * cb)
                for first, k, count in _slot_runs(staged, whole=ncol == wd) if ncol else []:
                    step.append(
                        move.call(
                            source=calls.Slot("x", b0 * h * wd + first * wd + x0),
                            target=calls.Slot("S", k * ncol * cb),
                            rows=cb,
                            columns=count * ncol,
                            source_row=h * wd,
                            target_row=cb,
                        )
                    )
                row_table = np.where(inside_y, slots * ncol * cb, -1)
                col_table = np.where(inside_x, (in_x - x0) * cb, -1)
                forward = kernels.transform(spec.dtype, width, cb % width, "input")
                step.append(
                    forward.call(
                        source=calls.Slot("S"),
                        spare=calls.Slot("zeros"),
                        target=calls.Slot("V"),
                        flags=calls.Ref(unused),
                        rows=calls.Ref(table(row_table)),
                        n_rows=r1 - r0,
                        columns=calls.Ref(table(col_table)),
                        n_columns=s1 - s0,
                        vectors=cb // width,
                        tile=16 * cb,
                        position=cb,
                    )
                )
                step.extend(block)
            # output: the band's rows of Z, the outputs no tile covers, then into NCHW
            out_y = (ys[r0:r1, None] + dh * np.arange(2)[None, :]).ravel()
            out_rows = sorted(out_y.tolist())
            z_slot = {y: k for k, y in enumerate(out_rows)}
            span = c1 - c0
            stage_out = max(stage_out, len(out_rows) * span * o)
            out_x = xs[s0:s1, None] + dw * np.arange(2)[None, :]
            z_rows = np.array([z_slot[y] for y in out_y], dtype=np.int64).reshape(-1, 2) * span * o
            step.append(
                backward.call(
                    source=calls.Slot("M"),
                    spare=calls.Slot("sink"),
                    target=calls.Slot("Z"),
                    flags=calls.Slot("flags"),
                    rows=calls.Ref(table(z_rows)),
                    n_rows=r1 - r0,
                    columns=calls.Ref(table((out_x - c0) * o)),
                    n_columns=s1 - s0,
                    vectors=o // width,
                    tile=16 * o,
                    position=o,
                )
            )
            step.extend(_turn_out(spec, out_rows, c0, c1))
        steps.append(Sequence(step))
    return Plan(tuple(steps), stage_in, stage_out, most)


def scratch(spec: ConvSpec, threads: int) -> dict[str, np.ndarray]:
    """A thread's arrays: :func:`winograd.thread_arrays`, ``V`` and ``M`` for the
    largest band of the plan for ``threads``, and the stages ``S`` and ``Z``."""
    p = plan(spec, threads)
    arrays = winograd.thread_arrays(spec)
    arrays["V"] = calls.aligned_empty(16 * p.tiles * block_channels(spec), spec.dtype)
    arrays["M"] = calls.aligned_empty(16 * p.tiles * spec.out_channels, spec.dtype)
    arrays["S"] = calls.aligned_empty(max(1, p.stage_in), spec.dtype)
    arrays["Z"] = calls.aligned_empty(max(1, p.stage_out), spec.dtype)
    return arrays


def conv_channels_first(x: np.ndarray, w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Correlate NCHW ``x`` with HWIO ``w`` (3x3, stride 1) by Winograd into a new
    NCHW array; ``spec`` is the call's lowered spec. With vectors of tiles where
    they pay (:func:`dilconv._methods._winograd_planar.pays`), else staged."""
    if _winograd_planar.pays(spec):
        return _winograd_planar.conv_channels_first(x, w, spec)
    return conv_staged(x, w, spec)


def conv_staged(x: np.ndarray, w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """:func:`conv_channels_first` with each band's rows staged in cache."""
    reason = winograd.refusal(spec) or winograd._unavailable()
    if reason is not None:
        raise ValueError(f"method='winograd' cannot compute this call: {reason}")
    n, (ho, wo), c, o = spec.batch, spec.out_hw, spec.in_channels, spec.out_channels
    y, complete = blocked.result_array((n, o, ho, wo), spec)
    if complete:
        return y
    x = np.ascontiguousarray(x, dtype=spec.dtype)
    planned = winograd.thread_count(spec)
    direct = direct_calls(spec, planned)
    # with blocked's packing for the outputs no whole tile covers, in the same pass
    packed, weights = transform_weights(w, spec, product_plan(spec), taps=direct is not None)
    zeros = np.zeros(math.ceil(max(c, 1) / lanes(spec)) * lanes(spec), dtype=spec.dtype)

    def arrays() -> dict[str, np.ndarray]:
        return {"U": packed, "zeros": zeros, **scratch(spec, planned)}

    run_call(x, y, plan(spec, planned).steps, arrays, spec, direct, weights, "winograd NCHW")
    return y

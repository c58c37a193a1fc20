"""One channel in, one out: the rows of :mod:`~dilconv._native.stencil_kernel` on the pool.

:func:`correlate` is what :mod:`dilconv._methods.compiled` runs for one channel
where it applies (float32 or float64, unit column stride, at most
:data:`~dilconv._native.stencil_kernel.MAX_TAPS` taps, LLVM loaded); elsewhere
Numba's row loop does. Each thread's share of rows is one call of the kernel.
Results larger than the caches are streamed past them (:func:`streams`), and large
calls run a loop with their column offsets compiled in (:func:`carried_columns`).
One long row (a 1-D signal) is cut into a piece per thread (:func:`row_pieces`).
"""

from __future__ import annotations

import functools
import sys
import typing

import numpy as np

from dilconv._native import calls, last_level_cache, pool
from dilconv._spec import ConvSpec, make_spec

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

#: Output vectors from which a call's row loop has its column offsets compiled in
#: (:func:`carried_columns`): a 512 x 512 image of float32 with 16 lanes.
CARRIED_MIN_VECTORS = 2**14


def streams(spec: ConvSpec) -> bool:
    """True when input and output together outgrow the last-level cache
    (:func:`~dilconv._native.last_level_cache.call_outgrows`): the stores go past
    the caches."""
    return last_level_cache.call_outgrows(spec)


def carried_columns(spec: ConvSpec, carried: bool | None = None) -> tuple[int, ...] | None:
    """The column offsets to compile into the row loop's carried loop (see
    :mod:`~dilconv._native.stencil_kernel`), or None: offsets too far apart, and
    (``carried`` None) calls of fewer than :data:`CARRIED_MIN_VECTORS` output
    vectors, whose loop is over before a compilation of their own would pay.
    ``carried`` False: None."""
    from dilconv._native import stencil_kernel

    n_lanes = stencil_kernel.lanes(spec.dtype)
    (ho, wo), (kw, dw, left) = spec.out_hw, (spec.kernel_hw[1], spec.dilation[1], spec.pad[1][0])
    if carried is None:
        carried = spec.batch * ho * -(-wo // n_lanes) >= CARRIED_MIN_VECTORS
    if not carried:
        return None
    columns = tuple(c * dw - left for c in range(kw))
    return columns if stencil_kernel.carried_fits(columns, n_lanes) else None


def applies(spec: ConvSpec) -> bool:
    """One channel in and out, float32 or float64, zero padding, unit column stride,
    few enough taps."""
    from dilconv._native.stencil_kernel import MAX_TAPS

    (kh, kw) = spec.kernel_hw
    return (
        spec.in_channels == 1
        and spec.out_channels == 1
        and spec.dtype in DTYPES
        and spec.padding_mode == "zeros"
        and spec.stride[1] == 1
        and kh * kw <= MAX_TAPS
    )


#: Bytes between the taps of a kernel row from which :func:`folded` runs the row on
#: rows of that many bytes. A 2^24-sample signal of float32, 3 taps, by dilation:
#: 16: 3.97 ms as one row, 6.82 folded; 64: 4.53 / 4.06; 1024: 6.47 / 4.21; 4096:
#: 7.09 / 4.59; d = 1 took 3.76 (2026-12-06, Zen 4 EPYC).
FOLD_MIN_BYTES = 256


@functools.lru_cache(maxsize=256)
def folded(spec: ConvSpec) -> ConvSpec | None:
    """The same call on rows of ``dilation[1]`` columns, or None where it is not one.

    One kernel row whose taps lie ``d = dilation[1]`` columns apart reads, at output
    column ``j``, input columns ``j + t * d``: those are column ``j mod d`` of
    consecutive rows once each image row is cut into rows of ``d`` columns. So
    where ``d`` divides the width and both column pads (zero rows of the cut), the
    call is a kernel column of dilation 1 down ``W / d`` rows. The row loop then
    carries its sums down those rows, and the rows are shared among the threads,
    which one long row (a 1-D signal) is not. For unit strides, no padding rows and
    taps at least :data:`FOLD_MIN_BYTES` apart.

    Examples
    --------
    >>> from dilconv._spec import make_spec
    >>> signal = make_spec((1, 1, 2**16, 1), (1, 3, 1, 1), padding="same", dilation=(1, 4096),
    ...                    data_format="NHWC", dtypes=[np.dtype(np.float32)] * 2)
    >>> rows = folded(signal.lowered())
    >>> rows.batch, rows.in_hw, rows.kernel_hw, rows.dilation, rows.pad
    (1, (16, 4096), (3, 1), (1, 1), ((1, 1), (0, 0)))
    """
    (kh, kw), d = spec.kernel_hw, spec.dilation[1]
    (top, bottom), (left, right) = spec.pad
    h, w = spec.in_hw
    if not (
        applies(spec)
        and kh == 1
        and kw > 1
        and spec.stride == (1, 1)
        and (top, bottom) == (0, 0)
        and d * spec.dtype.itemsize >= FOLD_MIN_BYTES
        and w % d == left % d == right % d == 0
    ):
        return None
    return make_spec(
        (spec.batch * h, w // d, d, 1),
        (kw, 1, 1, 1),
        padding=((left // d, right // d), (0, 0)),
        data_format="NHWC",
        dtypes=[spec.dtype, spec.dtype],
        memory_check=False,
    ).lowered()


#: Output bytes of one row from which :func:`row_pieces` cuts it among the threads.
#: A signal of float32, 3 taps, d = 1, as one row / cut in two, by samples: 2^18:
#: 0.58 / 0.75 ms; 2^20: 1.26 / 1.15; 2^24: 11.0 / 6.4 (2026-12-06, AMD EPYC 7001,
#: 2 threads, in one process).
PIECE_MIN_BYTES = 2**22


class RowPiece(typing.NamedTuple):
    """One thread's piece of a long row: its own one-row call ``spec`` (the piece's
    pads), on input columns ``[first_in, last_in)`` into output ``[first_out, last_out)``."""

    spec: ConvSpec
    first_in: int
    last_in: int
    first_out: int
    last_out: int


@functools.lru_cache(maxsize=256)
def row_pieces(spec: ConvSpec, threads: int) -> tuple[RowPiece, ...] | None:
    """One long row cut into a piece per thread, or None where the call is not one.

    A call of one input row and one output row has one share of rows: on its own, one
    thread would run it. Output columns ``[s, e)`` read the input columns
    ``[s - left, e - left + (kw - 1) * d)`` that exist, with zeros for the rest: a
    one-row call of their own, whose pads are the part of the call's pads it reaches.
    Cut at multiples of 64 columns (whole cache lines of the output), from
    :data:`PIECE_MIN_BYTES` of output on.

    Examples
    --------
    >>> from dilconv._spec import make_spec
    >>> signal = make_spec((1, 1, 2**20, 1), (1, 3, 1, 1), padding="same", dilation=(1, 2),
    ...                    data_format="NHWC", dtypes=[np.dtype(np.float32)] * 2)
    >>> [(p.spec.pad[1], p.first_in, p.last_in, p.first_out, p.last_out)
    ...  for p in row_pieces(signal.lowered(), 2)]
    [((2, 0), 0, 524290, 0, 524288), ((0, 2), 524286, 1048576, 524288, 1048576)]
    """
    (h, w), (ho, wo) = spec.in_hw, spec.out_hw
    if not (
        threads > 1
        and applies(spec)
        and spec.batch == h == ho == 1
        and wo * spec.dtype.itemsize >= PIECE_MIN_BYTES
    ):
        return None
    kw, d, left = spec.kernel_hw[1], spec.dilation[1], spec.pad[1][0]
    span = (kw - 1) * d
    bounds = [wo * k // threads // 64 * 64 for k in range(threads)] + [wo]
    pieces = []
    for s, e in zip(bounds[:-1], bounds[1:], strict=True):
        first_in, last_in = max(0, s - left), min(w, e - left + span)
        if last_in <= first_in:  # a piece of padding only: leave the row whole
            return None
        pieces.append(
            RowPiece(
                make_spec(
                    (1, 1, last_in - first_in, 1),
                    (1, kw, 1, 1),
                    padding=((0, 0), (first_in - (s - left), e - left + span - last_in)),
                    dilation=(1, d),
                    data_format="NHWC",
                    dtypes=[spec.dtype, spec.dtype],
                    memory_check=False,
                ).lowered(),
                first_in,
                last_in,
                s,
                e,
            )
        )
    return tuple(pieces)


def usable() -> bool:
    """Whether the row loop may run here, as far as is known without loading
    anything: llvmlite installed, and not found unloadable by :func:`load`."""
    if _found:  # load() has run: its answer, without an import statement or lookups
        return _found[0] is None
    import dilconv._native.compiler as compiler

    return compiler.installed()


#: What :func:`load` found, once it has run (see :func:`forget`).
_found: list[str | None] = []


def forget() -> None:
    """Forget what :func:`load` found (for tests that make llvmlite look missing)."""
    _found.clear()


def load() -> str | None:
    """Load what the row loop runs on (llvmlite and LLVM's target for this CPU, not
    Numba), once per process; why it cannot be, or None.

    ``method="compiled"`` on one channel needs only this: Numba's import and loops
    (0.65 s of a fresh process's first call here) are for the calls the row loop
    declines.
    """
    if not _found:
        try:
            from dilconv._native import compiler

            compiler._llvm()
        except (ImportError, RuntimeError, OSError) as err:
            _found[:] = [f"llvmlite could not be loaded: {err}"]
        else:
            _found[:] = [None]
    return _found[0]


@functools.lru_cache(maxsize=256)
def _calls(
    spec: ConvSpec, parts: tuple[tuple[int, int], ...], stream: bool | None, carried: bool | None
) -> list[list[calls.Call]] | None:
    """One call of the row loop per share of rows (remembered per spec: building them
    costs more than a small call's loop), or None where the loop does not apply or
    LLVM cannot be used here."""
    if not applies(spec):
        return None
    stream = streams(spec) if stream is None else stream
    try:
        from dilconv._native import kernels

        columns = carried_columns(spec, carried)
        kernel = kernels.stencil(spec.dtype, *spec.kernel_hw, stream, columns)
    except (ImportError, RuntimeError, OSError):  # no usable LLVM here: Numba's loop
        return None
    (h, w), (ho, wo) = spec.in_hw, spec.out_hw
    return [
        [
            kernel.call(
                x=calls.Slot("x"),
                w=calls.Slot("w"),
                out=calls.Slot("out"),
                first=int(q0),
                last=int(q1),
                height=h,
                width=w,
                out_rows=ho,
                out_width=wo,
                row_stride=spec.stride[0],
                row_dilation=spec.dilation[0],
                column_dilation=spec.dilation[1],
                top=spec.pad[0][0],
                left=spec.pad[1][0],
            )
        ]
        for q0, q1 in parts
    ]


def correlate(
    x: np.ndarray,
    taps: np.ndarray,
    y: np.ndarray,
    spec: ConvSpec,
    parts: tuple[tuple[int, int], ...],
    *,
    stream: bool | None = None,
    carried: bool | None = None,
) -> bool:
    """Fill ``y`` ``(N, Ho, Wo)`` with the correlation of ``x`` ``(N, H, W)`` with
    ``taps`` ``(kh, kw)``, rows ``parts`` (of the flattened ``N * Ho``) one per pool
    task; False (nothing written) where this loop does not apply (or ``x`` or ``y``
    is not C-contiguous). ``stream``: store past the caches (None: where
    :func:`streams` says so); ``carried``: the loop with the call's column offsets
    compiled in (None: where :func:`carried_columns` says so). One long row runs in
    pieces instead (:func:`row_pieces`).

    Arrays that disagree with ``spec`` (dtype, shape, number of taps) raise
    ``TypeError`` or ``ValueError`` before any address reaches the machine code,
    which reads and writes where ``spec`` says.
    """
    _agree(x, taps, y, spec)
    if not (x.flags.c_contiguous and y.flags.c_contiguous):
        return False
    if "llvmlite.binding" not in sys.modules:  # not loaded: loading it is not this call's
        return False
    held = np.ascontiguousarray(taps, dtype=spec.dtype).reshape(-1)
    pieces = row_pieces(spec, pool.num_threads())
    if pieces is not None:
        return _correlate_pieces(x.reshape(-1), held, y.reshape(-1), spec, pieces, stream, carried)
    shares = _calls(spec, tuple(parts), stream, carried)
    if shares is None:
        return False
    bound = calls.Binding(x=x.reshape(-1), w=held, out=y.reshape(-1))
    pool.parallel_map(bound.run, shares, key=("stencil", spec))
    return True


def _correlate_pieces(
    x: np.ndarray,
    taps: np.ndarray,
    y: np.ndarray,
    spec: ConvSpec,
    pieces: tuple[RowPiece, ...],
    stream: bool | None,
    carried: bool | None,
) -> bool:
    """:func:`correlate` of one long row, a :class:`RowPiece` per pool task: each
    piece's call reads and writes its own slices of the row, which its binding holds.
    Whether to stream and to carry is the whole row's decision."""
    stream = streams(spec) if stream is None else stream
    carried = carried_columns(spec, carried) is not None
    work = []
    for piece in pieces:
        shares = _calls(piece.spec, ((0, 1),), stream, carried)
        if shares is None:
            return False
        out = y[piece.first_out : piece.last_out]
        bound = calls.Binding(x=x[piece.first_in : piece.last_in], w=taps, out=out)
        work.append((bound, shares[0]))
    pool.parallel_map(lambda item: item[0].run(item[1]), work, key=("stencil pieces", spec))
    return True


def _agree(x: np.ndarray, taps: np.ndarray, y: np.ndarray, spec: ConvSpec) -> None:
    """Raise unless ``x``, ``taps`` and ``y`` are the arrays ``spec`` describes."""
    expected = {
        "x": (spec.batch, *spec.in_hw),
        "taps": tuple(spec.kernel_hw),
        "y": (spec.batch, *spec.out_hw),
    }
    for name, array in (("x", x), ("taps", taps), ("y", y)):
        if array.dtype != spec.dtype:
            raise TypeError(f"{name}: dtype {array.dtype}, expected the spec's {spec.dtype}")
        if array.shape != expected[name]:
            raise ValueError(f"{name}: shape {array.shape}, expected {expected[name]}")

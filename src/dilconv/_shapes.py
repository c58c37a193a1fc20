"""Pure integer shape arithmetic: the one place where sizes are computed.

Every other module asks these functions; none writes a size formula of its own.
All functions work on one spatial axis at a time (plain ``int``) unless named
``*_hw``, which take and return ``(h, w)`` pairs.

The conventions (Dumoulin & Visin, *A guide to convolution arithmetic*, with
dilation): for an input of size ``i`` padded by ``lo`` and ``hi``, a kernel of
``k`` taps with dilation ``d`` and stride ``s``::

    k_eff = d * (k - 1) + 1
    o     = floor((i + lo + hi - k_eff) / s) + 1

and output pixel ``o`` reads padded input row ``o * s + t * d`` for tap ``t``.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd

Pair = tuple[int, int]
Pads = tuple[tuple[int, int], tuple[int, int]]


def effective_size(k: int, d: int) -> int:
    """Extent of a ``k``-tap kernel with dilation ``d``: ``d * (k - 1) + 1``."""
    return d * (k - 1) + 1


def conv_out_size(i: int, k: int, s: int, d: int, lo: int, hi: int) -> int:
    """Output size of a convolution along one axis; may be <= 0 for an invalid call."""
    span = i + lo + hi - effective_size(k, d)
    if span < 0:
        return 0
    return span // s + 1


def same_pads(i: int, k: int, s: int, d: int) -> tuple[int, int]:
    """TensorFlow's ``SAME`` padding: output ``ceil(i / s)``, extra row at the end."""
    out = -(-i // s)
    total = max((out - 1) * s + effective_size(k, d) - i, 0)
    return total // 2, total - total // 2


def full_pads(k: int, d: int) -> tuple[int, int]:
    """Padding that keeps every partial overlap (``scipy.signal`` mode ``full``)."""
    e = effective_size(k, d) - 1
    return e, e


def adjoint_pads(k: int, d: int, lo: int, hi: int) -> tuple[int, int] | None:
    """Pads of a stride-1 convolution's adjoint written as a correlation (of the output
    gradient with the kernel reversed): :func:`full_pads` less the forward pads, so
    that its output has the forward input's size; None where a forward pad exceeds
    ``d * (k - 1)`` (the adjoint would need negative padding).

    >>> adjoint_pads(3, 2, 2, 2), adjoint_pads(3, 2, 4, 0), adjoint_pads(3, 1, 3, 0)
    ((2, 2), (0, 4), None)
    """
    reach = effective_size(k, d) - 1
    if lo > reach or hi > reach:
        return None
    return reach - lo, reach - hi


def causal_pads(k: int, d: int) -> tuple[int, int]:
    """Keras's causal padding: ``d * (k - 1)`` before, none after, at every stride.

    With it output ``t`` reads inputs up to ``t * s`` and there are ``ceil(i / s)``
    outputs (``floor((i - 1) / s) + 1``).

    >>> causal_pads(3, 4)
    (8, 0)
    """
    return effective_size(k, d) - 1, 0


def transpose_out_size(i: int, k: int, s: int, d: int, lo: int, hi: int, out_pad: int) -> int:
    """Output size of a transposed convolution (PyTorch's ``conv_transpose2d`` rule)."""
    return (i - 1) * s - lo - hi + effective_size(k, d) + out_pad


def transpose_same_size(i: int, s: int) -> int:
    """Output size of TensorFlow's ``SAME`` transposed convolution: ``i * s``."""
    return i * s


def transpose_valid_size(i: int, k: int, s: int, d: int) -> int:
    """Output size of TensorFlow's ``VALID`` transposed convolution."""
    return (i - 1) * s + effective_size(k, d) + max(s - effective_size(k, d), 0)


def output_padding_limit(s: int, d: int) -> int:
    """``output_padding`` must be below this (PyTorch's rule): ``max(s, d)``."""
    return max(s, d)


def transpose_size_range(i: int, k: int, s: int, d: int, lo: int, hi: int) -> tuple[int, int]:
    """Smallest and largest transposed output size over every allowed ``output_padding``."""
    base = transpose_out_size(i, k, s, d, lo, hi, 0)
    return base, base + output_padding_limit(s, d) - 1


def transpose_same_range(i: int, s: int) -> tuple[int, int]:
    """Sizes ``o`` whose ``SAME`` forward convolution has ``i`` outputs: ``ceil(o / s) == i``."""
    return (i - 1) * s + 1, i * s


def transpose_valid_range(i: int, k: int, s: int, d: int) -> tuple[int, int]:
    """Sizes ``o`` whose ``VALID`` forward convolution has ``i`` outputs."""
    low = (i - 1) * s + effective_size(k, d)
    return low, low + s - 1


def unreached_tail(i: int, k: int, s: int, d: int, lo: int, hi: int) -> int:
    """Rows at the end of the padded input that no output pixel reads (0 <= r < s)."""
    out = conv_out_size(i, k, s, d, lo, hi)
    if out <= 0:
        return 0
    return i + lo + hi - ((out - 1) * s + effective_size(k, d))


def tap_output_range(i: int, k_index: int, s: int, d: int, lo: int, out: int) -> tuple[int, int]:
    """Output indices ``[first, stop)`` whose tap ``k_index`` reads a real input row.

    Output ``o`` reads unpadded row ``o * s + k_index * d - lo``; the range is where
    that lies in ``[0, i)``. An empty range has ``first >= stop``.
    """
    offset = k_index * d - lo
    first = max(0, -(offset // s))  # ceil(-offset / s), the first o with o*s + offset >= 0
    last = (i - 1 - offset) // s  # the last o with o*s + offset <= i - 1
    return first, min(out, last + 1)


def read_positions(out: int, k: int, s: int, d: int) -> list[list[int]]:
    """Padded input position each output reads through each tap: ``[o][t] = o * s + t * d``.

    >>> read_positions(2, 3, 2, 2)
    [[0, 2, 4], [2, 4, 6]]
    """
    return [[o * s + t * d for t in range(k)] for o in range(out)]


def dilated_pair_starts(out: int, d: int) -> list[int]:
    """First outputs of the pairs ``(o, o + d)`` that cover ``out`` outputs once each.

    A Winograd tile of two outputs ``d`` apart starts at every ``o`` with
    ``(o // d)`` even; where ``o + d >= out`` the pair's second output lies outside.

    >>> dilated_pair_starts(7, 2)
    [0, 1, 4, 5]
    """
    return [o for o in range(out) if (o // d) % 2 == 0]


def receptive_field_sizes(layers: list[tuple[int, int, int]]) -> list[tuple[int, int]]:
    """Receptive field and jump after each ``(kernel, stride, dilation)`` layer."""
    rf, jump, rows = 1, 1, []
    for k, s, d in layers:
        rf += (effective_size(k, d) - 1) * jump
        jump *= s
        rows.append((rf, jump))
    return rows


@dataclass(frozen=True)
class Phase:
    """One dilation phase of an axis (see :func:`dilation_phases`)."""

    residue: int
    out_first: int
    out_step: int
    sub_first: int
    inner_stride: int
    count: int


def dilation_phases(out: int, s: int, d: int) -> list[Phase]:
    """Split one axis of a strided, dilated convolution into undilated ones.

    Output ``o`` reads padded input ``o * s + t * d``. Writing ``o * s = q * d + r``
    with ``0 <= r < d``, every tap of that output reads the phase sub-image
    ``x[r::d]`` at ``q + t``: an ordinary convolution. For each residue ``r`` that
    some output has, the outputs are ``out_first + k * out_step`` for
    ``k < count``, reading sub-image rows from ``sub_first + k * inner_stride``.
    """
    g = gcd(s, d)
    step = d // g
    phases = []
    # outputs 0 .. step-1 have distinct residues and every later output repeats
    # one of them, so only min(out, step) phases exist: O(outputs), never O(d)
    for first in sorted(range(min(out, step)), key=lambda o: (o * s) % d):
        r = (first * s) % d
        count = (out - first + step - 1) // step
        phases.append(Phase(r, first, step, (first * s - r) // d, s // g, count))
    return phases


def input_span(out: int, k: int, s: int, d: int) -> int:
    """Padded-input rows that ``out`` consecutive outputs read: ``(out - 1) * s + k_eff``."""
    return (out - 1) * s + effective_size(k, d)


def halo_after(k: int, s: int, d: int) -> int:
    """Rows past a block of ``b * s`` padded rows that its ``b`` outputs still read."""
    return max(effective_size(k, d) - s, 0)


BlockPlan = tuple[tuple[int, ...], tuple[int, ...], tuple[int, int]]


def block_plan(out: int, block: int, k: int, s: int, d: int, shift: int = 0) -> BlockPlan | None:
    """Output chunks, the padded-input chunks that produce them, and the halo.

    Outputs are cut into blocks of ``block`` (the last one shorter); block ``j``
    reads padded rows from ``j * block * s`` on, :func:`input_span` of them. The
    padded input is cut at ``shift + j * block * s`` (``shift`` is the top pad when
    that keeps the input's own chunk boundaries), so block ``j`` reads its chunk,
    ``shift`` rows before it and ``k_eff - s - shift`` rows after it (when
    positive): the returned halo ``(before, after)``. Returns ``None`` in place of a
    plan whose chunks would be smaller than that halo (then use ``shift=0`` and
    ``block >= ceil((k_eff - s) / s)``).

    Examples
    --------
    >>> block_plan(10, 4, 3, 1, 2, shift=2)
    ((4, 4, 2), (6, 4, 4), (2, 2))
    """
    full, rest = divmod(out, block)
    out_chunks = (block,) * full + ((rest,) if rest else ())
    before, after = shift, max(effective_size(k, d) - s - shift, 0)
    step = block * s
    last = input_span(out_chunks[-1], k, s, d) - shift
    if len(out_chunks) == 1:
        return out_chunks, (input_span(out, k, s, d),), (0, 0)
    if min(step, last) < max(before, after):
        return None
    return out_chunks, (shift + step,) + (step,) * (len(out_chunks) - 2) + (last,), (before, after)


def choose_block_plan(in_chunk: int, out: int, lo: int, k: int, s: int, d: int) -> BlockPlan:
    """The :func:`block_plan` for input chunks of ``in_chunk`` rows and a top pad ``lo``.

    Blocks of ``ceil(in_chunk / s)`` outputs cut at ``lo + j * in_chunk`` keep the
    input's chunk boundaries when the stride divides ``in_chunk``; where their
    chunks would be smaller than the halo, blocks of :func:`output_block` cut at
    ``j * block * s`` are used instead.

    Examples
    --------
    >>> choose_block_plan(4, 10, 2, 3, 1, 2)
    ((4, 4, 2), (6, 4, 4), (2, 2))
    >>> choose_block_plan(1, 10, 2, 3, 1, 2)
    ((4, 4, 2), (4, 4, 6), (0, 4))
    """
    if in_chunk % s == 0:
        plan = block_plan(out, max(1, min(out, in_chunk // s)), k, s, d, shift=lo)
        if plan is not None:
            return plan
    plan = block_plan(out, output_block(in_chunk, out, k, s, d), k, s, d)
    if plan is None:  # output_block makes the halo fit; kept as a clear error all the same
        raise ValueError(f"no block plan for chunks of {in_chunk} and a halo of {k, s, d}")
    return plan


def output_block(in_chunk: int, out: int, k: int, s: int, d: int) -> int:
    """Outputs per block for input chunks of about ``in_chunk`` rows.

    ``ceil(in_chunk / s)``, raised so that :func:`halo_after` fits in one chunk of
    ``block * s`` rows, and at most ``out``.
    """
    fits_halo = -(-halo_after(k, s, d) // s)
    return max(1, min(out, max(-(-in_chunk // s), fits_halo)))

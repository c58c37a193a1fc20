"""The compiled step of a streamed stack: every layer of a block in one Numba call.

A stack is lowered (by :mod:`dilconv._stream_stack`) to a table of operations on
*registers*, time-major slabs ``(batch, n, C)`` of one array
``regs[register, stream, sample, channel]``. A causal convolution reads its input
register and its layer's ring of the last ``p = dilation * (k - 1)`` inputs
(``ring[stream, slot, channel]``; the input ``m`` samples before the block is at
slot ``(pos - m) % p``), writes its output register, then stores the newest
inputs in the ring: a queue update that touches only the new columns (Paine et
al. 2016). Each output sample gathers its ``k`` input columns into ``z``
(channel-major, ``z[c * k + j]``), so that the product with the layer's weights
``(O, C/groups * k)`` (the caller's ``(O, C/groups, [1,] k)`` array, reshaped
without a copy) is one contiguous dot product per output channel.

Sums are reassociated (``fastmath`` ``reassoc``) so that LLVM vectorises the dot
products: the results agree with the batch convolution within rounding, not bit
for bit.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

#: Operation codes of the table's first column.
CONV, RELU, TANH, SIGMOID, ADD, GATE = range(6)

_jit = numba.njit(nogil=True, cache=True, boundscheck=False, fastmath={"contract", "reassoc"})


@_jit
def _sigmoid(v: Any, one: Any) -> Any:
    """``1 / (1 + exp(-v))`` from ``exp(-|v|) <= 1`` (no overflow), in ``v``'s type."""
    e = np.exp(-abs(v))
    return one / (one + e) if v >= 0 else e / (one + e)


@_jit
def _tanh(v: Any, one: Any) -> Any:
    """``tanh(v) = (1 - e) / (1 + e)``, ``e = exp(-2|v|)``: 4 ns against libm's
    scalar ``tanh`` 18 ns (float32), within 1.2e-7 of NumPy's (absolute)."""
    a = abs(v)
    e = np.exp(-(a + a))
    r = (one - e) / (one + e)
    return r if v >= 0 else -r


@_jit
def _dot(a: np.ndarray, b: np.ndarray, zero: Any) -> Any:
    """``sum(a * b)`` over two contiguous vectors of one length (vectorised: reassociated)."""
    acc = zero
    for u in range(a.shape[0]):
        acc += a[u] * b[u]
    return acc


@_jit
def _dot4(w: np.ndarray, o: int, z: np.ndarray, zero: Any) -> tuple[Any, Any, Any, Any]:
    """The dot products of rows ``o .. o + 3`` of ``w`` with ``z``: each load of ``z``
    serves four rows."""
    a0 = a1 = a2 = a3 = zero
    for u in range(z.shape[0]):
        v = z[u]
        a0 += w[o, u] * v
        a1 += w[o + 1, u] * v
        a2 += w[o + 2, u] * v
        a3 += w[o + 3, u] * v
    return a0, a1, a2, a3


@_jit
def _dot4x2(
    w: np.ndarray, o: int, z0: np.ndarray, z1: np.ndarray, zero: Any
) -> tuple[Any, Any, Any, Any, Any, Any, Any, Any]:
    """:func:`_dot4` for two samples at once: each load of a weight serves both."""
    a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = zero
    for u in range(z0.shape[0]):
        v, x = z0[u], z1[u]
        w0, w1, w2, w3 = w[o, u], w[o + 1, u], w[o + 2, u], w[o + 3, u]
        a0 += w0 * v
        a1 += w1 * v
        a2 += w2 * v
        a3 += w3 * v
        b0 += w0 * x
        b1 += w1 * x
        b2 += w2 * x
        b3 += w3 * x
    return a0, a1, a2, a3, b0, b1, b2, b3


@_jit
def _conv(
    src: np.ndarray,
    dst: np.ndarray,
    n: int,
    w: np.ndarray,
    bias: np.ndarray,
    meta: np.ndarray,
    ring: np.ndarray,
    pos: int,
    z: np.ndarray,
    zero: Any,
) -> int:
    """One causal convolution of ``n`` samples of every stream; returns the new ring
    position. Its ring ``(batch, p, C)`` is ``ring[off:]``, flat."""
    k, d, groups, cin, cout, p, off = meta[0], meta[1], meta[2], meta[3], meta[4], meta[5], meta[6]
    width = cin * k
    span = width // groups
    og = cout // groups
    for b in range(src.shape[0]):
        for i0 in range(0, n, 2):
            m = min(2, n - i0)  # samples i0 (and i0 + 1) gathered into z rows 0 (and 1)
            for h in range(m):
                for j in range(k):
                    t = i0 + h - (k - 1 - j) * d
                    if t >= 0:
                        for c in range(cin):
                            z[h * width + c * k + j] = src[b, t, c]
                    else:
                        r = off + (b * p + (pos + t) % p) * cin
                        for c in range(cin):
                            z[h * width + c * k + j] = ring[r + c]
            o = 0
            while o < cout:
                base = (o // og) * span
                z0 = z[base : base + span]
                if og % 4 == 0 and m == 2:
                    z1 = z[width + base : width + base + span]
                    y = _dot4x2(w, o, z0, z1, zero)
                    for q in range(4):
                        dst[b, i0, o + q] = y[q] + bias[o + q]
                        dst[b, i0 + 1, o + q] = y[4 + q] + bias[o + q]
                    o += 4
                elif og % 4 == 0:
                    y0, y1, y2, y3 = _dot4(w, o, z0, zero)
                    dst[b, i0, o] = y0 + bias[o]
                    dst[b, i0, o + 1] = y1 + bias[o + 1]
                    dst[b, i0, o + 2] = y2 + bias[o + 2]
                    dst[b, i0, o + 3] = y3 + bias[o + 3]
                    o += 4
                else:
                    for h in range(m):
                        zh = z[h * width + base : h * width + base + span]
                        dst[b, i0 + h, o] = _dot(w[o], zh, zero) + bias[o]
                    o += 1
    if p == 0:
        return 0
    for b in range(src.shape[0]):
        for q in range(max(0, n - p), n):
            r = off + (b * p + (pos + q) % p) * cin
            for c in range(cin):
                ring[r + c] = src[b, q, c]
    return (pos + n) % p


@_jit
def _conv_one(
    src: np.ndarray,
    dst: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray,
    meta: np.ndarray,
    ring: np.ndarray,
    pos: int,
    z: np.ndarray,
    zero: Any,
) -> int:
    """:func:`_conv` for one sample (a stream fed sample by sample): no block loop."""
    k, d, groups, cin, cout, p, off = meta[0], meta[1], meta[2], meta[3], meta[4], meta[5], meta[6]
    span = cin * k // groups
    og = cout // groups
    for b in range(src.shape[0]):
        for j in range(k - 1):
            r = off + (b * p + (pos - (k - 1 - j) * d) % p) * cin
            for c in range(cin):
                z[c * k + j] = ring[r + c]
        for c in range(cin):
            z[c * k + k - 1] = src[b, 0, c]
        for o in range(0, cout - cout % 4 if og % 4 == 0 else 0, 4):
            base = (o // og) * span
            y0, y1, y2, y3 = _dot4(w, o, z[base : base + span], zero)
            dst[b, 0, o] = y0 + bias[o]
            dst[b, 0, o + 1] = y1 + bias[o + 1]
            dst[b, 0, o + 2] = y2 + bias[o + 2]
            dst[b, 0, o + 3] = y3 + bias[o + 3]
        if og % 4:
            for o in range(cout):
                base = (o // og) * span
                dst[b, 0, o] = _dot(w[o], z[base : base + span], zero) + bias[o]
    if p == 0:
        return 0
    for b in range(src.shape[0]):
        r = off + (b * p + pos) * cin
        for c in range(cin):
            ring[r + c] = src[b, 0, c]
    return (pos + 1) % p


@_jit
def run(
    ops: np.ndarray,
    regs: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    out: int,
    params: Any,
    meta: np.ndarray,
    rings: np.ndarray,
    pos: np.ndarray,
    z: np.ndarray,
    consts: np.ndarray,
) -> None:
    """Run the table ``ops`` (rows ``code, a, b, dst, conv, channels``) on the block
    ``x`` ``(batch, C, n)``; the result, register ``out``, goes to ``y`` ``(batch, O,
    n)``. ``params`` holds each convolution's weights ``(O, C/g * k)`` and bias ``(1,
    O)``; ``meta`` its ``k, dilation, groups, C, O, p, ring offset``; ``rings`` every
    ring, flat; ``consts`` 0 and 1 in the registers' dtype."""
    zero, one = consts[0], consts[1]
    batch, n = x.shape[0], x.shape[2]
    for s in range(batch):
        for c in range(x.shape[1]):
            for i in range(n):
                regs[0, s, i, c] = x[s, c, i]
    for q in range(ops.shape[0]):
        code, a, b, dst, idx, ch = ops[q, 0], ops[q, 1], ops[q, 2], ops[q, 3], ops[q, 4], ops[q, 5]
        if code == CONV:
            m = meta[idx]
            if n == 1:
                pos[idx] = _conv_one(
                    regs[a], regs[dst], params[2 * idx], params[2 * idx + 1][0], m, rings,
                    pos[idx], z, zero,
                )  # fmt: skip
                continue
            pos[idx] = _conv(
                regs[a], regs[dst], n, params[2 * idx], params[2 * idx + 1][0], m, rings,
                pos[idx], z, zero,
            )  # fmt: skip
            continue
        for s in range(batch):
            for i in range(n):
                u, v, w = regs[a, s, i, :ch], regs[b, s, i, :ch], regs[dst, s, i, :ch]
                if code == RELU:
                    for c in range(ch):
                        w[c] = u[c] if u[c] > 0 else zero
                elif code == TANH:
                    for c in range(ch):
                        w[c] = _tanh(u[c], one)
                elif code == SIGMOID:
                    for c in range(ch):
                        w[c] = _sigmoid(u[c], one)
                elif code == ADD:
                    for c in range(ch):
                        w[c] = u[c] + v[c]
                else:
                    for c in range(ch):
                        w[c] = _tanh(u[c], one) * _sigmoid(v[c], one)
    for s in range(batch):
        for i in range(n):
            for c in range(y.shape[1]):
                y[s, c, i] = regs[out, s, i, c]

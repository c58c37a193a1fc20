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
without a copy) is one contiguous dot product per output channel. A block of
:data:`PRODUCT_SAMPLES` samples or more, in a layer of one group, gathers every
output's input rows side by side instead and runs the layer as one matrix product
(:func:`_conv_products`): the weights are reordered for it on every call, since a
stream reads the layer's own arrays, which training updates in place.

Sums are reassociated (``fastmath`` ``reassoc``) so that LLVM vectorises the dot
products: the results agree with the batch convolution within rounding, not bit
for bit. Division follows NumPy's error model (no ``ZeroDivisionError`` check,
which kept LLVM from vectorising any loop that divides), and float32 ``tanh`` and
``sigmoid`` are a rational approximation whose loops vectorise
(:func:`_tanh32`).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

#: Operation codes of the table's first column.
CONV, RELU, TANH, SIGMOID, ADD, GATE = range(6)

_jit = numba.njit(
    nogil=True,
    cache=True,
    boundscheck=False,
    error_model="numpy",
    fastmath={"contract", "reassoc"},
)

#: Samples from which a block's one-group convolutions run as matrix products (BLAS):
#: below it the per-sample dot products cost less than a product's call.
PRODUCT_SAMPLES = 32

#: Largest ``|v|`` of :func:`_tanh32`'s approximation: beyond it tanh rounds to +-1.
_TANH32_CLAMP = np.float32(7.90531110763549805)
_ONE32 = np.float32(1.0)


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
def _tanh32(v: Any) -> Any:
    """float32 ``tanh(v)``: a rational function of degree 13 over 6 on ``|v| <= 7.905``
    (Eigen's ``generic_fast_tanh_float``), no branch or ``exp``, so a loop of it
    vectorises: 0.2 ns a value against 4 ns for :func:`_tanh`. Within 2.8e-7 of the
    exact tanh (absolute), NumPy's float32 ``tanh`` within 6e-8; within [-1, 1], NaN
    for NaN. The sigmoid ``(1 + tanh(v / 2)) / 2`` is then within 1.4e-7 (absolute),
    in [0, 1]: past ``|v| > 16`` it is 0 or 1 where the exact value is under 1.2e-7
    from them."""
    # NaN fails both comparisons and goes through as NaN; +-inf clamps to +-1
    x = _TANH32_CLAMP if v > _TANH32_CLAMP else v
    x = -_TANH32_CLAMP if x < -_TANH32_CLAMP else x
    x2 = x * x
    p = x2 * np.float32(-2.76076847742355e-16) + np.float32(2.00018790482477e-13)
    p = x2 * p + np.float32(-8.60467152213735e-11)
    p = x2 * p + np.float32(5.12229709037114e-08)
    p = x2 * p + np.float32(1.48572235717979e-05)
    p = x2 * p + np.float32(6.37261928875436e-04)
    p = x2 * p + np.float32(4.89352455891786e-03)
    q = x2 * np.float32(1.19825839466702e-06) + np.float32(1.18534705686654e-04)
    q = x2 * q + np.float32(2.26843463243900e-03)
    q = x2 * q + np.float32(4.89352518554385e-03)
    r = x * p / q
    r = _ONE32 if r > _ONE32 else r  # the rational function passes 1 by an ulp near the clamp
    return -_ONE32 if r < -_ONE32 else r


@_jit
def _elementwise(
    code: int, u: np.ndarray, v: np.ndarray, w: np.ndarray, one: Any, fast: bool
) -> None:
    """``w[k] = op(u[k][, v[k]])`` over three 1-D runs of one length; ``fast``: float32,
    the vectorised :func:`_tanh32` for tanh and sigmoid (``(1 + tanh(v / 2)) / 2``)."""
    half = one / (one + one)
    if code == RELU:
        for k in range(w.shape[0]):
            w[k] = u[k] if u[k] > 0 else 0 * one
    elif code == ADD:
        for k in range(w.shape[0]):
            w[k] = u[k] + v[k]
    elif fast and code == TANH:
        for k in range(w.shape[0]):
            w[k] = _tanh32(u[k])
    elif fast and code == SIGMOID:
        for k in range(w.shape[0]):
            w[k] = half + half * _tanh32(half * u[k])
    elif fast:
        for k in range(w.shape[0]):
            w[k] = _tanh32(u[k]) * (half + half * _tanh32(half * v[k]))
    elif code == TANH:
        for k in range(w.shape[0]):
            w[k] = _tanh(u[k], one)
    elif code == SIGMOID:
        for k in range(w.shape[0]):
            w[k] = _sigmoid(u[k], one)
    else:
        for k in range(w.shape[0]):
            w[k] = _tanh(u[k], one) * _sigmoid(v[k], one)


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
def _copy(dst: np.ndarray, at: int, src: np.ndarray, start: int, count: int) -> None:
    """``dst[at : at + count] = src[start : start + count]`` over flat arrays. The indices
    are unsigned, so Numba adds no wrap-around of negative ones and LLVM vectorises the
    loop: 32 values in under 2 ns, where a slice assignment took 17 ns."""
    a, s = np.uint64(at), np.uint64(start)
    for c in range(np.uint64(count)):
        dst[a + c] = src[s + c]


@_jit
def _keep_newest(
    src: np.ndarray, n: int, ring: np.ndarray, pos: int, p: int, off: int, cin: int
) -> int:
    """Store the newest ``min(n, p)`` of a block's ``n`` input samples in the ring of
    ``p`` slots at ``ring[off:]`` (the queue update); returns the new ring position."""
    if p == 0:
        return 0
    for b in range(src.shape[0]):
        flat = src[b].ravel()
        for q in range(max(0, n - p), n):
            _copy(ring, off + (b * p + (pos + q) % p) * cin, flat, q * src.shape[2], cin)
    return (pos + n) % p


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
    return _keep_newest(src, n, ring, pos, p, off, cin)


@_jit
def _conv_products(
    src: np.ndarray,
    dst: np.ndarray,
    n: int,
    w: np.ndarray,
    bias: np.ndarray,
    meta: np.ndarray,
    ring: np.ndarray,
    pos: int,
) -> int:
    """:func:`_conv` for a float block of at least :data:`PRODUCT_SAMPLES` samples and
    one group, as one matrix product per stream: the ``k`` input rows each output
    reads are gathered side by side (tap-major: ``z[i, j * C + c]``, whole rows of the
    time-major block or of the ring), times the weights reordered to ``(k * C, O)``.
    Returns the new ring position."""
    k, d, cin, cout, p, off = meta[0], meta[1], meta[3], meta[4], meta[5], meta[6]
    taps = np.empty((k * cin, cout), dtype=dst.dtype)  # (O, C * k) -> (k * C, O)
    for o in range(cout):
        for c in range(cin):
            for j in range(k):
                taps[j * cin + c, o] = w[o, c * k + j]
    width, row = k * cin, src.shape[2]
    z = np.empty((n, width), dtype=dst.dtype)
    zf = z.ravel()
    for b in range(src.shape[0]):
        sf, df = src[b].ravel(), dst[b].ravel()
        for j in range(k):
            lag = (k - 1 - j) * d  # output i reads input i - lag: the ring's, then the block's
            for i in range(min(lag, n)):
                _copy(zf, i * width + j * cin, ring, off + (b * p + (pos + i - lag) % p) * cin, cin)
            for i in range(lag, n):
                _copy(zf, i * width + j * cin, sf, (i - lag) * row, cin)
        y = np.dot(z, taps).ravel()
        for i in range(n):
            a, s = np.uint64(i * row), np.uint64(i * cout)
            for o in range(np.uint64(cout)):
                df[a + o] = y[s + o] + bias[o]
    return _keep_newest(src, n, ring, pos, p, off, cin)


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
    fast: bool,
) -> None:
    """Run the table ``ops`` (rows ``code, a, b, dst, conv, channels``) on the block
    ``x`` ``(batch, C, n)``; the result, register ``out``, goes to ``y`` ``(batch, O,
    n)``. ``params`` holds each convolution's weights ``(O, C/g * k)`` and bias ``(1,
    O)``; ``meta`` its ``k, dilation, groups, C, O, p, ring offset``; ``rings`` every
    ring, flat; ``consts`` 0 and 1 in the registers' dtype; ``fast``: float32 registers,
    whose tanh and sigmoid take :func:`_tanh32`. Blocks of :data:`PRODUCT_SAMPLES`
    or more run their one-group convolutions as matrix products
    (:func:`_conv_products`)."""
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
            if n >= PRODUCT_SAMPLES and m[2] == 1:
                pos[idx] = _conv_products(
                    regs[a], regs[dst], n, params[2 * idx], params[2 * idx + 1][0], m, rings,
                    pos[idx],
                )  # fmt: skip
                continue
            pos[idx] = _conv(
                regs[a], regs[dst], n, params[2 * idx], params[2 * idx + 1][0], m, rings,
                pos[idx], z, zero,
            )  # fmt: skip
            continue
        width = regs.shape[3]
        for s in range(batch):
            if ch == width:  # every channel: the block's samples are one run
                u, v, w = regs[a, s].ravel(), regs[b, s].ravel(), regs[dst, s].ravel()
                _elementwise(code, u[: n * ch], v[: n * ch], w[: n * ch], one, fast)
                continue
            for i in range(n):
                u, v, w = regs[a, s, i, :ch], regs[b, s, i, :ch], regs[dst, s, i, :ch]
                _elementwise(code, u, v, w, one, fast)
    for s in range(batch):
        for i in range(n):
            for c in range(y.shape[1]):
                y[s, c, i] = regs[out, s, i, c]

"""The ``"compiled"`` engine of a streamed stack: lowering a plan to the table that
:func:`dilconv._stream_kernel.run` executes, and the rings it keeps."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np
from numba import typed

from dilconv import _imports
from dilconv import _stream_kernel as K
from dilconv._native import headroom
from dilconv._stream_stack import CHUNK, CausalConv, Node

_ACTS = {"relu": K.RELU, "tanh": K.TANH, "sigmoid": K.SIGMOID}
#: The dtypes whose loop this process has loaded (Numba compiled or loaded it).
_LOADED: set[Hashable] = set()


class _Lowering:
    """Plan -> rows ``code, a, b, dst, conv, channels`` on virtual registers."""

    def __init__(self, channels: int) -> None:
        self.rows: list[list[int]] = []
        self.width = [channels]  # channels of each virtual register; 0 is the input
        self.conv = 0

    def new(self, channels: int) -> int:
        self.width.append(channels)
        return len(self.width) - 1

    def emit(self, node: Node, src: int) -> int:
        kind = node[0]
        if kind == "conv":
            conv: CausalConv = node[1]
            dst = self.new(conv.w.shape[0])
            self.rows.append([K.CONV, src, -1, dst, self.conv, conv.w.shape[0]])
            self.conv += 1
            return dst
        if kind == "act":
            dst = self.new(self.width[src])
            self.rows.append([_ACTS[node[1]], src, -1, dst, -1, self.width[src]])
            return dst
        if kind == "seq":
            for child in node[1]:
                src = self.emit(child, src)
            return src
        if kind == "res":
            inner = self.emit(node[1], src)
            dst = self.new(self.width[src])
            self.rows.append([K.ADD, src, inner, dst, -1, self.width[src]])
            return dst
        a, b = self.emit(node[1], src), self.emit(node[2], src)
        dst = self.new(self.width[a])
        self.rows.append([K.GATE, a, b, dst, -1, self.width[a]])
        return dst


def allocate(rows: list[list[int]], out: int) -> tuple[np.ndarray, int, int]:
    """Virtual registers -> physical ones, reusing a register after its last read.
    No operation writes over an input it reads: a convolution reads earlier samples
    of its input, and an elementwise loop whose output might overlap its input is
    not vectorised (LLVM checks the two ranges before taking its vector loop).
    Returns the table, the output's register and the number of registers."""
    last: dict[int, int] = {out: len(rows)}
    for q, row in enumerate(rows):
        for v in row[1:3]:
            if v >= 0:
                last[v] = max(last.get(v, -1), q)
    phys, count = {0: 0}, 1
    free: list[int] = []
    table = []
    for q, row in enumerate(rows):
        code, a, b, dst = row[:4]
        dying = [phys[v] for v in {a, b} if v >= 0 and last.get(v) == q]
        if free:
            phys[dst] = free.pop()
        else:
            phys[dst], count = count, count + 1
        free.extend(dying)
        table.append([code, phys[a], phys[b] if b >= 0 else -1, phys[dst], *row[4:]])
    return np.array(table, np.int64).reshape(-1, 6), phys[out], count


class CompiledStack:
    """Rings of every convolution and the registers of the compiled step."""

    def __init__(self, node: Node, convs: list[CausalConv], batch: int, dtype: np.dtype) -> None:
        low = _Lowering(convs[0].channels)
        out = low.emit(node, 0)
        self.ops, self.out, self.nregs = allocate(low.rows, out)
        self.out_channels = low.width[out]
        self.cmax = max(low.width)
        self.batch, self.dtype = batch, dtype
        self.consts = np.array([0, 1], dtype)
        self.params = typed.List()
        meta, offset = [], 0
        for c in convs:
            o, cg, k = c.w.shape
            # (O, C/g, k) -> (O, C/g * k): a view of the layer's array when it is contiguous
            self.params.append(np.asarray(c.w, dtype=dtype).reshape(o, cg * k))
            bias = np.zeros(o, dtype) if c.bias is None else np.asarray(c.bias, dtype=dtype)
            self.params.append(bias.reshape(1, o))
            p = c.dilation * (k - 1)
            meta.append([k, c.dilation, c.groups, c.channels, o, p, offset])
            offset += batch * p * c.channels
        self.meta = np.array(meta, np.int64)
        self.ring = np.zeros(offset, dtype)  # every layer's ring (batch, p, C), flat
        self.pos = np.zeros(len(convs), np.int64)
        # the gathered input columns of two samples, (2, C * k), flat
        self.z = np.zeros(2 * max(c.channels * c.w.shape[2] for c in convs), dtype)
        self.regs = np.zeros((self.nregs, batch, 0, self.cmax), dtype)

    def rings(self) -> list[np.ndarray]:
        """Each convolution's ring ``(batch, p, C)``, a view."""
        return [
            self.ring[off : off + self.batch * p * c].reshape(self.batch, p, c)
            for _, _, _, c, _, p, off in self.meta
        ]

    def push(self, x: np.ndarray) -> np.ndarray:
        # contiguous blocks only: one compiled signature per dtype (each costs seconds)
        n = x.shape[2]
        if n <= CHUNK:  # one call (a sample's path: ~15 us of Python and dispatch)
            y = np.empty((self.batch, self.out_channels, n), self.dtype)
            if self.regs.shape[2] < n:
                self.regs = np.zeros((self.nregs, self.batch, n, self.cmax), self.dtype)
            self._run(np.ascontiguousarray(x), y)
            return y
        if self.regs.shape[2] < CHUNK:
            self.regs = np.zeros((self.nregs, self.batch, CHUNK, self.cmax), self.dtype)
        parts = []
        for t in range(0, n, CHUNK):
            part = np.ascontiguousarray(x[:, :, t : t + CHUNK])
            parts.append(np.empty((self.batch, self.out_channels, part.shape[2]), self.dtype))
            self._run(part, parts[-1])
        return np.concatenate(parts, axis=2)

    def _run(self, x: np.ndarray, y: np.ndarray) -> None:
        if self.dtype.str in _LOADED:
            self._kernel(x, y)
        else:  # Numba compiles (or loads) run for this dtype on this first call
            _imports.load_once(
                _LOADED, self.dtype.str, lambda: self._kernel(x, y),
                room=headroom.NUMBA_BYTES, what="compiling the streamed stack's loop",
            )  # fmt: skip

    def _kernel(self, x: np.ndarray, y: np.ndarray) -> None:
        K.run(
            self.ops, self.regs, x, y, self.out, self.params, self.meta, self.ring, self.pos,
            self.z, self.consts, self.dtype == np.float32,
        )  # fmt: skip

    def reset(self, index: int | None) -> None:
        for k, ring in enumerate(self.rings()):
            if index is None:
                ring[...] = 0
                self.pos[k] = 0
            else:
                ring[index] = 0

    def states(self) -> list[tuple[np.ndarray, int]]:
        out = []
        for ring, pos in zip(self.rings(), self.pos, strict=True):
            p = ring.shape[1]
            order = (pos + np.arange(p)) % p if p else np.arange(0)
            out.append((np.ascontiguousarray(ring[:, order, :].transpose(0, 2, 1)), 0))
        return out

    def load_states(self, states: list[dict[str, Any]]) -> None:
        checked = []
        for k, (ring, st) in enumerate(zip(self.rings(), states, strict=True)):
            history = np.asarray(st["history"])
            want = (ring.shape[0], ring.shape[2], ring.shape[1])
            if history.shape != want:
                raise ValueError(
                    f"state['history.{k}'] must have shape {want}, got {history.shape}"
                )
            if not np.can_cast(history.dtype, self.dtype, "same_kind"):
                raise TypeError(
                    f"state['history.{k}'] has dtype {history.dtype}; expected {self.dtype}"
                )
            phase = np.asarray(st["phase"])
            if phase.ndim != 0 or phase.dtype.kind not in "iu" or int(phase) != 0:
                raise ValueError(f"state['phase.{k}'] must be 0 (stride 1), got {st['phase']!r}")
            checked.append(history)
        for k, (ring, history) in enumerate(zip(self.rings(), checked, strict=True)):
            ring[...] = history.transpose(0, 2, 1)
            self.pos[k] = 0

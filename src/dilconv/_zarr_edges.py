"""The edges of decoded store chunks, kept for the neighbouring windows that read them.

A Zarr chunk is compressed whole: a window that needs four rows of its
neighbour's chunk decodes all of it. Done naively, an output chunk's window
decodes nine store chunks (its own and eight neighbours) to use one and a thin
frame of the others. Here, whenever a task decodes a whole store chunk, it keeps
copies of the chunk's edges (the first and last ``width`` rows along each spatial
axis, ``width = k_eff - 1``, as far as a neighbour's window reaches) in a small
per-process cache (when that is at most an eighth of the chunk's rows); a later
window in the same process reads those rows from the
cache. Each process then decodes a chunk about once as a window's centre and
seldom again, and the cache holds a thin frame per chunk, not chunks.

Entries are keyed by a token drawn for each plan, so a later call (on a store
rewritten since) never reads an earlier call's edges.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Bytes of edges each process keeps (least recently used go first): enough for
#: the frames of two rows of chunks across a 32,768-pixel-wide float32 image of
#: 1024^2 chunks and a 12-row reach (6 MiB a row), little beside a worker's memory.
EDGE_CACHE_BYTES = 32 * 2**20

Edges = dict[tuple[int, int], np.ndarray]  # (axis, 0: first rows / 1: last rows) -> rows


class EdgeCache:
    """A thread-safe LRU of chunk edges bounded by bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._entries: OrderedDict[Any, tuple[Edges, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Any) -> Edges | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            self._entries.move_to_end(key)
            return found[0]

    def put(self, key: Any, edges: Edges) -> None:
        size = sum(a.nbytes for a in edges.values())
        with self._lock:
            if key in self._entries or size > self.limit:
                return
            self._entries[key] = (edges, size)
            self._bytes += size
            while self._bytes > self.limit:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped

    @property
    def nbytes(self) -> int:
        """Bytes of edges held now."""
        return self._bytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


CACHE = EdgeCache(EDGE_CACHE_BYTES)


def _thin(width: int, n: int) -> bool:
    """Edges of ``width`` rows are worth keeping for chunks of ``n``: an eighth or less."""
    return 0 < 8 * width <= n


def _rows(ndim: int, axis: int, where: slice) -> tuple[slice, ...]:
    index = [slice(None)] * ndim
    index[axis] = where
    return tuple(index)


@dataclass(frozen=True)
class EdgeReader:
    """Reads one store chunk's piece, from the edge cache where it can.

    ``widths`` gives, per axis of the source, how many rows at each end of a
    chunk to keep (0: none along that axis).
    """

    token: str
    widths: tuple[int, ...]

    def read(self, source: Any, src: tuple[slice, ...]) -> np.ndarray:
        """``source[src]``, for ``src`` inside one store chunk."""
        chunks, shape = source.chunks, source.shape
        origin = tuple(s.start // c * c for s, c in zip(src, chunks, strict=True))
        extent = tuple(min(o + c, n) - o for o, c, n in zip(origin, chunks, shape, strict=True))
        rel = [(s.start - o, s.stop - o) for s, o in zip(src, origin, strict=True)]
        if all(a == 0 and b == e for (a, b), e in zip(rel, extent, strict=True)):
            block = np.asarray(source[src])
            self._keep(origin, block)
            return block
        for axis, width in enumerate(self.widths):
            (a, b), e = rel[axis], extent[axis]
            side = 0 if b <= width else 1 if a >= e - width else None
            if side is None or not _thin(width, e):
                continue
            edges = CACHE.get((self.token, origin))
            if edges is None:
                whole = tuple(slice(o, o + n) for o, n in zip(origin, extent, strict=True))
                edges = self._keep(origin, np.asarray(source[whole]))
            shift = 0 if side == 0 else e - width
            where = [slice(lo, hi) for lo, hi in rel]
            where[axis] = slice(a - shift, b - shift)
            return edges[(axis, side)][tuple(where)]
        return np.asarray(source[src])

    def _keep(self, origin: tuple[int, ...], block: np.ndarray) -> Edges:
        edges: Edges = {}
        for axis, width in enumerate(self.widths):
            n = block.shape[axis]
            if width and _thin(width, n):
                edges[(axis, 0)] = block[_rows(block.ndim, axis, slice(0, width))].copy()
                edges[(axis, 1)] = block[_rows(block.ndim, axis, slice(n - width, n))].copy()
        if edges:
            CACHE.put((self.token, origin), edges)
        return edges

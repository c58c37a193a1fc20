"""New result arrays, large ones on memory that earlier results have let go of.

A result of a few MiB is new memory: the allocator maps fresh pages for it, and
the operating system zeroes each page when the call first writes it. On a 3x3
layer of 64 channels over a batch of 8 at 128x128 (a 32 MiB result) that was 1.9
of 16.6 ms here, and the 32 MiB result of a 3x3x3 layer of 32 channels on 64^3
voxels 1.4 of 32.6 ms; TensorFlow's allocator keeps such memory, and so does
this module. The large packed weights of a call (``blocked``'s packing, Winograd's
``U``, an NCHW call's weights moved to HWIO) are made here too: on ``aspp``'s 2048 ->
256 channels their 70 MiB of fresh pages cost NCHW calls 16-32 ms of 85-101.
A result of :data:`MIN_BYTES` or more is a view of a *block*, a
1-D byte array this module keeps, through a :class:`~dilconv._native.calls.Lease`:
the result's base is the lease, and every view of the result, however derived,
holds it. When the last of them goes, the lease's finalizer hands the block back,
and the next result of exactly that size is made on it. A block is therefore
reused only once no array refers to any byte of it, whichever thread dropped the
last one.

The blocks kept, in use or not, total at most the ``recycle_bytes`` setting
(``dilconv.set_config``; 0 keeps none): past it the least recently returned
blocks are let go, and a result that does not fit is plain new memory.

A result computed from one input as it streams past (``apart_from``) is placed
half a page away from it in the low address bits: a load whose address matches a
recent store's in its last 12 bits waits for that store. A one-channel 2048 x 2048
layer, 3x3 taps, took 5.6-5.9 ms with its result 48 bytes past its input modulo
4 KiB and 2.9-3.1 ms 2 KiB past (``np.copyto``: 3.1 ms); a 2^24-sample signal, 3
taps, 19 ms against 6.5 (2026-12-06, AMD EPYC 7001, 2 threads). Each block is
:data:`PAGE` bytes longer than its results for that.
"""

from __future__ import annotations

import collections
import math
from typing import Any

import numpy as np

from dilconv import _config
from dilconv._native import calls, forksafe

#: Results smaller than this are plain new arrays (the allocator reuses small blocks
#: itself; NumPy advises huge pages from 4 MiB on).
MIN_BYTES = 4 * 2**20

#: The span of the address bits a load is compared on with earlier stores (4 KiB):
#: results placed ``apart_from`` their input start half of it away, and every block
#: is this much longer than its results.
PAGE = 4096


class _Kept:
    """The blocks: free ones by size (least recently returned first), the bytes of
    all of them, and the blocks handed back by finalizers since the last call
    (a deque: a finalizer may run inside :meth:`take`, under the lock, whenever
    the garbage collector does). Each block goes with its address, read once."""

    def __init__(self) -> None:
        self.lock = forksafe.ForkSafeLock()
        self.free: collections.OrderedDict[int, tuple[np.ndarray, int]] = collections.OrderedDict()
        self.total = 0
        self.returned: collections.deque[tuple[np.ndarray, int]] = collections.deque()

    def take(self, nbytes: int, budget: int) -> tuple[np.ndarray, int] | None:
        """A block of ``nbytes`` now leased, with its address (None: keeping one would
        pass ``budget``)."""
        with self.lock:
            while self.returned:
                kept = self.returned.popleft()
                self.free[id(kept[0])] = kept
            for key, kept in self.free.items():
                if kept[0].nbytes == nbytes + PAGE:
                    del self.free[key]
                    self._trim(budget)
                    return kept
            self._trim(budget - nbytes)
            if self.total + nbytes > budget:
                return None
            self.total += nbytes
            block = calls.aligned_empty(nbytes + PAGE, np.dtype(np.uint8))
            return block, calls.block_address(block)

    def _trim(self, budget: int) -> None:
        """Let free blocks go, least recently returned first, until the kept total
        is within ``budget`` or none is free."""
        while self.total > budget and self.free:
            _, (block, _) = self.free.popitem(last=False)
            self.total -= block.nbytes - PAGE

    def forget(self) -> None:
        """Let every free block go (a block in use is kept again when it returns, within
        the bound)."""
        with self.lock:
            while self.returned:
                kept = self.returned.popleft()
                self.free[id(kept[0])] = kept
            self._trim(0)


_KEPT = _Kept()


def _return(block: np.ndarray, address: int) -> None:
    _KEPT.returned.append((block, address))  # atomic: no lock, whatever thread this runs in


def new_result(
    shape: tuple[int, ...], dtype: Any, *, apart_from: np.ndarray | None = None
) -> np.ndarray:
    """A new C-contiguous array of ``shape`` and ``dtype`` for a call's result, or for
    a large array the call makes anew each time (packed weights), its values unset as
    ``np.empty``'s; from :data:`MIN_BYTES` on, on a kept block where one is free.
    ``apart_from``: the input the result is computed from, which the result then
    starts half a :data:`PAGE` from, modulo a page (for results of a page or more).

    Examples
    --------
    >>> y = new_result((1024, 1024, 2), np.float32)
    >>> y.shape, y.dtype, y.flags.c_contiguous, y.flags.writeable
    ((1024, 1024, 2), dtype('float32'), True, True)
    >>> new_result((2, 3), np.float64).flags.owndata  # small: a plain array
    True
    >>> x = np.ones((64, 64), np.float32)
    >>> y = new_result(x.shape, x.dtype, apart_from=x)
    >>> (calls.address_of(y) - calls.address_of(x)) % PAGE // 64 * 64
    2048
    """
    dtype = np.dtype(dtype)
    shape = tuple(map(int, shape))
    nbytes = math.prod(shape) * dtype.itemsize
    budget = _config.get("recycle_bytes") if nbytes >= MIN_BYTES else 0
    kept = _KEPT.take(nbytes, budget) if budget >= nbytes else None
    apart = apart_from if nbytes >= PAGE else None
    if kept is None:
        if apart is None:
            return np.empty(shape, dtype)
        raw = np.empty(nbytes + PAGE, np.uint8)
        at = _placed(calls.address_of(raw), apart)
        return raw[at : at + nbytes].view(dtype).reshape(shape)
    block, address = kept
    at = 0 if apart is None else _placed(address, apart)
    return np.asarray(
        calls.Lease(block, shape, dtype, address=address, on_release=_return, offset=at)
    )


def _placed(address: int, apart_from: np.ndarray) -> int:
    """The offset from ``address``, a multiple of 64 bytes under :data:`PAGE`, at which
    an array starts half a page (up to 63 bytes more) from ``apart_from``, modulo a page."""
    gap = (calls.address_of(apart_from) + PAGE // 2 - address) % PAGE
    return -(-gap // 64) * 64 % PAGE


def kept_bytes() -> int:
    """Bytes of the blocks kept now, in use or free."""
    return _KEPT.total


def forget() -> None:
    """Let every free kept block go (tests, and a program about to need the memory)."""
    _KEPT.forget()

"""The size of the CPU's last-level cache, for the loops that store past the caches.

A loop whose input and output together outgrow this cache would have each output
line fetched before it is written and evicted unread; such loops store whole aligned
vectors past the caches instead (non-temporal stores): the one-channel row loop
(:mod:`~dilconv._native.stencil_rows`) and the layout moves
(:mod:`~dilconv._native.channels`).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dilconv._spec import ConvSpec

#: The last-level cache where the system does not say (bytes).
DEFAULT_BYTES = 32 * 2**20

#: Where Linux describes the first CPU's caches.
CACHE_DIR = Path("/sys/devices/system/cpu/cpu0/cache")


def parse_size(text: str) -> int:
    """``"32768K"`` (as Linux writes a cache's size) in bytes; 0 if unreadable.

    Examples
    --------
    >>> parse_size("32768K"), parse_size("1M\\n"), parse_size("512"), parse_size("n/a")
    (33554432, 1048576, 512, 0)
    """
    text = text.strip().upper()
    scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
    digits = text[:-1] if text[-1:] in "KMG" else text
    return int(digits) * scale if digits.isdigit() else 0


@functools.lru_cache(maxsize=1)
def size() -> int:
    """The CPU's last-level cache in bytes (Linux's description of CPU 0's caches),
    else :data:`DEFAULT_BYTES`.

    Examples
    --------
    >>> size() > 0
    True
    """
    best_level, best = 0, 0
    try:
        for index in CACHE_DIR.glob("index*"):
            level = int((index / "level").read_text())
            found = parse_size((index / "size").read_text())
            if found and level > best_level:
                best_level, best = level, found
    except (OSError, ValueError):
        return DEFAULT_BYTES
    return best or DEFAULT_BYTES


def outgrown(nbytes: int) -> bool:
    """Whether ``nbytes`` of input and output together outgrow the last-level cache
    (then stores go past the caches: each output line would otherwise be fetched
    before it is written, and evicted unread).

    Examples
    --------
    >>> outgrown(size()), outgrown(size() - 1)
    (True, False)
    """
    return nbytes >= size()


def call_outgrows(spec: ConvSpec) -> bool:
    """:func:`outgrown` for the input and output of one call of ``spec`` (16 MiB in
    and 16 MiB out, on a 32 MiB cache)."""
    (h, w), (ho, wo) = spec.in_hw, spec.out_hw
    elements = spec.batch * (h * w * spec.in_channels + ho * wo * spec.out_channels)
    return outgrown(elements * spec.dtype.itemsize)

"""The size of the CPU's last-level cache (at most a share per CPU), for the loops that
store past the caches, and of a core's own cache (:func:`core_size`).

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


#: The most last-level cache dilconv counts on per CPU that shares it (bytes). A
#: virtual machine's CPUs report the host's whole cache, which other guests share:
#: this Xeon's two vCPUs report 480 MiB. There, moving 2048 channels of 65 x 65 to
#: NHWC took 8.6 ms storing through the caches and 2.5 ms past them, 64 channels of
#: 256 x 256 3.3 and 1.5 ms, and 4 MiB of them 1.13 and 0.73 ms (the same for 1 MiB);
#: the one-channel 2048 x 2048 layer (``seed``) 1.9 -> 1.7 ms, ``aspp`` d = 12 on
#: NCHW arrays 117-118 -> 107-114 ms (2026-12-06, 2 vCPUs, medians of 9-15). A
#: machine's own cache is rarely larger per CPU: 1.9-3.75 MiB a core on server chips.
SHARE_PER_CPU = 4 * 2**20


def count_cpus(text: str) -> int:
    """CPUs in a Linux CPU list (``"0-3,8"``); 0 if unreadable.

    Examples
    --------
    >>> count_cpus("0-1\\n"), count_cpus("0-3,8,10-11"), count_cpus("n/a")
    (2, 7, 0)
    """
    total = 0
    for part in text.strip().split(","):
        low, _, high = part.partition("-")
        if not low.isdigit() or (high and not high.isdigit()) or int(high or low) < int(low):
            return 0
        total += int(high or low) - int(low) + 1
    return total


@functools.lru_cache(maxsize=1)
def size() -> int:
    """The last-level cache dilconv counts on, in bytes: the highest level Linux
    describes for CPU 0, at most :data:`SHARE_PER_CPU` per CPU it lists as sharing
    it, else :data:`DEFAULT_BYTES`.

    Examples
    --------
    >>> size() > 0
    True
    """
    best_level, best, sharing = 0, 0, 0
    try:
        for index in CACHE_DIR.glob("index*"):
            level = int((index / "level").read_text())
            found = parse_size((index / "size").read_text())
            if found and level > best_level:
                best_level, best = level, found
                shared = index / "shared_cpu_list"
                sharing = count_cpus(shared.read_text()) if shared.exists() else 0
    except (OSError, ValueError):
        return DEFAULT_BYTES
    if not best:
        return DEFAULT_BYTES
    return min(best, SHARE_PER_CPU * sharing) if sharing else best


#: The cache a core has to itself where the system does not say (bytes).
DEFAULT_CORE_BYTES = 2**20


@functools.lru_cache(maxsize=1)
def core_size() -> int:
    """Bytes of the level-2 cache per CPU that shares it (a core's own cache; half of
    it where two hardware threads share a core), else :data:`DEFAULT_CORE_BYTES`.

    Examples
    --------
    >>> core_size() > 0
    True
    """
    try:
        for index in CACHE_DIR.glob("index*"):
            if int((index / "level").read_text()) != 2:
                continue
            found = parse_size((index / "size").read_text())
            shared = index / "shared_cpu_list"
            sharing = count_cpus(shared.read_text()) if shared.exists() else 0
            if found:
                return found // max(1, sharing)
    except (OSError, ValueError):
        pass
    return DEFAULT_CORE_BYTES


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

"""Process-wide settings: the workspace bound every algorithm stays under."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator

#: Default bound, in bytes, on the scratch memory one call may allocate beyond its
#: input, output and weights (gathered windows, FFT buffers, padded slabs).
DEFAULT_WORKSPACE_BYTES = 256 * 2**20

_workspace_bytes = int(os.environ.get("DILCONV_WORKSPACE_BYTES", DEFAULT_WORKSPACE_BYTES))


def get_workspace_limit() -> int:
    """Return the current workspace bound in bytes.

    Examples
    --------
    >>> import dilconv
    >>> dilconv.get_workspace_limit() > 0
    True
    """
    return _workspace_bytes


def set_workspace_limit(nbytes: int) -> None:
    """Set the workspace bound in bytes (at least 1 MiB).

    Chunked algorithms split their work to stay under it; an algorithm that cannot
    is refused with a ValueError when asked for by name, and skipped by ``"auto"``.
    The environment variable ``DILCONV_WORKSPACE_BYTES`` sets the starting value.
    """
    global _workspace_bytes
    if isinstance(nbytes, bool) or not isinstance(nbytes, int):
        raise TypeError(f"nbytes must be an int, got {nbytes!r} of type {type(nbytes).__name__}")
    if nbytes < 2**20:
        raise ValueError(f"nbytes must be at least 1 MiB (1048576), got {nbytes}")
    _workspace_bytes = nbytes


@contextlib.contextmanager
def workspace_limit(nbytes: int) -> Iterator[None]:
    """Temporarily set the workspace bound.

    Examples
    --------
    >>> import dilconv
    >>> with dilconv.workspace_limit(64 * 2**20):
    ...     dilconv.get_workspace_limit() == 64 * 2**20
    True
    """
    before = get_workspace_limit()
    set_workspace_limit(nbytes)
    try:
        yield
    finally:
        set_workspace_limit(before)


@functools.cache
def physical_memory_bytes() -> int:
    """Total physical memory of this machine, or a large number where unknown (read once)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**62

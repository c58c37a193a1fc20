"""Address space left under the process's limit, checked before LLVM runs.

LLVM (through llvmlite for dilconv's own loops, through Numba for the ``compiled``
loops) does not report an allocation that fails: it aborts the whole process
("LLVM ERROR: out of memory", or ``std::bad_alloc`` and ``terminate``). Measured
here with the address space limited (``RLIMIT_AS``, as services and sandboxes set
it): 2 MiB left aborted the first compile of ``blocked``, 8 MiB let it finish, and
loading Numba and compiling its loops added about 150 MiB to the process.

So before LLVM compiles or loads code, :func:`require` checks what the limit
leaves and raises :class:`MemoryError` (which Python code expects from a failed
allocation) where it is less than the work needs. Without a limit, or where the
process's size cannot be read (not Linux), there is nothing to check.
"""

from __future__ import annotations

import os

#: Address space to leave for llvmlite to compile or load one module of dilconv's
#: (bytes): 8 times what the largest took here.
LLVM_BYTES = 64 * 2**20
#: Address space to leave for importing Numba and compiling its loops (bytes).
NUMBA_BYTES = 256 * 2**20
#: Below this much address space left, a worker thread the system refuses is taken
#: as the limit's doing (a thread takes an 8 MiB stack and, once it allocates, a
#: 64 MiB arena of glibc's malloc) and raised as MemoryError.
THREAD_BYTES = 128 * 2**20

STATM = "/proc/self/statm"


def left() -> int | None:
    """Bytes of address space this process may still map under ``RLIMIT_AS``, or
    None where there is no limit or the process's size cannot be read.

    Examples
    --------
    >>> room = left()
    >>> room is None or room >= 0
    True
    """
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit == resource.RLIM_INFINITY:
            return None
        with open(STATM) as statm:
            pages = int(statm.read().split()[0])
    except (ImportError, OSError, ValueError, IndexError):
        return None
    return max(0, limit - pages * os.sysconf("SC_PAGE_SIZE"))


def require(needed: int, what: str) -> None:
    """Raise :class:`MemoryError` unless ``needed`` bytes of address space are left
    for ``what`` (a phrase: "compiling machine code with LLVM").

    Examples
    --------
    >>> require(1, "nothing much")  # no limit here, or room for a byte
    """
    room = left()
    if room is not None and room < needed:
        raise MemoryError(
            f"{what} needs about {needed / 2**20:.0f} MiB of address space, and the "
            f"process's limit (RLIMIT_AS) leaves {room / 2**20:.1f} MiB"
        )

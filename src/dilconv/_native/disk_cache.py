"""The disk cache of compiled object code, built so that it can never hurt.

Compiling a tile loop takes 40-70 ms; a later process loads its object code from
:func:`cache_dir` instead. Object code read from disk becomes machine code that
runs in this process, so nothing reaches LLVM unchecked:

- Each entry is a header (:data:`MAGIC`, :data:`FORMAT`, the SHA-256 of the
  entry's key, the payload's length and SHA-256) followed by the object code.
  The key covers everything the code depends on (the IR, the versions of dilconv,
  llvmlite and LLVM, the CPU's name and features, the optimisation pipeline; see
  :func:`dilconv._native.compiler.compile_function`). An entry that is missing,
  truncated, garbled, or written for another key is deleted and compiled again;
  LLVM never sees its bytes.
- Entries are written to a temporary file in the same directory, then renamed
  over the entry (``os.replace``), so a reader sees a whole entry or none, and
  two processes writing the same entry at once both leave a whole one.
- A directory that other users could write is refused: whoever can write it can
  run code in every process that loads from it. The directory must belong to
  this user and be writable by nobody else (it is created with mode 0700).
- Where the directory cannot be used (cannot be created, is refused, or writing
  fails), the code is compiled in memory: correct, only slower to start. One
  :class:`CacheWarning` per process says why.

The checksum detects damage, not an attacker: the protection against a hostile
writer is the ownership and permission check.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import threading
import warnings
from pathlib import Path
from typing import NamedTuple

#: First bytes of every entry.
MAGIC = b"DILCONV\x00"
#: Version of the entry layout (part of every key: a new layout never reads an old one).
FORMAT = 1
#: magic, format, key digest, payload length, payload digest.
_HEADER = struct.Struct("<8sI32sQ32s")

_WARNED: set[str] = set()
#: Why the last :func:`cache_dir` found no usable directory.
_REFUSED: list[str] = ["no cache directory was looked up"]
_WARN_LOCK = threading.Lock()


class CacheWarning(RuntimeWarning):
    """dilconv's disk cache of compiled code cannot be used; code is compiled in memory."""


class Slot(NamedTuple):
    """Where the entry for one key lives."""

    path: Path
    key: bytes  # SHA-256 of the key text


def cache_dir() -> Path | None:
    """Where compiled code is kept between processes, or None if nowhere usable.

    ``dilconv.get_config()["cache_dir"]``: by default ``$DILCONV_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/dilconv``, else ``~/.cache/dilconv``; created (mode 0700)
    when missing. None where it cannot be created or is refused (see :func:`refusal`).
    """
    from dilconv import _config

    path = Path(_config.get("cache_dir"))
    reason = refusal(path)
    if reason is not None:
        _REFUSED[0] = reason
    return path if reason is None else None


def refusal(path: Path) -> str | None:
    """Why directory ``path`` cannot hold the cache (created if missing), or None."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.stat()
    except FileExistsError:
        return f"{path} is not a directory"
    except OSError as err:
        return f"{path} cannot be created ({err.strerror or err})"
    if not stat.S_ISDIR(info.st_mode):
        return f"{path} is not a directory"
    if info.st_uid != os.geteuid():
        return f"{path} belongs to user {info.st_uid}, not to this user ({os.geteuid()})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (
            f"{path} is writable by other users (mode {stat.filemode(info.st_mode)}), who "
            "could then run code in this process; make it private (chmod go-w)"
        )
    return None


def warn_once(reason: str) -> None:
    """One :class:`CacheWarning` per process (the first reason given)."""
    with _WARN_LOCK:
        if _WARNED:
            return
        _WARNED.add(reason)
    warnings.warn(
        f"dilconv cannot use its disk cache of compiled code: {reason}; compiling in memory "
        "instead (correct, but every process compiles again). Set DILCONV_CACHE_DIR to a "
        "private, writable directory.",
        CacheWarning,
        stacklevel=4,
    )


def slot(name: str, key: str) -> Slot | None:
    """The entry of function ``name`` for ``key``, or None (with one warning) without a cache."""
    folder = cache_dir()
    if folder is None:
        warn_once(_REFUSED[0])
        return None
    digest = hashlib.sha256(key.encode()).digest()
    return Slot(folder / f"{name}-{digest.hex()[:40]}.o", digest)


def pack(key: bytes, payload: bytes) -> bytes:
    """An entry: the header, then ``payload``."""
    header = _HEADER.pack(MAGIC, FORMAT, key, len(payload), hashlib.sha256(payload).digest())
    return header + payload


def unpack(data: bytes, key: bytes) -> bytes | None:
    """The payload of entry ``data`` if it is whole and written for ``key``, else None.

    Examples
    --------
    >>> entry = pack(b"k" * 32, b"code")
    >>> unpack(entry, b"k" * 32)
    b'code'
    >>> unpack(entry[:-1], b"k" * 32) is None, unpack(entry, b"x" * 32) is None
    (True, True)
    """
    if len(data) < _HEADER.size:
        return None
    magic, version, found, length, digest = _HEADER.unpack_from(data)
    payload = data[_HEADER.size :]
    if (magic, version, found, length) != (MAGIC, FORMAT, key, len(payload)):
        return None
    return payload if hashlib.sha256(payload).digest() == digest else None


def read(entry: Slot) -> bytes | None:
    """The verified object code of ``entry``, or None (a damaged entry is deleted)."""
    try:
        fd = os.open(entry.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError:  # a link, a directory in the way, no permission: compile instead
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            return None
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read()
    except OSError:
        return None
    finally:
        os.close(fd)
    payload = unpack(data, entry.key)
    if payload is None:
        discard(entry.path)
    return payload


def discard(path: Path) -> None:
    """Delete a damaged entry (another process may have replaced or deleted it already)."""
    try:
        path.unlink()
    except OSError:
        pass


def write(entry: Slot, payload: bytes) -> None:
    """Store ``payload`` as ``entry`` atomically; on failure warn once and go on."""
    import tempfile  # here, not at import: only a process that compiles writes

    try:
        fd, temporary = tempfile.mkstemp(
            dir=entry.path.parent, prefix=f".{entry.path.stem}-", suffix=".tmp"
        )
    except OSError as err:
        warn_once(f"{entry.path.parent} is not writable ({err.strerror or err})")
        return
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pack(entry.key, payload))
        os.replace(temporary, entry.path)
    except OSError as err:
        discard(Path(temporary))
        warn_once(f"{entry.path} cannot be written ({err.strerror or err})")

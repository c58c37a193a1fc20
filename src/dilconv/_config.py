"""Settings, the scikit-learn way: :func:`get_config`, :func:`set_config`, :func:`config_context`.

Each setting is looked up, at the moment a call needs it, in three layers:

1. the innermost :func:`config_context` block of the calling thread (a
   :class:`contextvars.ContextVar`, so threads and asyncio tasks never see each
   other's blocks);
2. the process-wide value given to :func:`set_config`;
3. the environment variable (``DILCONV_THREADS``, ``DILCONV_SPIN_MS``,
   ``DILCONV_CACHE_DIR``, ``DILCONV_WORKSPACE_BYTES``, ``DILCONV_RECYCLE_BYTES``,
   ``DILCONV_FIRST_CALLS``), read at every lookup (so a
   program may change it between calls), else the built-in default.

A value given to :func:`set_config` or :func:`config_context` that is out of range
raises ValueError (TypeError for a wrong type) naming the setting. An environment
value that would be refused gives one :class:`RuntimeWarning` per value (each text is
parsed once) and the default instead: a typo in a shell must not break
``import dilconv`` or every call.
``threads`` is clamped to the CPUs this process may run on.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import numbers
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

#: Default bound, in bytes, on the scratch memory one call may allocate beyond its
#: input, output and weights (gathered windows, FFT buffers, padded slabs).
DEFAULT_WORKSPACE_BYTES = 256 * 2**20
#: Smallest workspace bound accepted.
MIN_WORKSPACE_BYTES = 2**20
#: Default bound, in bytes, on the dropped results kept to hold later results of the
#: same size (:mod:`dilconv._native.results`).
DEFAULT_RECYCLE_BYTES = 256 * 2**20
#: Default milliseconds an idle pool worker spins before it sleeps
#: (:data:`dilconv._native.spin.DEFAULT_SPIN_MS`, measured there).
DEFAULT_SPIN_MS = 20.0
#: Longest spin accepted: past this a worker burns a core for nothing measurable.
MAX_SPIN_MS = 100.0

#: The environment variable that gives each setting its default (None: none).
ENVIRONMENT = {
    "threads": "DILCONV_THREADS",
    "spin_ms": "DILCONV_SPIN_MS",
    "cache_dir": "DILCONV_CACHE_DIR",
    "workspace_bytes": "DILCONV_WORKSPACE_BYTES",
    "recycle_bytes": "DILCONV_RECYCLE_BYTES",
    "allow_fft": None,
    "first_calls": "DILCONV_FIRST_CALLS",
}
NAMES = tuple(ENVIRONMENT)


#: Seconds an answer of :func:`available_cpus` is used before the mask is read again.
CPUS_SECONDS = 1.0
#: (the ``time.monotonic()`` of the last read, its answer); ``threads`` is read several
#: times in every call, and each read of the mask is a system call.
_cpus_read: tuple[float, int] = (-math.inf, 1)


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, where the OS has one).

    The mask is read again once :data:`CPUS_SECONDS` have passed since the last read,
    so a change of affinity counts from at most a second later.
    """
    global _cpus_read
    now = time.monotonic()
    read_at, count = _cpus_read
    if now - read_at < CPUS_SECONDS:
        return count
    try:
        count = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        count = max(1, os.cpu_count() or 1)
    _cpus_read = (now, count)
    return count


def _default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return str(Path(base) / "dilconv")


_DEFAULTS: dict[str, Callable[[], Any]] = {
    "threads": available_cpus,
    "spin_ms": lambda: DEFAULT_SPIN_MS,
    "cache_dir": _default_cache_dir,
    "workspace_bytes": lambda: DEFAULT_WORKSPACE_BYTES,
    "recycle_bytes": lambda: DEFAULT_RECYCLE_BYTES,
    "allow_fft": lambda: False,
    "first_calls": lambda: "tiered",
}


# --- validation: one function per setting, shared by set_config and the environment --------


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} of type {type(value).__name__}")
    return int(value)


def _threads(value: Any, name: str = "threads") -> int:
    value = _integer(name, value)
    if value < 1:
        raise ValueError(f"{name} must be a positive int (1: no worker threads), got {value}")
    return value


def _spin_ms(value: Any, name: str = "spin_ms") -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a number of milliseconds, got {value!r} of type {type(value).__name__}"
        )
    value = float(value)
    if not (math.isfinite(value) and 0 <= value <= MAX_SPIN_MS):
        raise ValueError(f"{name} must be between 0 and {MAX_SPIN_MS:g} milliseconds, got {value}")
    return value


def _cache_dir(value: Any, name: str = "cache_dir") -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(
            f"{name} must be a str or a path, got {value!r} of type {type(value).__name__}"
        )
    text = os.fspath(value)
    if not isinstance(text, str) or not text:
        raise ValueError(f"{name} must name a folder, got {value!r}")
    return text


def _workspace_bytes(value: Any, name: str = "workspace_bytes") -> int:
    value = _integer(name, value)
    if value < MIN_WORKSPACE_BYTES:
        raise ValueError(f"{name} must be at least 1 MiB ({MIN_WORKSPACE_BYTES}), got {value}")
    return value


def _recycle_bytes(value: Any, name: str = "recycle_bytes") -> int:
    value = _integer(name, value)
    if value < 0:
        raise ValueError(f"{name} must be a number of bytes, at least 0 (none kept), got {value}")
    return value


def _allow_fft(value: Any, name: str = "allow_fft") -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


#: The values of ``first_calls`` (see :mod:`dilconv._first_calls`).
FIRST_CALLS = ("tiered", "wait")


def _first_calls(value: Any, name: str = "first_calls") -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {value!r} of type {type(value).__name__}")
    if value not in FIRST_CALLS:
        raise ValueError(f"{name} must be one of {FIRST_CALLS}, got {value!r}")
    return value


_VALIDATE: dict[str, Callable[..., Any]] = {
    "threads": _threads,
    "spin_ms": _spin_ms,
    "cache_dir": _cache_dir,
    "workspace_bytes": _workspace_bytes,
    "recycle_bytes": _recycle_bytes,
    "allow_fft": _allow_fft,
    "first_calls": _first_calls,
}
#: How an environment variable's text becomes a value (then validated as above).
_PARSE: dict[str, Callable[[str], Any]] = {
    "threads": int,
    "spin_ms": float,
    "cache_dir": str,
    "workspace_bytes": int,
    "recycle_bytes": int,
    "first_calls": str,
}

_EXPECTED = {
    "threads": "a positive integer",
    "spin_ms": f"a number of milliseconds from 0 to {MAX_SPIN_MS:g}",
    "cache_dir": "a folder",
    "workspace_bytes": f"an integer number of bytes, at least {MIN_WORKSPACE_BYTES}",
    "recycle_bytes": "an integer number of bytes, at least 0",
    "first_calls": f"one of {FIRST_CALLS}",
}


def validate(name: str, value: Any, argument: str | None = None) -> Any:
    """``value`` checked for setting ``name`` (errors name ``argument``, else ``name``)."""
    return _VALIDATE[name](value, argument or name)


# --- the three layers -------------------------------------------------------------------------

_EMPTY: Mapping[str, Any] = {}
_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "dilconv_config", default=_EMPTY
)
_process: dict[str, Any] = {}
_lock = threading.Lock()
#: (setting, environment text) -> value, so each bad text warns once.
_from_environment: dict[tuple[str, Any], Any] = {}


#: The settings whose default is a constant, so a lookup calls nothing.
_CONSTANT_DEFAULTS = {
    "spin_ms": DEFAULT_SPIN_MS,
    "workspace_bytes": DEFAULT_WORKSPACE_BYTES,
    "recycle_bytes": DEFAULT_RECYCLE_BYTES,
    "allow_fft": False,
    "first_calls": "tiered",
}
_UNSET = object()
#: CPython's ``os.environ`` keeps its variables in a dict of encoded names and values,
#: which :func:`_environment` reads directly: ``os.environ.get`` encodes the name and
#: decodes the value in Python on every call, and a call of dilconv reads settings
#: several times.
_ENVIRON_TYPE = type(os.environ)
_ENCODED = {
    variable: os.environ.encodekey(variable)
    for variable in ENVIRONMENT.values()
    if variable is not None and hasattr(os.environ, "encodekey")
}


def _default(name: str) -> Any:
    value = _CONSTANT_DEFAULTS.get(name, _UNSET)
    return _DEFAULTS[name]() if value is _UNSET else value


def _environment(name: str) -> Any:
    """The setting's value from its environment variable, else its default."""
    variable = ENVIRONMENT[name]
    if variable is None:
        return _default(name)
    environ = os.environ
    if type(environ) is _ENVIRON_TYPE and variable in _ENCODED:
        raw = environ._data.get(_ENCODED[variable])  # type: ignore[attr-defined]
    else:  # os.environ replaced by something else
        raw = environ.get(variable)
    if not raw:
        return _default(name)
    key = (name, raw)
    found = _from_environment.get(key, _UNSET)  # no lock: a dict read is atomic
    if found is _UNSET:
        found = _parsed(name, variable, key)
    return _default(name) if found is None else found


def _parsed(name: str, variable: str, key: tuple[str, Any]) -> Any:
    """The value of the variable's text ``key[1]`` (None: the default), remembered;
    a text that would be refused warns, once."""
    raw = key[1]
    text = (os.fsdecode(raw) if isinstance(raw, bytes) else str(raw)).strip()
    with _lock:
        if key in _from_environment:
            return _from_environment[key]
        value = None
        if text:
            try:
                try:
                    parsed = _PARSE[name](text)
                except ValueError:
                    raise ValueError(f"{variable} must be {_EXPECTED[name]}") from None
                value = validate(name, parsed, variable)
            except (TypeError, ValueError) as err:
                warnings.warn(
                    f"dilconv: ignoring {variable}={text!r} ({err}); using the default, "
                    f"{_default(name)!r}",
                    RuntimeWarning,
                    stacklevel=4,
                )
        _from_environment[key] = value
    return value


def get(name: str) -> Any:
    """The value of one setting now, in this thread (the fast path for readers).

    Examples
    --------
    >>> from dilconv import _config
    >>> _config.get("allow_fft")
    False
    """
    value = _context.get().get(name, _UNSET)
    if value is _UNSET:
        value = _process.get(name, _UNSET)
        if value is _UNSET:
            value = _environment(name)
    if name == "threads":
        return min(value, available_cpus())
    return value


def get_config() -> dict[str, Any]:
    """The settings in effect for the next call from this thread, as a new dict.

    Returns
    -------
    dict
        ``threads`` (int, after clamping to the CPUs available), ``spin_ms``
        (float), ``cache_dir`` (str), ``workspace_bytes`` (int),
        ``recycle_bytes`` (int), ``allow_fft`` (bool) and ``first_calls`` (str).

    Examples
    --------
    >>> import dilconv
    >>> sorted(dilconv.get_config())  # doctest: +NORMALIZE_WHITESPACE
    ['allow_fft', 'cache_dir', 'first_calls', 'recycle_bytes', 'spin_ms', 'threads',
     'workspace_bytes']
    >>> with dilconv.config_context(threads=1):
    ...     dilconv.get_config()["threads"]
    1
    """
    return {name: get(name) for name in NAMES}


def _checked(values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: validate(name, value) for name, value in values.items() if value is not None}


def set_config(
    *,
    threads: int | None = None,
    spin_ms: float | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    workspace_bytes: int | None = None,
    recycle_bytes: int | None = None,
    allow_fft: bool | None = None,
    first_calls: str | None = None,
) -> None:
    """Set settings for the whole process, from the next call on (None: leave as is).

    Parameters
    ----------
    threads : int, optional
        Threads dilconv's own loops use, the caller's included; at least 1,
        clamped to the CPUs available. ``1`` runs every call on the caller's
        thread and starts no worker. BLAS threads are limited separately, with
        :func:`threadpoolctl.threadpool_limits`.
    spin_ms : float, optional
        Milliseconds an idle worker spins before it sleeps, 0 to 100 (0: sleep at
        once). Read by the workers themselves, so only the process-wide value
        counts.
    cache_dir : str or path, optional
        Folder for compiled machine code kept between processes.
    workspace_bytes : int, optional
        Bound on one call's scratch memory, at least 1 MiB.
    recycle_bytes : int, optional
        Bound on the memory of results that their callers have dropped, and of
        calls' large packed weights, kept to hold later ones of the same size (0:
        none kept). A new array of 4 MiB or more costs its pages' first touch,
        zeroed by the operating system: a tenth of a 3x3 layer of 64 channels on a
        32 MiB batch. A kept block is used again only once no array refers to any
        of it.
    allow_fft : bool, optional
        Whether ``method="auto"`` may choose ``"fft"``, whose rounding error at
        one pixel depends on values far from it.
    first_calls : {"tiered", "wait"}, optional
        ``"tiered"`` (the default): while the algorithm ``"auto"`` would choose
        still has machine code to load (Numba's or LLVM's, up to seconds), a call
        is served by the best loaded route until the load pays for itself
        (:mod:`dilconv._first_calls`); its results can differ from the choice's in
        the last bits. ``"wait"``: ``"auto"`` always runs its choice, loading it
        first, so repeated calls give identical results from the first on.

    Notes
    -----
    Inside a :func:`config_context` block that sets the same name, the block's
    value keeps precedence until the block ends.

    Examples
    --------
    >>> import dilconv
    >>> before = dilconv.get_config()["spin_ms"]
    >>> dilconv.set_config(spin_ms=5)
    >>> dilconv.get_config()["spin_ms"]
    5.0
    >>> dilconv.set_config(spin_ms=before)
    """
    values = _checked(
        {"threads": threads, "spin_ms": spin_ms, "cache_dir": cache_dir,
         "workspace_bytes": workspace_bytes, "recycle_bytes": recycle_bytes,
         "allow_fft": allow_fft,
         "first_calls": first_calls}
    )  # fmt: skip
    with _lock:
        _process.update(values)


@contextlib.contextmanager
def config_context(
    *,
    threads: int | None = None,
    spin_ms: float | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    workspace_bytes: int | None = None,
    recycle_bytes: int | None = None,
    allow_fft: bool | None = None,
    first_calls: str | None = None,
) -> Iterator[None]:
    """Settings for the calls inside a ``with`` block, in this thread only.

    Arguments as for :func:`set_config`. Blocks nest; leaving one, by an
    exception too, restores what was in effect before it. Other threads, and
    threads started inside the block, keep the process-wide values.

    Examples
    --------
    >>> import dilconv
    >>> with dilconv.config_context(workspace_bytes=2**20):
    ...     with dilconv.config_context(allow_fft=True):
    ...         config = dilconv.get_config()
    >>> config["workspace_bytes"], config["allow_fft"]
    (1048576, True)
    >>> dilconv.get_config()["allow_fft"]
    False
    """
    values = _checked(
        {"threads": threads, "spin_ms": spin_ms, "cache_dir": cache_dir,
         "workspace_bytes": workspace_bytes, "recycle_bytes": recycle_bytes,
         "allow_fft": allow_fft,
         "first_calls": first_calls}
    )  # fmt: skip
    token = _context.set({**_context.get(), **values})
    try:
        yield
    finally:
        _context.reset(token)


# --- the workspace functions, kept as aliases -------------------------------------------------


def get_workspace_limit() -> int:
    """Return the current workspace bound in bytes (``get_config()["workspace_bytes"]``).

    Examples
    --------
    >>> import dilconv
    >>> dilconv.get_workspace_limit() > 0
    True
    """
    value: int = get("workspace_bytes")
    return value


def set_workspace_limit(nbytes: int) -> None:
    """Set the workspace bound in bytes (at least 1 MiB): ``set_config(workspace_bytes=...)``.

    Chunked algorithms split their work to stay under it; an algorithm that cannot
    is refused with a ValueError when asked for by name, and skipped by ``"auto"``.
    The environment variable ``DILCONV_WORKSPACE_BYTES`` sets the starting value.
    """
    value = validate("workspace_bytes", nbytes, "nbytes")
    with _lock:
        _process["workspace_bytes"] = value


@contextlib.contextmanager
def workspace_limit(nbytes: int) -> Iterator[None]:
    """Set the workspace bound for a block: ``config_context(workspace_bytes=...)``.

    Examples
    --------
    >>> import dilconv
    >>> with dilconv.workspace_limit(64 * 2**20):
    ...     dilconv.get_workspace_limit() == 64 * 2**20
    True
    """
    with config_context(workspace_bytes=validate("workspace_bytes", nbytes, "nbytes")):
        yield


@functools.cache
def physical_memory_bytes() -> int:
    """Total physical memory of this machine, or a large number where unknown (read once)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**62

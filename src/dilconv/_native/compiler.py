"""LLVM IR to callable machine code for this CPU, through llvmlite's MCJIT.

:func:`compile_function` optimises a module, compiles it for the host CPU and
hands back one of its functions as a ctypes function, which releases the GIL
while it runs. The object code goes to the disk cache
(:mod:`dilconv._native.disk_cache`) under a key that covers everything it
depends on, so a later process loads it (a few milliseconds) instead of
compiling again (40-70 ms a function). LLVM's compiler is not to be entered by
two threads at once: callers hold :data:`COMPILING`, a lock that a forked
child finds released.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from typing import Any

from dilconv import _imports
from dilconv._native import disk_cache, headroom
from dilconv._native.forksafe import ForkSafeLock
from dilconv._version import __version__

#: Names the optimisation settings in the disk cache's keys (change it with them).
PIPELINE = "O3, no vectorisers, no unrolling"

#: LLVM's compiler is not to be entered by two threads.
COMPILING = ForkSafeLock()

_ENGINES: list[object] = []  # compiled code lives as long as its engine


@functools.lru_cache(maxsize=1)
def installed() -> bool:
    """Whether llvmlite is installed (its import is not tried: that loads LLVM)."""
    import importlib.util

    return importlib.util.find_spec("llvmlite") is not None


@functools.lru_cache(maxsize=1)
def _llvm() -> tuple[Any, Any]:
    """The llvmlite binding and a target machine for the host CPU."""
    llvm = _imports.whole("llvmlite.binding")

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    target = llvm.Target.from_default_triple()
    features = llvm.get_host_cpu_features().flatten()
    machine = target.create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=features, opt=3, jit=True
    )
    return llvm, machine


def cache_key(source: str, name: str) -> str:
    """Everything the object code of function ``name`` of ``source`` depends on."""
    import llvmlite

    llvm, _ = _llvm()
    return "\n".join(
        [
            f"entry format {disk_cache.FORMAT}",
            f"dilconv {__version__}",
            f"llvmlite {llvmlite.__version__}, LLVM {llvm.llvm_version_info}",
            f"triple {llvm.get_default_triple()}",
            f"cpu {llvm.get_host_cpu_name()} {llvm.get_host_cpu_features().flatten()}",
            f"pipeline {PIPELINE}",
            f"function {name}",
            source,
        ]
    )


def compiled_once(
    functions: dict[Any, Callable[..., Any]],
    key: Any,
    source: Callable[[], str],
    name: str,
    arguments: int,
) -> Callable[..., Any]:
    """``functions[key]``, compiling function ``name`` of the IR ``source()`` first
    when it is missing (under :data:`COMPILING`, once per process); the dict keeps it."""
    found = functions.get(key)
    if found is not None:
        return found
    with COMPILING:
        if key not in functions:
            functions[key] = compile_function(source(), name, arguments)
    return functions[key]


def compile_function(
    source: str, name: str, arguments: int, returns: Any = None
) -> Callable[..., Any]:
    """Function ``name`` of LLVM IR ``source``, compiled for this CPU (or loaded from disk).

    Every argument is an int64 (pointers as addresses); ``returns`` is the ctypes
    result type (None: void). The caller holds :data:`COMPILING`. The object code
    is kept in :func:`disk_cache.cache_dir`, keyed by :func:`cache_key`; an entry
    is checked before LLVM reads it, and a bad one is compiled again. Where the
    process's address-space limit leaves too little for LLVM, which would abort the
    process, raises :class:`MemoryError` instead (:mod:`dilconv._native.headroom`).
    """
    headroom.require(headroom.LLVM_BYTES, "compiling machine code with LLVM")
    llvm, machine = _llvm()
    entry = disk_cache.slot(name, cache_key(source, name))
    cached = disk_cache.read(entry) if entry is not None else None
    module = llvm.parse_assembly(source)
    module.verify()
    if cached is None:
        tuning = llvm.create_pipeline_tuning_options(speed_level=3)
        # The vectors are explicit, and the sums must stay in registers: LLVM's
        # vectorisers, and its unroller (which copies the channel loop for unit
        # strides), would spill them to the stack.
        tuning.loop_vectorization = False
        tuning.slp_vectorization = False
        tuning.loop_unrolling = False
        builder = llvm.create_pass_builder(machine, tuning)
        builder.getModulePassManager().run(module, builder)
    engine = llvm.create_mcjit_compiler(module, machine)

    def compiled(_module: object, code: bytes) -> None:
        if entry is not None and cached is None:
            disk_cache.write(entry, code)

    engine.set_object_cache(compiled, lambda _module: cached)
    engine.finalize_object()
    _ENGINES.append(engine)
    address = engine.get_function_address(name)
    prototype = ctypes.CFUNCTYPE(returns, *[ctypes.c_int64] * arguments)
    return prototype(address)

"""Calls into compiled code that own their memory, and the checked mode.

Machine code takes addresses, and an address is only as good as the array behind
it. So no caller hands a compiled function a bare address. A :class:`Kernel` is a
compiled function with its :class:`Signature`: each argument by name and kind
(``"array"``: data it reads or writes; ``"table"``: int64 descriptors it reads;
``"int"``: an integer). :meth:`Kernel.call` builds a :class:`Call` *by name*; each
array argument is either

* a :class:`Ref`: an array the call itself holds (descriptor tables, fixed per
  spec), with an element offset, or
* a :class:`Slot`: an array bound by name for one run (the input, the output,
  packed weights, a thread's scratch), with an element offset.

A :class:`Binding` holds the slots' arrays for the whole run and is the only place
where a :class:`Slot` becomes an address; a :class:`Call` turns its :class:`Ref`
arrays into addresses when it is built and holds them as long as it lives. So a
cache of calls is a cache of the arrays they point into, never of bare addresses.
Byte offsets are element offsets times the item size of the argument's dtype.

Checked mode (``DILCONV_CHECK=1`` in the environment when dilconv is imported;
:func:`checked` in tests): before each call the elements every array argument
will touch, computed by the kernel's extents function from its integers and
tables, are checked to lie inside the array that argument names, and a
``RuntimeError`` naming the kernel, the argument and the extents is raised
instead of the call otherwise. Off, it costs one attribute test per run.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

#: The argument kinds of a compiled function.
KINDS = ("array", "table", "int")

#: The environment variable that turns on the checked mode.
CHECK_VARIABLE = "DILCONV_CHECK"

INT64 = np.dtype(np.int64)


def _from_environment() -> bool:
    """True when ``DILCONV_CHECK`` is set to anything but ``""`` or ``"0"``."""
    return os.environ.get(CHECK_VARIABLE, "").strip() not in ("", "0")


#: Whether calls are checked: ``DILCONV_CHECK`` when dilconv is imported (reading the
#: environment costs a microsecond, a tenth of a tiny tile loop), or :func:`checked`.
_CHECKED = [_from_environment()]


def checking() -> bool:
    """True in checked mode (``DILCONV_CHECK=1`` at import, or inside :func:`checked`)."""
    return _CHECKED[0]


@contextlib.contextmanager
def checked(on: bool = True) -> Iterator[None]:
    """Checked mode on (or off) in this block, for every thread: for tests."""
    before, _CHECKED[0] = _CHECKED[0], on
    try:
        yield
    finally:
        _CHECKED[0] = before


class Param(NamedTuple):
    """One argument of a compiled function: its name and kind (see :data:`KINDS`)."""

    name: str
    kind: str


@dataclasses.dataclass(frozen=True)
class Signature:
    """The arguments of a compiled function, in the order it takes them."""

    function: str
    params: tuple[Param, ...]
    names: tuple[str, ...] = dataclasses.field(init=False)
    name_set: frozenset[str] = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        for p in self.params:
            if p.kind not in KINDS:
                raise ValueError(f"{self.function}: kind of {p.name!r} must be one of {KINDS}")
        object.__setattr__(self, "names", tuple(p.name for p in self.params))
        object.__setattr__(self, "name_set", frozenset(self.names))


class Ref(NamedTuple):
    """An array a call holds, from element ``offset`` of its (C-contiguous) data."""

    array: np.ndarray
    offset: int = 0


class Slot(NamedTuple):
    """The array a :class:`Binding` names ``name``, from element ``offset``."""

    name: str
    offset: int = 0


#: The elements ``[lo, hi)`` each array argument touches (None: none), relative to
#: the argument's pointer, from its integers and a reader of its tables.
Extents = Callable[
    [Mapping[str, int], Callable[[str, int], np.ndarray]], Mapping[str, tuple[int, int] | None]
]


@dataclasses.dataclass(frozen=True, eq=False)
class Kernel:
    """A compiled function (a ctypes function of int64 arguments), its signature, the
    dtype of its ``"array"`` arguments and its extents function (checked mode)."""

    label: str  # the function and its compile-time parameters, for messages
    signature: Signature
    function: Callable[..., Any]
    dtype: np.dtype
    extents: Extents

    def call(self, **arguments: Ref | Slot | int) -> Call:
        """A :class:`Call` of this kernel with every argument given by name."""
        return Call(self, arguments)

    def itemsize(self, kind: str) -> int:
        return INT64.itemsize if kind == "table" else self.dtype.itemsize


class Call:
    """One call of a :class:`Kernel`, holding every :class:`Ref` array it points into.

    Built by name (:meth:`Kernel.call`); run by :meth:`Binding.run`, which supplies
    the :class:`Slot` arrays. Immutable once built (its tables are made read-only).
    """

    __slots__ = (
        "_extents",
        "_fixed",
        "_slots",
        "_spread",
        "_three",
        "arguments",
        "function",
        "kernel",
    )

    def __init__(self, kernel: Kernel, arguments: Mapping[str, Ref | Slot | int]) -> None:
        sig = kernel.signature
        if arguments.keys() != sig.name_set:
            missing = [n for n in sig.names if n not in arguments]
            unknown = [n for n in arguments if n not in sig.names]
            raise TypeError(
                f"{kernel.label}: arguments missing {missing}, unknown {unknown}; "
                f"expected {list(sig.names)}"
            )
        slots: list[tuple[int, str, int]] = []  # position, slot name, byte offset
        fixed: list[int] = []
        for position, (name, kind) in enumerate(sig.params):
            value = arguments[name]
            if kind == "int":
                if type(value) is int:
                    fixed.append(value)
                    continue
                if isinstance(value, (Ref, Slot)) or not isinstance(value, (int, np.integer)):
                    raise TypeError(f"{kernel.label}: {name!r} must be an int, not {value!r}")
                fixed.append(int(value))
                continue
            if isinstance(value, Slot):
                if kind == "table":
                    raise TypeError(f"{kernel.label}: table {name!r} must be held (a Ref)")
                slots.append((position, value.name, value.offset * kernel.itemsize(kind)))
                continue
            if not isinstance(value, Ref):
                raise TypeError(f"{kernel.label}: {name!r} must be a Ref or a Slot, not {value!r}")
            array = value.array
            want = INT64 if kind == "table" else kernel.dtype
            if array.dtype != want or not array.flags.c_contiguous:
                raise TypeError(
                    f"{kernel.label}: {name!r} must be a C-contiguous {want} array, "
                    f"got {array.dtype} with strides {array.strides}"
                )
            if kind == "table":
                array.flags.writeable = False
            fixed.append(array.ctypes.data + value.offset * array.itemsize)
        self.kernel = kernel
        self.function = kernel.function
        self.arguments = tuple(arguments[n] for n in sig.names)  # holds every Ref array
        # the usual order, slots first, takes one pass; otherwise they are spread in
        self._spread = [pos for pos, _, _ in slots] != list(range(len(slots)))
        self._slots = tuple(slots)
        self._fixed = tuple(fixed)
        # the usual case, three slots first, as one call with no loop (a tiny call of
        # ``blocked`` is a few tile loops of a few microseconds each)
        self._three: tuple[str, int, str, int, str, int] | None = None
        if len(slots) == 3 and not self._spread:
            (_, n0, o0), (_, n1, o1), (_, n2, o2) = slots
            self._three = (n0, o0, n1, o1, n2, o2)
        self._extents: dict[str, tuple[int, int] | None] | None = None

    def __repr__(self) -> str:
        named = ", ".join(
            f"{n}={_describe(v)}"
            for n, v in zip(self.kernel.signature.names, self.arguments, strict=True)
        )
        return f"Call({self.kernel.label}: {named})"

    def invoke(self, addresses: Mapping[str, int]) -> None:
        """Run the machine code, the slots at ``addresses`` (see :meth:`Binding.run`)."""
        three = self._three
        if three is not None:
            n0, o0, n1, o1, n2, o2 = three
            self.function(addresses[n0] + o0, addresses[n1] + o1, addresses[n2] + o2, *self._fixed)
            return
        if not self._spread:
            self.function(*[addresses[name] + off for _, name, off in self._slots], *self._fixed)
            return
        values = list(self._fixed)
        for position, name, off in self._slots:
            values.insert(position, addresses[name] + off)
        self.function(*values)

    def parts(self) -> tuple[int, int, tuple[tuple[int, str, int], ...], tuple[int, ...]]:
        """The machine code's address, its argument count, the slots (position, name,
        byte offset) and the other arguments in order: what
        :class:`~dilconv._native.sequence.Sequence` lays out for its executor."""
        address = ctypes.cast(self.function, ctypes.c_void_p).value or 0  # type: ignore[arg-type]
        return address, len(self.kernel.signature.params), self._slots, self._fixed

    def result(self) -> int:
        """Make this call, which holds every array it points into (a :class:`Ref`
        each, no :class:`Slot`), checked first in checked mode, and return the int the
        machine code returns (for a kernel that answers, such as the spin loop)."""
        if self._slots:
            names = [name for _, name, _ in self._slots]
            raise TypeError(f"{self.kernel.label}: result() needs every array held, slots {names}")
        if _CHECKED[0]:
            self.check({})
        return int(self.function(*self._fixed))

    def extents(self) -> dict[str, tuple[int, int] | None]:
        """The elements each array argument touches (checked mode; computed once)."""
        if self._extents is None:
            names = self.kernel.signature.names
            ints = {
                p.name: int(v)  # type: ignore[arg-type]
                for p, v in zip(self.kernel.signature.params, self.arguments, strict=True)
                if p.kind == "int"
            }

            def read(name: str, count: int) -> np.ndarray:
                ref = self.arguments[names.index(name)]
                if not isinstance(ref, Ref):  # pragma: no cover - refused when built
                    raise TypeError(f"{self.kernel.label}: table {name!r} is not held")
                self._inside(name, ref.array, ref.offset, 0, count)
                return ref.array.reshape(-1)[ref.offset : ref.offset + count]

            found = dict(self.kernel.extents(ints, read))
            for p in self.kernel.signature.params:
                if p.kind == "array" and p.name not in found:
                    raise RuntimeError(f"{self.kernel.label}: no extent for {p.name!r}")
            self._extents = found
        return self._extents

    def check(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Raise ``RuntimeError`` unless every element this call touches lies inside an
        array it holds or ``arrays`` (a binding's) holds, of the declared dtype."""
        extents = self.extents()
        for (name, kind), value in zip(self.kernel.signature.params, self.arguments, strict=True):
            if kind != "array" or extents[name] is None:
                continue
            lo, hi = extents[name]  # type: ignore[misc]
            if isinstance(value, Slot):
                array = arrays.get(value.name)
                if array is None:
                    raise RuntimeError(
                        f"{self.kernel.label}: argument {name!r} names slot {value.name!r}, "
                        f"which the binding does not hold (it holds {sorted(arrays)})"
                    )
                if array.dtype != self.kernel.dtype:
                    raise RuntimeError(
                        f"{self.kernel.label}: argument {name!r} (slot {value.name!r}) is "
                        f"{array.dtype}, the kernel reads {self.kernel.dtype}"
                    )
                self._inside(name, array, value.offset, lo, hi)
            else:
                self._inside(name, value.array, value.offset, lo, hi)  # type: ignore[union-attr]

    def _inside(self, name: str, array: np.ndarray, offset: int, lo: int, hi: int) -> None:
        if hi > lo and (offset + lo < 0 or offset + hi > array.size):
            raise RuntimeError(
                f"checked call refused: {self.kernel.label} argument {name!r} would touch "
                f"elements [{offset + lo}, {offset + hi}) (offset {offset}, extent "
                f"[{lo}, {hi})) of an array of {array.size} ({array.shape} {array.dtype})"
            )


def _describe(value: Ref | Slot | int) -> str:
    if isinstance(value, Ref):
        return f"<{value.array.shape} {value.array.dtype}>+{value.offset}"
    if isinstance(value, Slot):
        return f"{value.name}+{value.offset}"
    return str(value)


class Binding:
    """The arrays one run of calls reads and writes, held by name until it ends.

    The only place where a :class:`Slot` becomes an address. Whether to check
    (:func:`checking`) is decided once, here.
    """

    __slots__ = ("addresses", "arrays", "checked")

    def __init__(self, **arrays: np.ndarray) -> None:
        self.arrays: dict[str, np.ndarray] = arrays
        self.addresses: dict[str, int] = {name: _address(name, a) for name, a in arrays.items()}
        self.checked = checking()

    def set(self, **arrays: np.ndarray) -> None:
        """Bind (or rebind) slots to arrays, which must be C-contiguous."""
        for name, array in arrays.items():
            self.addresses[name] = _address(name, array)
            self.arrays[name] = array

    def run(self, calls: Iterable[Call]) -> None:
        """Make each call in order, each checked first in checked mode; a
        :class:`~dilconv._native.sequence.Sequence` by one native call otherwise."""
        at = self.addresses
        if self.checked:
            for call in calls:
                call.check(self.arrays)
                call.invoke(at)
            return
        run_at = getattr(calls, "run_at", None)
        if run_at is not None:
            run_at(at)
            return
        for call in calls:
            call.invoke(at)


def _address(name: str, array: np.ndarray) -> int:
    """The address of C-contiguous ``array`` (the only place a slot becomes one).

    Through the buffer protocol where the array is writable (a third of the time
    of ``array.ctypes.data``, which a tiny call would pay several times over).
    """
    flags = array.flags
    if not flags.c_contiguous:
        raise ValueError(f"slot {name!r} must be C-contiguous, got strides {array.strides}")
    if flags.writeable and array.nbytes:
        return ctypes.addressof(ctypes.c_char.from_buffer(array))  # type: ignore[arg-type]
    return int(array.ctypes.data)


class Lease:
    """What an array made on a kept block of memory refers to (see
    :mod:`~dilconv._native.results`): ``np.asarray(lease)`` is a C-contiguous
    ``shape`` array of ``dtype`` on the first bytes of ``block``, whose base is the
    lease, and every view made from it holds the lease, which holds ``block``. So the
    lease goes, and its ``on_release`` runs, only once no array uses the block.

    Examples
    --------
    >>> block = np.zeros(64, dtype=np.uint8)
    >>> y = np.asarray(Lease(block, (2, 4), np.dtype(np.float32)))
    >>> y[1, 3] = 1.5
    >>> y.base.block is block, np.shares_memory(y, block), y.flags.writeable
    (True, True, True)
    """

    __slots__ = ("__array_interface__", "block", "_on_release", "_offset")

    def __init__(
        self,
        block: np.ndarray,
        shape: tuple[int, ...],
        dtype: np.dtype,
        *,
        address: int | None = None,
        on_release: Callable[[np.ndarray, int], None] | None = None,
        offset: int = 0,
    ) -> None:
        """``address``: ``block``'s own, where the caller read it once before (see
        :func:`block_address`); ``on_release(block, address)`` runs when the lease
        goes, that is once no array uses the block. ``offset``: the bytes of the
        block before the array's first (0: the array starts the block)."""
        self._on_release = None  # set first: __del__ runs after a refusal below too
        if not (block.flags.c_contiguous and block.flags.writeable):
            raise ValueError("a lease needs a writeable, C-contiguous block")
        if offset < 0 or offset + math.prod(shape) * dtype.itemsize > block.nbytes:
            raise ValueError(
                f"{shape} of {dtype} at byte {offset} does not fit a block of {block.nbytes} bytes"
            )
        self.block = block
        self._on_release = on_release
        self._offset = offset
        at = block_address(block) if address is None else address
        self.__array_interface__ = {
            "shape": shape,
            "typestr": dtype.str,  # no "descr": the dtypes here have no fields
            "data": (at + offset, False),
            "version": 3,
        }

    def __del__(self) -> None:
        release = self._on_release
        if release is not None:
            try:
                release(self.block, self.__array_interface__["data"][0] - self._offset)
            except Exception:  # pragma: no cover - interpreter exit: nowhere to return it
                pass


def table_address(table: np.ndarray) -> int:
    """The address of an int64 table a caller holds while machine code reads it (a
    :class:`~dilconv._native.sequence.Sequence`'s, made for one run)."""
    if table.dtype != INT64 or not table.flags.c_contiguous:
        raise TypeError(f"a C-contiguous int64 table expected, got {table.dtype} {table.strides}")
    return _address("table", table)


def address_of(array: np.ndarray) -> int:
    """Where ``array``'s first element lies, for placing memory near or apart from it
    (never to hand to machine code: that is :class:`Binding`'s alone)."""
    return int(array.__array_interface__["data"][0])


def block_address(block: np.ndarray) -> int:
    """The address of a kept block (see :class:`Lease`), to be read once per block."""
    return _address("block", block)


def aligned_empty(size: int, dtype: np.dtype) -> np.ndarray:
    """``np.empty(size)`` starting on a 64-byte boundary (a cache line: whole-vector
    loads and stores that never straddle two lines). The address is only read."""
    item = np.dtype(dtype).itemsize
    raw = np.empty(size + 64 // item, dtype=dtype)
    skip = (-raw.ctypes.data % 64) // item
    return raw[skip : skip + size]

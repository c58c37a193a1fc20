"""A run of compiled calls made by one native call: the GIL taken once, not per call.

Every compiled function here takes int64 arguments only (addresses as integers,
:mod:`dilconv._native.compiler`), so one small LLVM function can make a whole list
of such calls through their function pointers: it reads, per call, the function's
address, its argument count and its arguments from an int64 table, and calls it.

Why: ctypes releases the GIL around each call and takes it back after. Two threads
each running a band of Winograd's calls (an input transform, the products, an output
transform: about 30-300 us each) then meet at the GIL whenever one comes back from a
call while the other is between two, and the one that waits sleeps and is woken
(tens of microseconds on a virtual CPU). The 64-channel ``context`` layer (256 x 256,
Winograd, 128 bands of 4 calls) ran 19.4 ms a call on one thread and 12.5 on two,
where two processes, one thread each, lost nothing (18.7 ms each, at once). With
each band one sequence: 10.44 ms against 11.28 (medians of 40 alternating calls
after a pause, the upper quartile 10.55 against 11.68); the 21-channel layer
(``blocked``, 2 calls a thread) 3.13 against 3.18 (2 vCPUs, 2026-12-07).

A :class:`Sequence` is the tuple of its calls (so it holds every ``Ref`` array they
point into) with a template of the table whose slot arguments :meth:`Sequence.table`
fills in from a :class:`~dilconv._native.calls.Binding`'s addresses; the binding
holds the slots' arrays and the caller holds the table for the whole native call.
The executor only dispatches: what each call touches is its kernel's, checked call
by call in checked mode (:meth:`~dilconv._native.calls.Binding.run` then makes the
calls one by one). Code that builds the calls of a band or a thread's share makes
them a :class:`Sequence`; anything else that iterates them sees a tuple.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import numpy as np

from dilconv._native import calls

#: Most int64 arguments a call of a sequence may take (the executor has a case each).
MOST_ARGUMENTS = 32

#: The executor's arguments: the table's address and the number of calls in it.
ARGUMENTS = ("table", "count")


def _ir_source() -> str:
    """``run_sequence(table, count)``: for each of ``count`` calls, ``table`` holds the
    function's address, its argument count ``n`` and its ``n`` int64 arguments (LLVM IR
    text: one case per argument count, each calling through an opaque pointer)."""
    cases = "\n".join(f"    i64 {k}, label %args{k}" for k in range(MOST_ARGUMENTS + 1))
    blocks = []
    for k in range(MOST_ARGUMENTS + 1):
        lines = [f"args{k}:"]
        for j in range(k):
            lines.append(f"  %p{k}_{j} = getelementptr i64, ptr %table, i64 %first{j}")
            lines.append(f"  %a{k}_{j} = load i64, ptr %p{k}_{j}")
        arguments = ", ".join(f"i64 %a{k}_{j}" for j in range(k))
        lines.append(f"  call void %callee({arguments})")
        lines.append("  br label %advance")
        blocks.append("\n".join(lines))
    firsts = "\n".join(f"  %first{j} = add i64 %at, {j + 2}" for j in range(MOST_ARGUMENTS))
    return f"""; ModuleID = "dilconv_sequence"
define void @run_sequence(i64 %address, i64 %count) {{
entry:
  %table = inttoptr i64 %address to ptr
  br label %head
head:
  %index = phi i64 [0, %entry], [%next, %advance]
  %at = phi i64 [0, %entry], [%following, %advance]
  %more = icmp slt i64 %index, %count
  br i1 %more, label %body, label %done
body:
  %fp = getelementptr i64, ptr %table, i64 %at
  %target = load i64, ptr %fp
  %np = getelementptr i64, ptr %table, i64 %at
  %np1 = getelementptr i64, ptr %np, i64 1
  %n = load i64, ptr %np1
  %callee = inttoptr i64 %target to ptr
{firsts}
  switch i64 %n, label %advance [
{cases}
  ]
{chr(10).join(blocks)}
advance:
  %after = add i64 %at, 2
  %following = add i64 %after, %n
  %next = add i64 %index, 1
  br label %head
done:
  ret void
}}
"""


@functools.lru_cache(maxsize=1)
def executor() -> Callable[[int, int], None] | None:
    """The compiled executor, or None where llvmlite cannot compile it."""
    try:
        from dilconv._native import compiler

        with compiler.COMPILING:
            return compiler.compile_function(_ir_source(), "run_sequence", len(ARGUMENTS))
    except (ImportError, RuntimeError, OSError, MemoryError):
        return None


class Sequence(tuple):
    """A tuple of calls, made in order by one native call (:func:`executor`) when a
    :class:`~dilconv._native.calls.Binding` runs it outside checked mode.

    Being the tuple, it holds the calls, so every array a ``Ref`` of theirs points
    into. Its table's template is made at its first run: each call's function
    address, argument count and arguments, the fixed ones in place and each slot's
    as its byte offset, to which :meth:`table` adds the slot's address.

    >>> Sequence(()).run_at({})  # nothing to call
    """

    _template: np.ndarray
    _positions: np.ndarray
    _which: np.ndarray
    _names: tuple[str, ...]

    def _prepare(self) -> None:
        words: list[int] = []
        positions: list[int] = []
        which: list[int] = []
        names: list[str] = []
        for call in self:
            address, count, slots, fixed = call.parts()
            if count > MOST_ARGUMENTS:
                raise ValueError(f"{call.kernel.label}: more than {MOST_ARGUMENTS} arguments")
            words += [address, count]
            at_slot = {position: (name, offset) for position, name, offset in slots}
            given = iter(fixed)
            for position in range(count):
                if position in at_slot:
                    name, offset = at_slot[position]
                    if name not in names:
                        names.append(name)
                    positions.append(len(words))
                    which.append(names.index(name))
                    words.append(offset)
                else:
                    words.append(next(given))
        template = np.array(words, dtype=np.int64)
        template.flags.writeable = False
        self._positions = np.array(positions, dtype=np.intp)
        self._which = np.array(which, dtype=np.intp)
        self._names = tuple(names)
        self._template = template  # last: a thread that sees it sees the rest

    def table(self, addresses: Mapping[str, int]) -> np.ndarray:
        """The table with every slot's address (from ``addresses``) filled in."""
        if "_template" not in self.__dict__:
            self._prepare()
        table = self._template.copy()
        if len(self._positions):
            bases = np.array([addresses[name] for name in self._names], dtype=np.int64)
            table[self._positions] += bases[self._which]
        return table

    def run_at(self, addresses: Mapping[str, int]) -> None:
        """Make every call, the slots at ``addresses`` (whose arrays the caller holds),
        by the executor, or one by one where it is not compiled."""
        run = executor() if len(self) > 1 else None
        if run is None:
            for call in self:
                call.invoke(addresses)
            return
        table = self.table(addresses)  # held here until the executor returns
        run(calls.table_address(table), len(self))

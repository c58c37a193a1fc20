"""Runs of compiled calls made by one native call (dilconv._native.sequence)."""

from __future__ import annotations

import multiprocessing
import threading
from typing import Any

import numpy as np
import pytest

from dilconv._native import calls, compiler, sequence
from dilconv._native.sequence import MOST_ARGUMENTS, Sequence

pytestmark = pytest.mark.skipif(sequence.executor() is None, reason="llvmlite cannot compile here")

#: Argument counts around the registers of the calling convention (6 integer
#: arguments) and at the executor's limit.
COUNTS = (1, 2, 5, 6, 7, 8, 15, 16, 31, MOST_ARGUMENTS)


def _weighted_sum_source(count: int) -> str:
    """``f(out, a1, ..., a_{count-1})``: stores ``sum(j * a_j)`` at ``out`` (an int64)."""
    params = ", ".join(["i64 %out"] + [f"i64 %a{j}" for j in range(1, count)])
    lines = ["  %s0 = add i64 0, 0"]
    for j in range(1, count):
        lines.append(f"  %m{j} = mul i64 %a{j}, {j}")
        lines.append(f"  %s{j} = add i64 %s{j - 1}, %m{j}")
    lines.append("  %p = inttoptr i64 %out to ptr")
    lines.append(f"  store i64 %s{count - 1}, ptr %p")
    body = "\n".join(lines)
    return f"define void @weighted_sum{count}({params}) {{\n{body}\n  ret void\n}}\n"


def _kernel(count: int) -> calls.Kernel:
    """A :class:`calls.Kernel` of ``count`` arguments that writes one int64."""
    with compiler.COMPILING:
        function = compiler.compile_function(
            _weighted_sum_source(count), f"weighted_sum{count}", count
        )
    params = (calls.Param("out", "array"),) + tuple(
        calls.Param(f"a{j}", "int") for j in range(1, count)
    )
    return calls.Kernel(
        f"weighted_sum({count})",
        calls.Signature(f"weighted_sum{count}", params),
        function,
        calls.INT64,
        lambda ints, read: {"out": (0, 1)},
    )


@pytest.fixture(scope="module")
def kernels() -> dict[int, calls.Kernel]:
    return {count: _kernel(count) for count in COUNTS}


def _calls(kernels: dict[int, calls.Kernel], seed: int) -> tuple[list[calls.Call], np.ndarray]:
    """One call of each kernel into its own element of slot ``out``, with random
    arguments; the sums each must write."""
    rng = np.random.default_rng(seed)
    made, expected = [], []
    for k, count in enumerate(COUNTS):
        values = rng.integers(-(2**20), 2**20, count - 1).tolist()
        made.append(kernels[count].call(out=calls.Slot("out", k), **{
            f"a{j}": v for j, v in enumerate(values, start=1)
        }))  # fmt: skip
        expected.append(sum(j * v for j, v in enumerate(values, start=1)))
    return made, np.array(expected, dtype=np.int64)


@pytest.mark.parametrize("checked", [False, True])
def test_every_argument_count_reaches_its_function(
    kernels: dict[int, calls.Kernel], checked: bool
) -> None:
    """Each call gets its own arguments, in order, whatever their number; slots and
    fixed arguments alike (the same sums as the calls made one by one), by the
    executor or, in checked mode, one by one."""
    with calls.checked(checked):
        _every_argument_count(kernels)


def _every_argument_count(kernels: dict[int, calls.Kernel]) -> None:
    made, expected = _calls(kernels, 0)
    run = Sequence(made)
    out = np.zeros(len(COUNTS), dtype=np.int64)
    calls.Binding(out=out).run(run)
    np.testing.assert_array_equal(out, expected)
    one_by_one = np.zeros_like(out)
    calls.Binding(out=one_by_one).run(tuple(made))
    np.testing.assert_array_equal(one_by_one, expected)
    # the slot's address is added where it is bound now: a second binding elsewhere
    other = np.zeros(len(COUNTS) + 3, dtype=np.int64)
    calls.Binding(out=other[3:]).run(run)
    np.testing.assert_array_equal(other[3:], expected)
    assert not other[:3].any()


def test_it_is_the_tuple_of_its_calls(kernels: dict[int, calls.Kernel]) -> None:
    made, _ = _calls(kernels, 1)
    run = Sequence(made)
    assert isinstance(run, tuple)
    assert list(run) == made
    assert run[0] is made[0]
    assert len(run) == len(COUNTS)


def test_checked_mode_checks_each_call(kernels: dict[int, calls.Kernel]) -> None:
    """In checked mode the calls are made one by one, each checked: a slot too small
    for the last call's element is refused before any machine code reads it."""
    made, _ = _calls(kernels, 2)
    with calls.checked():
        short = np.zeros(len(COUNTS) - 1, dtype=np.int64)
        with pytest.raises(RuntimeError, match="out"):
            calls.Binding(out=short).run(Sequence(made))


def test_more_arguments_than_the_executor_takes_are_refused() -> None:
    count = MOST_ARGUMENTS + 1
    params = (calls.Param("out", "array"),) + tuple(
        calls.Param(f"a{j}", "int") for j in range(1, count)
    )
    sig = calls.Signature("too_many", params)
    kernel = calls.Kernel("too many", sig, _kernel(1).function, calls.INT64, lambda i, r: {})
    many = kernel.call(out=calls.Slot("out"), **{f"a{j}": 0 for j in range(1, count)})
    run = Sequence((many, many))
    with calls.checked(False), pytest.raises(ValueError, match="more than 32 arguments"):
        calls.Binding(out=np.zeros(1, dtype=np.int64)).run(run)


def test_many_threads_run_one_sequence_at_once(kernels: dict[int, calls.Kernel]) -> None:
    """One sequence, each thread binding its own output, many times: every table is
    the thread's own."""
    made, expected = _calls(kernels, 3)
    run = Sequence(made)
    failures: list[str] = []

    def work(k: int) -> None:
        for _ in range(200):
            out = np.full(len(COUNTS), k, dtype=np.int64)
            calls.Binding(out=out).run(run)
            if not np.array_equal(out, expected):
                failures.append(f"thread {k}: {out} != {expected}")
                return

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def _child(queue: Any) -> None:
    made, expected = _calls({count: _kernel(count) for count in COUNTS}, 4)
    out = np.zeros(len(COUNTS), dtype=np.int64)
    calls.Binding(out=out).run(Sequence(made))
    queue.put(bool(np.array_equal(out, expected)))


def test_a_forked_child_runs_sequences(kernels: dict[int, calls.Kernel]) -> None:
    """The executor the parent compiled (and a sequence's table) work after a fork."""
    made, expected = _calls(kernels, 4)
    out = np.zeros(len(COUNTS), dtype=np.int64)
    calls.Binding(out=out).run(Sequence(made))  # the parent has used it
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child, args=(queue,))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert queue.get(timeout=5) is True

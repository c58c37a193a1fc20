"""One channel: LLVM's row loop against Numba's, and against ``np.copyto``, in one process.

``method="compiled"`` on one float channel runs the row loop of
:mod:`dilconv._native.stencil_rows` (each output vector the sum of its taps, masked
loads at the borders, stores past the caches where the arrays outgrow the
last-level cache). "numba" is the route such calls took before: Numba's row loops
(forced here by making ``stencil_rows.correlate`` decline for that call). The
calls are interleaved, each after a pause spent spinning on every core as
``dilconv bench`` does (after a sleep the CPUs wake slowly: the 2 MiB strip took
0.9 ms instead of 0.1); prints the medians::

    .venv/bin/python benchmarks/one_channel_rows.py --repeats 31
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

import dilconv
from dilconv._native import last_level_cache, pool, spin, stencil_rows

#: (label, array shape, kernel shape, dilation): the bench's ``seed`` and
#: ``signal1d`` rows, and a strip that stays in one core's cache.
CASES = (
    ("seed 2048^2 d=1", (2048, 2048), (3, 3), 1),
    ("seed 2048^2 d=2", (2048, 2048), (3, 3), 2),
    ("seed 2048^2 d=4", (2048, 2048), (3, 3), 4),
    ("seed 2048^2 d=16", (2048, 2048), (3, 3), 16),
    ("signal 2^24 d=1", (1, 2**24), (1, 3), 1),
    ("signal 2^24 d=4096", (1, 2**24), (1, 3), 4096),
    ("strip 256x2048 d=2", (256, 2048), (3, 3), 2),
)


def routes(
    shape: tuple[int, int], taps: tuple[int, int], d: int
) -> dict[str, Callable[[], object]]:
    """The two routes of one call, and a copy of its input, on random data."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32)
    w = rng.standard_normal(taps, dtype=np.float32)
    copy_into = np.empty_like(x)
    options = {"dilation": d, "padding": "same", "method": "compiled"}
    llvm = stencil_rows.correlate

    def numba() -> object:
        stencil_rows.correlate = lambda *args, **kwargs: False
        try:
            return dilconv.conv2d(x, w, **options)
        finally:
            stencil_rows.correlate = llvm

    return {
        "llvm": lambda: dilconv.conv2d(x, w, **options),
        "numba": numba,
        "copyto": lambda: np.copyto(copy_into, x),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=31, help="timed calls per route")
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between calls")
    args = parser.parse_args(argv)
    print(f"dilconv {dilconv.__version__}; last-level cache {last_level_cache.size() >> 20} MiB")
    for label, shape, taps, d in CASES:
        calls = routes(shape, taps, d)
        for call in calls.values():  # warm-up: compiled code and plans
            call()
        times: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(args.repeats):
            for name, call in calls.items():
                spin.busy_pause(args.pause, pool.num_threads())
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
        ms = {name: float(np.median(t)) * 1e3 for name, t in times.items()}
        print(
            f"{label:20s} llvm {ms['llvm']:.3f} ms, numba {ms['numba']:.3f} ms "
            f"(llvm/numba {ms['llvm'] / ms['numba']:.2f}); copyto {ms['copyto']:.3f} ms "
            f"(llvm/copyto {ms['llvm'] / ms['copyto']:.2f})",
            flush=True,
        )


if __name__ == "__main__":
    main()

"""NCHW ``winograd``'s routes against the NHWC call, in one process.

The three NCHW routes of ``method="winograd"`` (vectors of tiles, rows staged band by
band, both arrays moved) and the NHWC call, interleaved call by call, each after a
pause spent spinning on every core as ``dilconv bench`` does (after a sleep the CPUs
wake slowly, and the calls took 15-19 ms instead of 13.5-14), on the bench's
Winograd layers; prints the medians and each NCHW route over the NHWC call::

    .venv/bin/python benchmarks/nchw_routes.py --repeats 21

"Planar" and "staged" are forced whatever
:func:`dilconv._methods._winograd_planar.pays` says. "Moved" is the route every
NCHW call took before ``dilconv._methods._winograd_nchw``: the input moved to NHWC,
Winograd, the result moved back (forced here by leaving ``winograd`` out of
``dilconv.conv.IN_PLACE`` for that call).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_info

import dilconv
import dilconv.conv as conv
from dilconv._methods import _winograd_planar
from dilconv._native import pool, spin

#: (label, batch, channels in, image side, channels out, dilation)
LAYERS = (
    ("context C=64 d=1", 1, 64, 256, 64, 1),
    ("context C=64 d=4", 1, 64, 256, 64, 4),
    ("context C=64 d=16", 1, 64, 256, 64, 16),
    ("context C=21 d=1", 1, 21, 256, 21, 1),
    ("wave d=2", 8, 64, 128, 64, 2),
    ("aspp d=12", 1, 2048, 65, 256, 12),
)


def routes(n: int, c: int, hw: int, o: int, d: int) -> dict[str, Callable[[], object]]:
    """The four calls of one layer on random data."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, hw, hw), dtype=np.float32)
    w = rng.standard_normal((o, c, 3, 3), dtype=np.float32)
    xh = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    wh = np.ascontiguousarray(w.transpose(2, 3, 1, 0))
    options = {"dilation": d, "padding": "same", "method": "winograd"}
    in_place = conv.IN_PLACE["winograd"]

    def forced(planar: bool) -> Callable[[], object]:
        def call() -> object:
            chosen = _winograd_planar.pays
            _winograd_planar.pays = lambda spec: planar
            try:
                return dilconv.conv2d(x, w, **options)
            finally:
                _winograd_planar.pays = chosen

        return call

    def moved() -> object:
        del conv.IN_PLACE["winograd"]
        try:
            return dilconv.conv2d(x, w, **options)
        finally:
            conv.IN_PLACE["winograd"] = in_place

    return {
        "NHWC": lambda: dilconv.conv2d(xh, wh, data_format="NHWC", **options),
        "NCHW planar": forced(True),
        "NCHW staged": forced(False),
        "NCHW moved": moved,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21, help="timed calls per route")
    parser.add_argument(
        "--pause", type=float, default=0.15, help="seconds between calls, spent spinning"
    )
    args = parser.parse_args()
    blas = ", ".join(f"{i['internal_api']} {i.get('architecture')}" for i in threadpool_info())
    print(f"dilconv {dilconv.__version__}; BLAS: {blas or 'none loaded'}")
    for label, n, c, hw, o, d in LAYERS:
        calls = routes(n, c, hw, o, d)
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
        cells = [f"NHWC {ms['NHWC']:.1f} ms"] + [
            f"{name} {ms[name]:.1f} ms ({ms[name] / ms['NHWC']:.2f}x)"
            for name in ("NCHW planar", "NCHW staged", "NCHW moved")
        ]
        print(f"{label:18s} " + "; ".join(cells), flush=True)


if __name__ == "__main__":
    main()

"""``blocked`` with its kernel columns folded (few output channels) against its usual
tile loop (both on every layer, whichever ``_blocked_folded.MARGIN`` would take), in
one process, alternating call by call (random order each round), each
call after a pause spent spinning on every core (``--pause``; 0.15 s as in
``dilconv bench``, 0.03 s for calls close to back to back). Prints medians in ms.

    .venv/bin/python benchmarks/folded_columns.py --repeats 25
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import dilconv
from dilconv._methods import _blocked_folded
from dilconv._native import spin

#: (label, NHWC input shape, output channels)
LAYERS = (
    ("context C=21, 256x256", (1, 256, 256, 21), 21),
    ("3 -> 8 channels, 512x512", (1, 512, 512, 3), 8),
    ("16 -> 5 channels, batch 8 of 128x128", (8, 128, 128, 16), 5),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--pause", type=float, nargs="+", default=[0.03, 0.15])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--dilations", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args()
    _blocked_folded.MARGIN = 0  # both routes on every layer, whatever MARGIN would take
    pays = _blocked_folded.pays
    folding = [True]
    _blocked_folded.pays = lambda spec: folding[0] and pays(spec)  # type: ignore[assignment]
    rng = np.random.default_rng(0)
    for label, shape, o in LAYERS:
        x = rng.standard_normal(shape, dtype=np.float32)
        w = rng.standard_normal((3, 3, shape[-1], o), dtype=np.float32)
        for d in args.dilations:

            def call(x: np.ndarray = x, w: np.ndarray = w, d: int = d) -> np.ndarray:
                return dilconv.conv2d(
                    x, w, dilation=d, padding="same", data_format="NHWC", method="blocked"
                )

            for threads in args.threads:
                with dilconv.config_context(threads=threads):
                    for way in (True, False):
                        folding[0] = way
                        for _ in range(5):
                            call()
                    for pause in args.pause:
                        times: dict[bool, list[float]] = {True: [], False: []}
                        for r in range(args.repeats):
                            for way in np.random.default_rng(r).permutation([True, False]):
                                folding[0] = bool(way)
                                spin.busy_pause(pause, 2)
                                start = time.perf_counter()
                                call()
                                times[bool(way)].append(time.perf_counter() - start)
                        f, u = (1e3 * float(np.median(times[k])) for k in (True, False))
                        print(
                            f"{label}, d={d}, {threads} thread(s), pause {pause} s: "
                            f"folded {f:.2f} ms, usual {u:.2f} ms, ratio {f / u:.2f}",
                            flush=True,
                        )


if __name__ == "__main__":
    main()

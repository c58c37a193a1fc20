"""Threads hammering every native path with more distinct specs than any cache holds.

Run as a child process by ``tests/test_stress.py`` (so a crash fails that test and
not pytest), or by hand for a longer run::

    DILCONV_THREADS=2 python -m tests.native_stress --seconds 600 --threads 6

(or ``DILCONV_STRESS_SECONDS=600 python -m pytest --timeout=0 tests/test_stress.py``).

Each worker thread draws small random calls (sizes 3-16, 1-8 channels, and for a
fifth of the ``winograd`` ones 20-24 pixels a side and 1027 output channels, which
run one group of output channels at a time; dilations 1-4, strides 1-2,
float32/float64, and int64 for ``compiled``) of one native path after another:
``compiled`` (a third of its calls on one channel: LLVM's row loop for floats),
``blocked``, ``winograd``, the weight-gradient tiles and Winograd, transposed ``phase`` and
``scatter``, ``auto``, and the NCHW layout move (``channels``);
``winograd`` on NHWC arrays and on NCHW ones (vectors of tiles,
:mod:`dilconv._methods._winograd_planar`, or staged band by band,
:mod:`dilconv._methods._winograd_nchw`, half of the calls each); each result is
compared with the loop oracle (``method="direct"``). One more thread repeats larger ``winograd`` and
``blocked`` calls (about a second each here), checked against references computed
before the threads start (by ``im2col`` in float64: the loop oracle would take
minutes at that size), while the first two workers cycle only tiny ``winograd``
calls: long calls run while the small ones evict the caches' entries (the way a
table freed under a running call was found: that code failed this run with SIGSEGV
or wrong results).

It runs ``--seconds``, then on until ``--specs`` distinct specs have run (a loaded
machine runs fewer in the time), at most four times as long.
The last line printed is a JSON summary: calls per path, distinct specs, failures.
The exit status is 1 when any result was wrong or any call raised.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

import dilconv
from dilconv import _grad_weight_tiles, _grad_weight_winograd
from dilconv._layout import to_canonical, weight_from_canonical
from dilconv._methods import _winograd_nchw
from dilconv._native import channels
from dilconv._spec import make_spec
from tests.tolerance import tolerance

#: Channel counts drawn: few, since each count of output channels (and of input
#: channels, for the weight-gradient tiles) compiles tile loops of its own, 0.1 s
#: each, and the point is many specs, not many compiled functions.
CHANNELS = (1, 2, 3, 4, 8)

#: Threads that only cycle tiny winograd calls.
CHURNING = 2

PATHS = (
    "compiled",
    "blocked",
    "winograd",
    "winograd3d",
    "grad_tiles",
    "grad_winograd",
    "phase",
    "scatter",
    "auto",
    "channels",
)

#: A drawn call: its key (what makes its spec distinct), the call, and the oracle
#: (on absolute values when asked, for the scale of the rounding errors).
Case = tuple[tuple[Any, ...], Callable[[], np.ndarray], Callable[[bool], np.ndarray]]


def _close(got: np.ndarray, want: np.ndarray, scale: np.ndarray, dtype: np.dtype) -> bool:
    if got.shape != want.shape or got.dtype != want.dtype:
        return False
    rtol, atol = tolerance(dtype, "gradients")
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    return bool(np.all(err <= 4 * (atol + rtol * np.abs(scale).astype(np.float64))))


def draw(rng: np.random.Generator, path: str, largest: int = 16) -> Case:
    """A random small call of ``path``, images of 3 to ``largest`` pixels a side."""
    dtype = np.dtype(rng.choice([np.float32, np.float64]))
    n = int(rng.integers(1, 3))
    h, w = (int(v) for v in rng.integers(3, largest + 1, size=2))
    d = int(rng.integers(1, 5))
    three = path in ("winograd", "grad_winograd")  # 3x3 kernels at stride 1
    k = 3 if three else int(rng.integers(1, 4))
    pad = int(rng.integers(0, d * (k - 1) // 2 + 2))
    stride = 1 if three else int(rng.integers(1, 3))
    c, o = (int(v) for v in rng.choice(CHANNELS, size=2))
    groups = 1
    if path == "compiled":
        if rng.random() < 0.3:
            c = 1  # one channel: LLVM's row loop (dilconv._native.stencil_rows) for floats
        groups, o = c, c  # depthwise (one input channel per output channel)
        if rng.random() < 0.2:
            dtype = np.dtype(np.int64)
    elif path in ("blocked", "grad_tiles") and c % 2 == 0 and o % 2 == 0 and rng.random() < 0.3:
        groups = 2
    if path == "blocked" and rng.random() < 0.3:
        o = groups * int(rng.integers(29, 41))  # past one planar pass: NCHW by bands
    folded = path == "blocked" and groups == 1 and rng.random() < 0.25
    if folded:  # NHWC, few outputs of many inputs: kernel columns folded (_blocked_folded)
        c, o, k, stride, h = 24, int(rng.integers(5, 22)), 3, 1, max(h, 8)
        pad = int(rng.integers(0, d + 2))
    if path == "phase":
        d = stride * int(rng.integers(1, 3))  # the stride divides the dilation
    many_outputs = path == "winograd" and rng.random() < 0.2
    if many_outputs:  # a band's M past winograd.SPLIT_BYTES: one group of outputs at a time
        h, w, o, pad = int(rng.integers(20, 25)), int(rng.integers(20, 25)), 1027, d
    if h + 2 * pad < d * (k - 1) + 1 or w + 2 * pad < d * (k - 1) + 1:
        pad = d * (k - 1)  # at least one output
    options = {"stride": stride, "padding": pad, "dilation": d, "groups": groups}

    def array(shape: tuple[int, ...]) -> np.ndarray:
        if dtype.kind == "i":
            return rng.integers(-4, 5, size=shape).astype(dtype)
        return rng.standard_normal(shape).astype(dtype)

    if path == "channels":  # the layout move of NCHW calls, both ways, past its threshold
        import llvmlite.binding  # noqa: F401 - it moves layouts once LLVM is loaded

        c = max(c, 2)  # one channel is a reshape, which it declines
        rows = -(-channels.MIN_ELEMENTS // (n * c * w))
        a = array((n, c, rows + h, w))
        last = bool(rng.random() < 0.5)
        source = a if last else np.ascontiguousarray(a.transpose(0, 2, 3, 1))

        def move() -> np.ndarray:
            moved = channels.move_channels(source, last=last)
            if moved is None:
                raise RuntimeError("move_channels declined an array past its threshold")
            return moved

        def layout(magnitude: bool) -> np.ndarray:
            want = a.transpose(0, 2, 3, 1) if last else a
            return np.ascontiguousarray(np.abs(want) if magnitude else want)

        return (path, source.shape, str(dtype), last), move, layout
    if path == "winograd3d":  # every depth tap in one pass (dilconv._methods._winograd_volume)
        dd, depth = int(rng.integers(1, 3)), int(rng.integers(3, 6))
        h, w = 2 * d * int(rng.integers(1, 3)), 2 * d * int(rng.integers(1, 3))  # whole tiles
        x3, w3 = array((n, c, depth, h, w)), array((o, c, 3, 3, 3))
        volume = {"padding": ((1, 1), (d, d), (d, d)), "dilation": (dd, d, d)}

        def call3() -> np.ndarray:
            return dilconv.conv3d(x3, w3, method="winograd", **volume)

        def oracle3(magnitude: bool) -> np.ndarray:
            a, b = (np.abs(x3), np.abs(w3)) if magnitude else (x3, w3)
            return dilconv.conv3d(a, b, method="direct", **volume)

        return (path, x3.shape, w3.shape, str(dtype), d, dd), call3, oracle3
    kernel = (k, k)
    if path == "grad_tiles" and rng.random() < 0.25:  # one row longer than a band: folded
        per_column = (stride * c + o) * dtype.itemsize
        h, w, kernel = 1, _grad_weight_tiles.BAND_BYTES // per_column * stride + 3 * d * k, (1, k)
        options["padding"] = ((0, 0), (pad, pad))
    x, wt = array((n, c, h, w)), array((o, c // groups, *kernel))
    if folded or path == "winograd" and (many_outputs or rng.random() < 0.5):  # NHWC, else NCHW
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        wt = np.ascontiguousarray(wt.transpose(2, 3, 1, 0))
        options["data_format"] = "NHWC"
    key = (path, x.shape, wt.shape, str(dtype), stride, pad, d, groups)
    staged = path == "winograd" and "data_format" not in options and rng.random() < 0.5
    if path in ("compiled", "blocked", "winograd", "auto"):
        method = path

        def call() -> np.ndarray:
            if staged:  # NCHW rows staged, where vectors of tiles would be taken
                hwio = np.ascontiguousarray(wt.transpose(2, 3, 1, 0))
                spec = make_spec(x.shape, wt.shape, dtypes=[dtype], **options).lowered()
                return _winograd_nchw.conv_staged(x, hwio, spec)
            return dilconv.conv2d(x, wt, method=method, **options)

        def oracle(magnitude: bool) -> np.ndarray:
            a, b = (np.abs(x), np.abs(wt)) if magnitude else (x, wt)
            return dilconv.conv2d(a, b, method="direct", **options)

        return key, call, oracle
    spec = make_spec(x.shape, wt.shape, dtypes=[dtype], **options)
    g = array((n, o, *spec.out_hw))
    if path in ("grad_tiles", "grad_winograd"):
        route = (
            _grad_weight_tiles.by_tiles
            if path == "grad_tiles"
            else _grad_weight_winograd.grad_weight
        )

        def call() -> np.ndarray:
            got = route(to_canonical(x, spec), to_canonical(g, spec), spec.lowered())
            return weight_from_canonical(got, spec)

        def oracle(magnitude: bool) -> np.ndarray:
            a, b = (np.abs(x), np.abs(g)) if magnitude else (x, g)
            return dilconv.conv2d_grad_weight(a, b, wt.shape, method="direct", **options)

        return key, call, oracle
    # transposed: the adjoint of the forward call above, from g back to x's shape (the
    # forward weight (O, C, k, k) is the transposed one, PyTorch's (C_in, C_out, k, k))
    t_options = {**options, "output_size": (h, w)}
    method = path

    def call() -> np.ndarray:
        return dilconv.conv2d_transpose(g, wt, method=method, **t_options)

    def oracle(magnitude: bool) -> np.ndarray:
        a, b = (np.abs(g), np.abs(wt)) if magnitude else (g, wt)
        return dilconv.conv2d_transpose(a, b, method="direct", **t_options)

    return key, call, oracle


Large = tuple[str, Callable[[], np.ndarray], np.ndarray, np.ndarray]


def large_calls(rng: np.random.Generator) -> list[Large]:
    """The long calls (winograd with some outputs computed directly, blocked, one
    signal's row cut among the threads), their references and magnitudes, computed
    before any thread starts."""
    x = rng.standard_normal((1, 32, 383, 383)).astype(np.float32)
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    out = []
    for method, d in (("winograd", 2), ("blocked", 3)):

        def call(method: str = method, d: int = d) -> np.ndarray:
            return dilconv.conv2d(x, w, dilation=d, padding=d, method=method)

        exact = [
            dilconv.conv2d(a.astype(np.float64), b, dilation=d, padding=d, method="im2col")
            for a, b in ((x, w.astype(np.float64)), (np.abs(x), np.abs(w).astype(np.float64)))
        ]
        out.append((method, call, exact[0].astype(np.float32), exact[1]))
    # one long row: a 1-D signal cut among the pool's threads (stencil_rows.row_pieces)
    signal = rng.standard_normal((1, 1, 2**20 + 37)).astype(np.float32)
    taps = rng.standard_normal((1, 1, 3)).astype(np.float32)

    def pieces() -> np.ndarray:
        return dilconv.conv1d(signal, taps, dilation=3, padding="same", method="compiled")

    exact = [
        dilconv.conv1d(
            a.astype(np.float64), b.astype(np.float64), dilation=3, padding="same", method="im2col"
        )  # fmt: skip
        for a, b in ((signal, taps), (np.abs(signal), np.abs(taps)))
    ]
    out.append(("compiled", pieces, exact[0].astype(np.float32), exact[1]))
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=4, help="small-call threads (>= 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--specs",
        type=int,
        default=300,
        help="after --seconds, go on until this many distinct specs ran (at most 4x as long)",
    )
    args = parser.parse_args(argv)
    large = large_calls(np.random.default_rng(args.seed))
    lock = threading.Lock()
    counts = dict.fromkeys((*PATHS, "large"), 0)
    refused = dict.fromkeys(PATHS, 0)
    keys: set[tuple[Any, ...]] = set()
    failures: list[str] = []
    start = time.monotonic()

    def going() -> bool:
        """Until ``--seconds`` have passed and ``--specs`` specs ran (a loaded machine
        runs fewer in the time), or four times ``--seconds``."""
        spent = time.monotonic() - start
        return spent < args.seconds or (len(keys) < args.specs and spent < 4 * args.seconds)

    per_thread: dict[str, int] = {}

    def record(path: str, key: tuple[Any, ...], problem: str | None) -> None:
        with lock:
            name = threading.current_thread().name
            per_thread[name] = per_thread.get(name, 0) + 1
            counts[path] += 1
            keys.add(key)
            if problem is not None and len(failures) < 20:
                failures.append(problem)

    def small(index: int) -> None:
        rng = np.random.default_rng([args.seed, index])
        turn = index
        while going():
            # the first two threads only cycle tiny winograd calls: their tables churn
            # the caches while the long calls run (the oracle is quick on tiny images)
            path = "winograd" if index < CHURNING else PATHS[turn % len(PATHS)]
            turn += 1
            key, call, oracle = draw(rng, path, 6 if index < CHURNING else 16)
            try:
                try:
                    got = call()
                except ValueError as err:  # phase: a padding with no single-phase form
                    if "cannot compute this call" not in str(err):
                        raise
                    with lock:
                        refused[path] += 1
                    continue
                want = oracle(False)
                ok = _close(got, want, oracle(True), want.dtype)
                record(path, key, None if ok else f"wrong result: {key}")
            except Exception:
                record(path, key, f"{key}: {traceback.format_exc(limit=4)}")

    def big() -> None:
        turn = 0
        while going():
            method, call, reference, magnitude = large[turn % len(large)]
            turn += 1
            try:
                got = call()
                ok = _close(got, reference, magnitude, got.dtype)
                record("large", (method,), None if ok else f"wrong large {method} result")
            except Exception:
                record("large", (method,), f"large {method}: {traceback.format_exc(limit=4)}")

    workers = [threading.Thread(target=small, args=(i,)) for i in range(args.threads)]
    workers.append(threading.Thread(target=big))
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    summary = {
        "seconds": round(time.monotonic() - start, 1),
        "threads": len(workers),
        "calls": counts,
        "refused": refused,
        "distinct_specs": len(keys),
        "per_thread": per_thread,
        "failures": failures,
    }
    print(json.dumps(summary), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

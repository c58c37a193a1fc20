"""Fit the constants of dilconv's cost model (``src/dilconv/cost_model.json``) on this machine.

Each constant is measured by the micro-benchmark that defines it (best of several
runs) and printed; ``--write`` writes them into ``src/dilconv/cost_model.json``
(each constant's note is kept), the one file the model reads. The model's
choices are then checked against a stopwatch on the benchmark cases::

    .venv/bin/python benchmarks/fit_cost_model.py            # fit and check
    .venv/bin/python benchmarks/fit_cost_model.py --no-check # fit only
    .venv/bin/python benchmarks/fit_cost_model.py --write    # fit, write the data file
    .venv/bin/python benchmarks/fit_cost_model.py --json fit.json
    .venv/bin/python benchmarks/fit_cost_model.py --first-calls-only --no-check --write
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import fft as sfft
from scipy import signal

import dilconv
from dilconv import _cost, _select
from dilconv._methods import _winograd_products, blocked, winograd
from dilconv._native import pool, spin
from dilconv._spec import make_spec


def best(fn: Callable[[], Any], repeats: int = 5) -> float:
    """Best wall time of ``fn()`` after a settling pause and one warm-up run (the
    pause outlasts the spin of idle BLAS threads that an earlier timing woke)."""
    spin.busy_pause(spin.SETTLE_SECONDS, pool.num_threads())
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def gemm_rate(m: int, k: int, n: int) -> float:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    return 2 * m * k * n / best(lambda: a @ b)


def fit() -> dict[str, float]:
    """Measure every constant of the model."""
    rng = np.random.default_rng(0)
    cost: dict[str, float] = {}
    tiny = np.ones((4, 4), np.float32)
    cost["call"] = best(lambda: dilconv.conv2d(tiny, tiny[:1, :1], method="shift_add"), 50)
    small = np.ones(16, np.float32)
    cost["tap"] = best(lambda: np.multiply(small, small, out=small), 2000)
    strip = rng.standard_normal((16, 2048), dtype=np.float32)
    out = np.empty_like(strip)
    loops = 200
    t = best(lambda: [np.multiply(strip, 0.5, out=out) for _ in range(loops)])
    cost["elementwise"] = strip.size * loops / t
    image = rng.standard_normal((1024, 1024), dtype=np.float32)
    kernel = rng.standard_normal((3, 3), dtype=np.float32)
    os.environ["DILCONV_THREADS"] = "1"
    one = best(lambda: dilconv.conv2d(image, kernel, padding="same", method="shift_add"))
    del os.environ["DILCONV_THREADS"]
    every = best(lambda: dilconv.conv2d(image, kernel, padding="same", method="shift_add"))
    cost["threads"] = max(1.0, one / every)
    block = rng.standard_normal((64, 258, 64), dtype=np.float32)
    buf = np.empty((64, 256, 64), np.float32)
    t = best(lambda: np.copyto(buf, block[:, 1:-1]))
    cost["copy"] = buf.nbytes / t
    peak = gemm_rate(2048, 2048, 2048)
    cost["gemm"] = peak
    # rate = peak / (1 + k0/K + n0/N + m0/M): one small dimension at a time
    cost["gemm_k"] = 16 * max(peak / gemm_rate(8192, 16, 256) - 1, 0.01)
    cost["gemm_n"] = 16 * max(peak / gemm_rate(8192, 256, 16) - 1, 0.01)
    cost["gemm_m"] = 64 * max(peak / gemm_rate(64, 2048, 256) - 1, 0.01)
    # BLAS threading a small product itself, against two threads sharing bands of it
    from dilconv._native import pool

    a = rng.standard_normal((65536, 21), dtype=np.float32)
    b = rng.standard_normal((21, 21), dtype=np.float32)
    c = np.empty((65536, 21), np.float32)
    blas_threads = best(lambda: np.matmul(a, b, out=c))
    halves = [slice(0, 32768), slice(32768, 65536)]
    with pool.single_threaded_blas():
        ours = best(lambda: pool.parallel_map(lambda h: np.matmul(a[h], b, out=c[h]), halves))
    cost["small_kn"] = 8192.0
    cost["small_penalty"] = max(1.0, blas_threads / ours)
    # a gather of 84-byte runs (21 float32 channels) against the plain copy rate
    narrow = rng.standard_normal((256, 256, 42), dtype=np.float32)
    dst = np.empty((256, 256, 21), np.float32)
    rate = dst.nbytes / best(lambda: np.copyto(dst, narrow[:, :, :21]))
    cost["run"] = 84 * max(cost["copy"] / rate - 1, 0.01)
    plane = rng.standard_normal((1024, 1024))
    size = plane.size
    cost["fft"] = 5 * size * np.log2(size) / 2 / best(lambda: sfft.rfft2(plane))
    xf = (rng.standard_normal((1, 256, 129, 32)) + 1j).astype(np.complex128)
    kf = (rng.standard_normal((256, 129, 32, 32)) + 1j).astype(np.complex128)
    t = best(lambda: np.einsum("nhwc,hwco->nhwo", xf, kf), 3)
    cost["einsum"] = 256 * 129 * 32 * 32 / t
    img = rng.standard_normal((256, 256))
    k5 = rng.standard_normal((5, 5))
    cost["scipy_direct"] = 252 * 252 * 25 / best(lambda: signal.correlate2d(img, k5, mode="valid"))
    # fixed costs of the many-call paths, on a call too small for anything else to count
    x8 = rng.standard_normal((1, 3, 8, 8))
    w8 = rng.standard_normal((4, 3, 3, 3))
    cost["fft_call"] = best(lambda: dilconv.conv2d(x8, w8, method="fft"), 50) - cost["call"]
    cost["scipy_call"] = best(lambda: signal.correlate2d(img[:2, :2], k5[:1, :1]), 200)
    cost.update(fit_compiled(rng, cost["call"]))
    cost.update(fit_blocked(rng, cost["call"]))
    cost["layout"] = fit_layout(rng)
    cost.update(fit_winograd(rng, cost))
    cost.update(fit_first_calls())
    return cost


#: A fresh process's first and second call of one method (explicit, so it loads and
#: waits), printed as two numbers of seconds.
FIRST_CALL_SCRIPT = """
import sys, time
import numpy as np
import dilconv
method, shape = sys.argv[1], tuple(int(v) for v in sys.argv[2].split(","))
groups = int(sys.argv[3])
x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
w = np.ones((3, 3, shape[-1] // groups, shape[-1]), np.float32)
times = []
for _ in range(2):
    start = time.perf_counter()
    dilconv.conv2d(x, w, padding="same", dilation=2, groups=groups, data_format="NHWC",
                   method=method)
    times.append(time.perf_counter() - start)
print(*times)
"""


def fit_first_calls(rounds: int = 3) -> dict[str, float]:
    """What a fresh process's first call of each loaded-code method adds to it (first
    call less second call, best of ``rounds`` processes): with the disk caches
    holding its code, and with empty ones (a new temporary folder each process)."""
    import subprocess
    import sys
    import tempfile

    # each route of loaded code: (method, NHWC shape, groups); "stencil" is compiled's
    # row loop for one channel (llvmlite, no Numba), "compiled" its Numba loops
    shapes = {
        "stencil": ("compiled", "1,256,256,1", "1"),
        "compiled": ("compiled", "1,256,256,4", "4"),
        "blocked": ("blocked", "1,64,64,16", "1"),
        "winograd": ("winograd", "1,64,64,16", "1"),
    }
    cost: dict[str, float] = {}

    def added(route: str, env: dict[str, str]) -> float:
        out = subprocess.run(
            [sys.executable, "-c", FIRST_CALL_SCRIPT, *shapes[route]],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        return float(out[0]) - float(out[1])

    for route in shapes:
        env = dict(os.environ)
        added(route, env)  # fills the caches
        cost[f"{route}_first_cached"] = min(added(route, env) for _ in range(rounds))
        empty = []
        for _ in range(rounds):
            with tempfile.TemporaryDirectory() as tmp:
                fresh = {**env, "DILCONV_CACHE_DIR": f"{tmp}/d", "NUMBA_CACHE_DIR": f"{tmp}/n"}
                empty.append(added(route, fresh))
        cost[f"{route}_first_empty"] = min(empty)
    return cost


def fit_compiled(rng: np.random.Generator, call: float) -> dict[str, float]:
    """The compiled loops on one thread: rate per multiply-add and cost per row pass.

    Two single-channel images with the same rows and different widths separate the
    per-row cost from the rate; a depthwise call then gives the per-channel rate.
    """
    cost: dict[str, float] = {}
    kernel = rng.standard_normal((3, 3), dtype=np.float32)
    wide = rng.standard_normal((1024, 1024), dtype=np.float32)
    narrow = np.ascontiguousarray(wide[:, :64])
    depthwise_x = rng.standard_normal((1, 256, 256, 16), dtype=np.float32)
    depthwise_w = rng.standard_normal((3, 3, 1, 16), dtype=np.float32)
    os.environ["DILCONV_THREADS"] = "1"
    try:
        options = {"padding": "same", "dilation": 2, "method": "compiled"}
        t_wide = best(lambda: dilconv.conv2d(wide, kernel, **options), 9) - call
        t_narrow = best(lambda: dilconv.conv2d(narrow, kernel, **options), 9) - call
        t_depth = best(
            lambda: dilconv.conv2d(
                depthwise_x, depthwise_w, groups=16, data_format="NHWC", **options
            ),
            9,
        )
    finally:
        del os.environ["DILCONV_THREADS"]
    passes = 1024 * 3  # output rows times kernel rows
    work_wide, work_narrow = 1024 * 1024 * 9, 1024 * 64 * 9
    cost["compiled"] = (work_wide - work_narrow) / max(t_wide - t_narrow, 1e-9)
    cost["compiled_row"] = max((t_narrow - work_narrow / cost["compiled"]) / passes, 1e-9)
    depth_time = t_depth - call - 256 * 3 * cost["compiled_row"]
    cost["compiled_depthwise"] = 16 * 256 * 256 * 9 / max(depth_time, 1e-9)
    return cost


def fit_blocked(rng: np.random.Generator, call: float) -> dict[str, float]:
    """The register-blocked tiles on one thread: fixed cost, rate, cost per tap pass.

    A tiny call gives the fixed cost; 64 channels in and out (long passes over the
    channels) the rate; one channel in (a pass of one multiply-add per vector) the
    cost of a tile's pass over a tap. Terms as counted by ``dilconv._methods.blocked.work``.
    """

    def seconds(x_shape: tuple[int, ...], w_shape: tuple[int, ...], repeats: int) -> float:
        x = rng.standard_normal(x_shape, dtype=np.float32)
        w = rng.standard_normal(w_shape, dtype=np.float32)
        options = {"padding": "same", "dilation": 2, "data_format": "NHWC", "method": "blocked"}
        return best(lambda: dilconv.conv2d(x, w, **options), repeats)

    def terms(x_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> tuple[int, int]:
        spec = make_spec(
            x_shape,
            w_shape,
            padding="same",
            dilation=2,
            data_format="NHWC",
            dtypes=[np.dtype(np.float32)],
        ).lowered()
        macs, passes, _, _ = blocked.work(spec)
        return macs, passes

    cost: dict[str, float] = {}
    tiny, dense, thin = (
        ((1, 4, 4, 2), (3, 3, 2, 2)),
        ((1, 64, 64, 64), (3, 3, 64, 64)),
        (
            (1, 256, 256, 1),
            (3, 3, 1, 16),
        ),
    )
    os.environ["DILCONV_THREADS"] = "1"
    try:
        t_tiny = seconds(*tiny, 50)
        t_dense = seconds(*dense, 9)
        t_thin = seconds(*thin, 9)
    finally:
        del os.environ["DILCONV_THREADS"]
    cost["blocked_call"] = max(t_tiny - call, 1e-6)
    fixed = call + cost["blocked_call"]
    macs, _ = terms(*dense)
    cost["blocked"] = macs / max(t_dense - fixed, 1e-9)
    macs, passes = terms(*thin)
    cost["blocked_tap"] = max(t_thin - fixed - macs / cost["blocked"], 1e-9) / passes
    return cost


def fit_layout(rng: np.random.Generator) -> float:
    """Bytes/s of an NCHW call's two layout moves: winograd (which runs on NHWC) on
    NCHW arrays less the same call on NHWC arrays, over the input and output bytes."""
    x = rng.standard_normal((1, 64, 256, 256), dtype=np.float32)
    w = rng.standard_normal((64, 64, 3, 3), dtype=np.float32)
    xl, wl = (
        np.ascontiguousarray(x.transpose(0, 2, 3, 1)),
        np.ascontiguousarray(w.transpose(2, 3, 1, 0)),
    )
    opts = {"padding": "same", "method": "winograd"}
    moved = best(lambda: dilconv.conv2d(x, w, **opts)) - best(
        lambda: dilconv.conv2d(xl, wl, data_format="NHWC", **opts)
    )
    return 2 * x.nbytes / max(moved, 1e-9)


def fit_winograd(rng: np.random.Generator, cost: dict[str, float]) -> dict[str, float]:
    """Winograd's transforms on one thread: values per second, given the tile loop's rate.

    A 64-channel 3x3 layer, less the fixed costs, the 16 products at the "blocked"
    rate and the calls (terms as counted by ``dilconv._methods.winograd.work``), leaves the
    time of the input and output transforms. The weights' transform is timed alone
    on aspp's weights (2048 -> 256 channels).
    """
    x = rng.standard_normal((1, 128, 128, 64), dtype=np.float32)
    w = rng.standard_normal((3, 3, 64, 64), dtype=np.float32)
    options = {"padding": "same", "dilation": 2, "data_format": "NHWC"}
    spec = make_spec(x.shape, w.shape, dtypes=[x.dtype], **options).lowered()
    os.environ["DILCONV_THREADS"] = "1"
    try:
        t = best(lambda: dilconv.conv2d(x, w, method="winograd", **options), 9)
        macs, values, calls, _ = winograd.work(spec)
    finally:
        del os.environ["DILCONV_THREADS"]
    rest = t - cost["call"] - cost["blocked_call"] - macs / cost["blocked"] - calls * cost["tap"]
    w = rng.standard_normal((3, 3, 2048, 256), dtype=np.float32)
    spec = make_spec((1, 65, 65, 2048), w.shape, dtypes=[w.dtype], **options).lowered()
    plan = _winograd_products.product_plan(spec)
    t_weights = best(lambda: _winograd_products.transform_weights(w, spec, plan)[0], 9)
    return {
        "winograd_transform": values / max(rest, 1e-9),
        "winograd_weights": 16 * 2048 * 256 / t_weights,
    }


#: (label, x shape NHWC, w shape HWIO, dilation): the benchmark cases' shapes.
CHECKS = [
    ("seed d=1", (1, 2048, 2048, 1), (3, 3, 1, 1), 1),
    ("seed d=16", (1, 2048, 2048, 1), (3, 3, 1, 1), 16),
    ("tutorial 256 d=4", (1, 256, 256, 1), (3, 3, 1, 1), 4),
    ("context C=21 d=1", (1, 256, 256, 21), (3, 3, 21, 21), 1),
    ("context C=21 d=16", (1, 256, 256, 21), (3, 3, 21, 21), 16),
    ("context C=21 d=2", (1, 256, 256, 21), (3, 3, 21, 21), 2),
    ("context C=64 d=4", (1, 256, 256, 64), (3, 3, 64, 64), 4),
    ("context C=64 d=16", (1, 256, 256, 64), (3, 3, 64, 64), 16),
    ("aspp d=6", (1, 65, 65, 2048), (3, 3, 2048, 256), 6),
    ("aspp d=18", (1, 65, 65, 2048), (3, 3, 2048, 256), 18),
    ("wave d=2", (8, 128, 128, 64), (3, 3, 64, 64), 2),
    ("depthwise 16", (1, 128, 128, 16), (3, 3, 1, 16), 4),
    ("small 16 channels", (1, 64, 64, 16), (3, 3, 16, 16), 1),
]


def check(repeats: int) -> list[dict[str, Any]]:
    """The model's choice against the measured fastest candidate on each case."""
    rng = np.random.default_rng(1)
    rows = []
    for label, x_shape, w_shape, d in CHECKS:
        x = rng.standard_normal(x_shape, dtype=np.float32)
        w = rng.standard_normal(w_shape, dtype=np.float32)
        options = {
            "padding": "same",
            "dilation": d,
            "groups": x_shape[3] // w_shape[2],
            "data_format": "NHWC",
        }
        spec = make_spec(x.shape, w.shape, dtypes=[x.dtype], **options).lowered()
        names = [
            m
            for m in _select.candidates(spec)
            if _select.estimate_seconds(m, spec)
            < 20 * min(_select.estimate_seconds(n, spec) for n in _select.candidates(spec))
        ]
        times = {
            m: best(lambda m=m, x=x, w=w, o=options: dilconv.conv2d(x, w, method=m, **o), repeats)
            for m in names
        }
        chosen = _select.cheapest(spec)
        fastest = min(times, key=times.__getitem__)
        rows.append(
            {
                "case": label,
                "chosen": chosen,
                "fastest": fastest,
                "chosen_over_fastest": times.get(chosen, float("nan")) / times[fastest],
                "measured_ms": {m: round(t * 1e3, 2) for m, t in times.items()},
                "modelled_ms": {
                    m: round(_select.estimate_seconds(m, spec) * 1e3, 2) for m in names
                },
            }
        )
        r = rows[-1]
        print(
            f"{label:<20} chose {chosen:<14} fastest {fastest:<14} "
            f"ratio {r['chosen_over_fastest']:.2f}  measured {r['measured_ms']}",
            flush=True,
        )
    return rows


def write(cost: dict[str, float], path: Path = _cost.COST_FILE, partial: bool = False) -> None:
    """Replace the values in the data file at ``path`` by ``cost`` (3 significant
    digits), keeping each constant's note; every constant of the file must be fitted,
    unless ``partial`` (the others are kept)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    missing = set(data["constants"]) - set(cost)
    if missing and not partial:
        raise SystemExit(f"not fitted, file left unchanged: {sorted(missing)}")
    for key, value in cost.items():
        entry = data["constants"].setdefault(key, {"note": ""})
        entry["value"] = float(f"{value:.3g}")
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-check", action="store_true", help="fit only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--write", action="store_true", help=f"write the fitted constants into {_cost.COST_FILE}"
    )
    parser.add_argument(
        "--first-calls-only",
        action="store_true",
        help="fit (and with --write, replace) only the *_first_cached and *_first_empty "
        "constants: what loading or compiling adds to a fresh process's first call",
    )
    args = parser.parse_args()
    cost = fit_first_calls() if args.first_calls_only else fit()
    for key, value in cost.items():
        print(f"{key:<20} {value:.3g}")
    if args.write:
        write(cost, partial=args.first_calls_only)
    record: dict[str, Any] = {"cost": cost, "load_average": list(os.getloadavg())}
    if not args.no_check:
        record["check"] = check(args.repeats)
    if args.json is not None:
        args.json.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

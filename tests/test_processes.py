"""Processes and signals: fork, Dask process workers, Ctrl+C and interpreter exit.

Each case runs in a child process with a timeout, so that a hang or a crash fails
the test instead of blocking or killing pytest. Inputs are small integers, whose
float32 sums are exact in any order, so every result is compared for equality
with :data:`PRELUDE`'s ``reference`` (plain NumPy, no dilconv).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PRELUDE = """
import json, os, signal, sys, threading, time
import numpy as np
import dilconv
from dilconv._native import pool, tile_kernel


def reference(x, w, d):
    kh, kw = w.shape[:2]
    ph, pw = (kh - 1) * d // 2, (kw - 1) * d // 2
    xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    h, wd = x.shape[1:3]
    y = np.zeros((*x.shape[:3], w.shape[3]), x.dtype)
    for a in range(kh):
        for b in range(kw):
            y += xp[:, a * d : a * d + h, b * d : b * d + wd, :] @ w[a, b]
    return y


def problem(size, channels, taps=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, (1, size, size, channels)).astype(np.float32)
    w = rng.integers(-2, 3, (taps, taps, channels, channels)).astype(np.float32)
    return x, w


def exact(method, size, channels, dilation=2, dtype=np.float32, nchw=False):
    x, w = (a.astype(dtype) for a in problem(size, channels))
    if nchw:  # PyTorch's layout: blocked reads and writes it in place
        y = dilconv.conv2d(x.transpose(0, 3, 1, 2).copy(), w.transpose(3, 2, 0, 1).copy(),
                           padding="same", dilation=dilation, method=method).transpose(0, 2, 3, 1)
    else:
        y = dilconv.conv2d(x, w, padding="same", dilation=dilation, data_format="NHWC",
                           method=method)
    return bool(np.array_equal(y, reference(x, w, dilation)))


def weight_exact(size=48, channels=64, d=2):
    '''The weight gradient of a 64-channel layer (Winograd's route) against sums of
    products: small integers, exactly equal.'''
    x, _ = problem(size, channels)
    g = np.random.default_rng(1).integers(-2, 3, x.shape).astype(np.float32)
    got = dilconv.conv2d_grad_weight(x, g, (3, 3, channels, channels), padding="same",
                                     dilation=d, data_format="NHWC")
    xp = np.pad(x[0], ((d, d), (d, d), (0, 0)))
    rows = g[0].reshape(-1, channels)
    want = [[xp[a * d : a * d + size, b * d : b * d + size].reshape(-1, channels).T @ rows
             for b in range(3)] for a in range(3)]
    return bool(np.array_equal(got, np.array(want)))


def streamed():
    '''A WaveNet-like stack streamed in blocks long enough for its matrix products
    (BLAS inside Numba), against its batch forward: small integers, exactly equal.'''
    from dilconv import nn

    rng = np.random.default_rng(0)
    layers = []
    for d in (1, 4, 32, 100):
        conv = nn.Conv2d(8, 8, (1, 2), dilation=(1, d), padding=((0, 0), (d, 0)), rng=rng,
                         dtype=np.float32)
        conv.weight[...] = rng.integers(-1, 2, conv.weight.shape)
        conv.bias[...] = rng.integers(-2, 3, conv.bias.shape)
        layers.append(nn.Residual(conv))
    net = nn.Sequential(*layers)
    x = rng.integers(-2, 3, (2, 8, 1, 400)).astype(np.float32)
    s = net.stream(batch=2, engine="compiled")
    y = np.concatenate([s.push(x[:, :, 0, t : t + 64]) for t in range(0, 400, 64)], axis=2)
    return bool(np.array_equal(y, net.forward(x)[:, :, 0, :]))


#: One channel, size and taps: a ``compiled`` call of over a second on 2 fast cores.
LONG_ONE_CHANNEL = (6144, 1, 41)

#: Threaded calls (big enough to share among two threads) of the native paths.
CHECKS = [("tap_gemm", 160, 24), ("blocked", 160, 24), ("compiled", 1100, 1), ("winograd", 96, 16),
          ("blocked", 160, 24, 2, np.float32, True), ("blocked", 96, 40, 2, np.float32, True),
          ("blocked", 240, 24),  # the last two results on kept memory (4.6 and 5.3 MiB)
          ("blocked", 160, 21),  # kernel columns folded into the outputs (_blocked_folded)
          ("winograd", 96, 16, 2, np.float32, True),  # NCHW, vectors of tiles; the weights
          ("winograd", 40, 128, 1, np.float32, True)]  # as given; NCHW rows staged (idle lanes)


def hold_locks_and_pool():
    '''Threads that hold the BLAS lock, the compile locks, the lock of the kept result
    memory, the lazy imports' lock, and the pool's job.'''
    from numba.core.compiler_lock import global_compiler_lock

    from dilconv import _imports
    from dilconv._native import results

    release, holding = threading.Event(), threading.Barrier(7)

    def hold(lock):
        with lock:
            holding.wait()
            release.wait()

    def busy_pool():
        pool.parallel_map(lambda i: (i == 0 and holding.wait(), release.wait()), range(4))

    for target, args in ((hold, (pool._blas_lock,)), (hold, (tile_kernel.COMPILING,)),
                         (hold, (global_compiler_lock,)), (hold, (results._KEPT.lock,)),
                         (hold, (_imports._IMPORTING,)), (busy_pool, ())):
        threading.Thread(target=target, args=args, daemon=True).start()
    holding.wait()
    return release
"""

FORK = """
import multiprocessing


def child():
    # compile (or load) the tile loops again here, under the compile lock: forget the
    # functions, the kernels that hold them and the cached calls that hold those
    from dilconv._methods import (_blocked_bands, _blocked_folded, _blocked_planar,
                                  _blocked_volume,
                                  _winograd_nchw, _winograd_nchw_edges, _winograd_planar,
                                  _winograd_products, blocked, winograd)
    from dilconv import _grad_weight_winograd
    from dilconv._native import fold_kernel, kernels, stencil_kernel, winograd_planar

    tile_kernel._FUNCTIONS.clear()
    fold_kernel._FUNCTIONS.clear()
    stencil_kernel._FUNCTIONS.clear()
    for cached in (kernels.tiles, kernels.stencil, blocked.tile_calls, winograd.band_calls,
                   winograd.direct_calls, _winograd_products.product_calls,
                   _winograd_products.weight_calls, _winograd_products.staged_weight_calls,
                   _winograd_nchw.plan, _winograd_nchw_edges.direct_calls,
                   _blocked_bands.band_calls, _blocked_planar.tile_calls,
                   _blocked_volume.volume_calls, _grad_weight_winograd.band_calls,
                   _winograd_planar.plan, kernels.planar_transform,
                   winograd_planar.planar_transform, kernels.fold, _blocked_folded.fold_calls):
        cached.cache_clear()
    checks = [exact(*check) for check in CHECKS]
    checks.append(weight_exact())
    checks.append(exact("compiled", 1100, 1, dtype=np.float64))  # a new Numba compilation
    checks.append(streamed())  # the streamed stack's products: BLAS called from Numba
    checks.append(len(tile_kernel._FUNCTIONS) > 0)  # the tile loops were made here
    checks.append(len(stencil_kernel._FUNCTIONS) > 0)  # and the one-channel rows
    checks.append(len(fold_kernel._FUNCTIONS) > 0)  # and the folded columns' sums
    sys.exit(0 if all(checks) else 1)


if __name__ == "__main__":
    assert all(exact(*check) for check in CHECKS)  # workers started, code compiled
    assert weight_exact()
    assert streamed()
    release = hold_locks_and_pool()
    context = multiprocessing.get_context(sys.argv[1])
    process = context.Process(target=child)
    process.start()
    process.join(120)
    if process.is_alive():
        process.kill()
        process.join()
    release.set()
    print(json.dumps([process.exitcode]))
"""

DASK = """
import dask
from distributed import Client, LocalCluster


def check():
    return os.getpid(), [exact(*check) for check in CHECKS[:3]]


if __name__ == "__main__":
    assert all(exact(*check) for check in CHECKS[:3])
    release = hold_locks_and_pool()
    with dask.config.set({"distributed.worker.multiprocessing-method": sys.argv[1]}):
        with LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                          dashboard_address=None, host="127.0.0.1") as cluster:
            with Client(cluster) as client:
                pid, results = client.submit(check, pure=False).result(timeout=120)
    release.set()
    print(json.dumps([pid != os.getpid(), *results]))
"""

#: A call whose shares run for seconds each (one channel of 6144x6144 with 41x41
#: taps: 1.1 s on an AMD EPYC of 2 cores, where 4096x4096 with 31x31 had ended in
#: 0.37 s, before the signal; 512x512x96 with 9x9 taps: about 1 s on an AVX-512 host
#: where 256x256 had ended within 0.3 s, 24 s on slower ones), interrupted 0.3 s in.
INTERRUPT = """
method = sys.argv[1]
if method == "compiled":
    long_call, short_call = LONG_ONE_CHANNEL, (1024, 1, 3)
else:
    long_call, short_call = (512, 96, 9), (128, 32, 3)
options = dict(padding="same", data_format="NHWC", method=method)
xs, ws = problem(*short_call)
expected = reference(xs, ws, 2)
assert np.array_equal(dilconv.conv2d(xs, ws, dilation=2, **options), expected)
xb, wb = problem(*long_call)
sent = []


def interrupt():
    sent.append(time.monotonic())
    os.kill(os.getpid(), signal.SIGINT)


threading.Timer(0.3, interrupt).start()
try:
    dilconv.conv2d(xb, wb, **options)
    delay = None  # finished before the signal came
except KeyboardInterrupt:
    delay = time.monotonic() - sent[0]
wrong = [int((dilconv.conv2d(xs, ws, dilation=2, **options) != expected).sum())
         for _ in range(20)]
print(json.dumps({"delay": delay, "wrong": wrong}))
"""

#: Ctrl+C early in a fresh process's first call of Numba's loops, while Numba is
#: being imported; then the same loop on a small problem.
INTERRUPTED_IMPORT = """
at = float(sys.argv[1])
x, w = problem(*LONG_ONE_CHANNEL)  # 41x41 taps: Numba's loop, imported by this call
assert "numba" not in sys.modules
threading.Timer(at, os.kill, (os.getpid(), signal.SIGINT)).start()
try:
    dilconv.conv2d(x, w, padding="same", data_format="NHWC", method="compiled")
    interrupted = False
except KeyboardInterrupt:
    interrupted = True
xs, ws = problem(300, 1, 41)
ys = dilconv.conv2d(xs, ws, padding="same", data_format="NHWC", method="compiled")
print(json.dumps([interrupted, bool(np.array_equal(ys, reference(xs, ws, 1)))]))
"""

#: :data:`INTERRUPT` with Numba imported first and the signal sent ``sys.argv[2]``
#: seconds in: while Numba loads the long call's loop.
INTERRUPTED_LOAD = "import numba\n" + INTERRUPT.replace(
    "threading.Timer(0.3, interrupt)", "threading.Timer(float(sys.argv[2]), interrupt)"
)

EXIT = """
calls = CHECKS
for check in calls:
    exact(*check)
if sys.argv[1] == "during":  # another thread's threaded calls run at exit
    def loop():
        while True:
            for check in calls:
                exact(*check)

    threading.Thread(target=loop, daemon=True).start()
    time.sleep(0.3)
else:  # the items of an interrupted call still run at exit
    x, w = problem(*LONG_ONE_CHANNEL)
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
    try:
        dilconv.conv2d(x, w, padding="same", data_format="NHWC", method="compiled")
    except KeyboardInterrupt:
        pass
print("[]")
"""


def run_script(
    tmp_path: Path, body: str, *args: str, timeout: float = 300, threads: int = 2
) -> object:
    """Run :data:`PRELUDE` + ``body`` as a script on ``threads`` threads; its last line, parsed."""
    script = tmp_path / "child.py"
    script.write_text(PRELUDE + body)
    env = {**os.environ, "DILCONV_THREADS": str(threads)}
    out = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    assert out.returncode == 0, f"child exited with {out.returncode}: {out.stderr[-3000:]}"
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.parametrize("start", ["fork", "forkserver"])
def test_a_child_computes_though_the_parent_held_every_lock_at_the_fork(
    start: str, tmp_path: Path
) -> None:
    """The parent holds the BLAS lock, both compile locks (LLVM's, Numba's) and a
    pool job at the fork (before ``register_at_fork`` reset them, every forked
    child hung)."""
    assert run_script(tmp_path, FORK, start) == [0]


@pytest.mark.parametrize("start", ["spawn", "fork"])
def test_a_dask_process_worker_computes_exactly(start: str, tmp_path: Path) -> None:
    assert run_script(tmp_path, DASK, start) == [True, True, True, True]


@pytest.mark.parametrize(
    ("method", "threads"), [("compiled", 2), ("blocked", 2), ("auto", 2), ("compiled", 1)]
)
def test_ctrl_c_interrupts_a_long_call_and_later_calls_stay_exact(
    method: str, threads: int, tmp_path: Path
) -> None:
    """KeyboardInterrupt arrives while the call's shares still run (they take
    seconds; it arrived after 2.5-3.6 s when the caller ran a share itself, and on
    one thread ``compiled`` now runs its rows in pieces of 2**28 multiply-adds), and
    the interrupted job's late workers never touch the next 20 calls."""
    report = run_script(tmp_path, INTERRUPT, method, threads=threads)
    assert isinstance(report, dict)
    assert report["delay"] is not None, "the long call ended before the signal"
    assert report["delay"] < 2.0
    assert report["wrong"] == [0] * 20


@pytest.mark.parametrize("at", [0.02, 0.06, 0.12])
def test_ctrl_c_during_the_first_import_of_numba_leaves_it_whole(at: float, tmp_path: Path) -> None:
    """Numba is imported inside a call, on first use. Ctrl+C 0.05-0.1 s into it once
    left ``numba`` without ``numba.core``, and every later call of its loops failed
    with AttributeError; the import now finishes first (:mod:`dilconv._imports`)."""
    assert run_script(tmp_path, INTERRUPTED_IMPORT, str(at), threads=1) == [True, True]


@pytest.mark.parametrize("at", [0.08, 0.12, 0.16])
def test_ctrl_c_while_numba_loads_a_loop_lets_the_process_exit_normally(
    at: float, tmp_path: Path
) -> None:
    """A KeyboardInterrupt raised inside Numba's first load of a loop made the process
    kill itself with SIGINT as it exited, after its last line (9 runs in 20 of this
    child); the load now runs on no rows first, with Ctrl+C held back."""
    report = run_script(tmp_path, INTERRUPTED_LOAD, "compiled", str(at), threads=1)
    assert isinstance(report, dict)
    assert report["wrong"] == [0] * 20


@pytest.mark.parametrize("when", ["during", "interrupted"])
def test_the_interpreter_exits_cleanly_while_workers_are_busy(when: str, tmp_path: Path) -> None:
    assert run_script(tmp_path, EXIT, when, timeout=120) == []

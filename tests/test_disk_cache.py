"""The disk cache of compiled code never hurts: damaged entries are rebuilt, an
unusable directory means compiling in memory with one warning.

Every case runs in a child process, so that code LLVM loaded from a bad entry
(the old failure: SIGABRT, SIGSEGV, or a silently wrong sum) fails the test
instead of killing pytest. The tests run as root in CI, where permission bits
do not stop writes: an unwritable directory is simulated by putting it under a
regular file (it cannot be created), by a regular file where the directory
should be, and by a directory in the place of every entry (nothing can be
written there).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from dilconv._native import compiler, disk_cache

#: The child: blocked convolutions (two dtypes and both layouts, so several entries),
#: Winograd weight gradients and Winograd on NCHW arrays on integer values, whose float
#: sums are exact, against the loop oracle.
CHILD = """
import json, warnings
import numpy as np
import dilconv

caught_all = []
equal = True
rng = np.random.default_rng(5)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for dtype in (np.float32, np.float64):
        x = rng.integers(-3, 4, (1, 12, 13, 6)).astype(dtype)
        w = rng.integers(-3, 4, (3, 3, 6, 5)).astype(dtype)
        opts = dict(padding="same", dilation=2, data_format="NHWC")
        y = dilconv.conv2d(x, w, method="blocked", **opts)
        equal &= bool(np.array_equal(y, dilconv.conv2d(x, w, method="direct", **opts)))
        xc, wc = x.transpose(0, 3, 1, 2).copy(), w.transpose(3, 2, 0, 1).copy()
        y = dilconv.conv2d(xc, wc, method="blocked", padding="same", dilation=2)  # NCHW tiles
        equal &= bool(np.array_equal(y, dilconv.conv2d(xc, wc, method="direct", padding="same",
                                                        dilation=2)))
        # one channel: the row loop of dilconv._native.stencil_rows, streamed or not
        from dilconv._native import stencil_rows
        from dilconv._spec import make_spec

        one = x[:, :, :, :1].copy()
        spec = make_spec(one.shape, (3, 3, 1, 1), padding="same", dilation=2,
                         data_format="NHWC", dtypes=[np.dtype(dtype)] * 2)
        want = dilconv.conv2d(one, w[:, :, :1, :1], method="direct", data_format="NHWC",
                              padding="same", dilation=2)[..., 0]
        for stream in (False, True):
            got = np.empty_like(want)
            equal &= stencil_rows.correlate(one[..., 0], w[:, :, 0, 0], got, spec, ((0, 12),),
                                            stream=stream)
            equal &= bool(np.array_equal(got, want))
        # the weight gradient by Winograd: its gradient transform, the input transform and
        # the tile loop
        from dilconv import _grad_weight_winograd

        g = rng.integers(-3, 4, (1, 12, 13, 5)).astype(dtype)
        spec = make_spec(x.shape, w.shape, dtypes=[np.dtype(dtype)] * 2, **opts).lowered()
        dw = _grad_weight_winograd.grad_weight(x, g, spec)
        equal &= bool(np.array_equal(dw, dilconv.conv2d_grad_weight(x, g, w.shape,
                                                                    method="direct", **opts)))
        # Winograd on NCHW arrays: vectors of tiles (small integers: exact sums)
        from dilconv._methods import _winograd_planar

        assert _winograd_planar.pays(make_spec(xc.shape, wc.shape, padding="same", dilation=2,
                                               dtypes=[np.dtype(dtype)] * 2).lowered())
        y = dilconv.conv2d(xc, wc, method="winograd", padding="same", dilation=2)
        equal &= bool(np.array_equal(y, dilconv.conv2d(xc, wc, method="direct", padding="same",
                                                        dilation=2)))
print(json.dumps({"equal": equal, "warnings": [(type(c.message).__name__, str(c.message))
                                             for c in caught]}))
"""


def run_child(cache: Path, timeout: float = 120) -> dict[str, object]:
    """Run :data:`CHILD` with ``cache`` as the cache directory; its report."""
    env = {**os.environ, "DILCONV_CACHE_DIR": str(cache), "DILCONV_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    assert out.returncode == 0, f"child died ({out.returncode}): {out.stderr[-2000:]}"
    report: dict[str, object] = json.loads(out.stdout.splitlines()[-1])
    assert report["equal"] is True
    return report


def entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.o"))


def verified(path: Path) -> bool:
    """True when ``path`` is a whole entry for the key its header names."""
    data = path.read_bytes()
    return disk_cache.unpack(data, data[12:44]) is not None


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache directory filled by one child process."""
    cache = tmp_path_factory.mktemp("filled")
    cache.chmod(0o700)
    assert run_child(cache)["warnings"] == []
    return cache


def copy_of(filled: Path, tmp_path: Path) -> Path:
    cache = tmp_path / "cache"
    shutil.copytree(filled, cache)
    cache.chmod(0o700)
    return cache


def test_entries_are_whole_checked_and_loaded_by_the_next_process(
    filled: Path, tmp_path: Path
) -> None:
    cache = copy_of(filled, tmp_path)
    found = entries(cache)
    assert len(found) >= 2
    assert all(verified(path) for path in found)
    assert not list(cache.glob(".*.tmp"))  # no temporary file left behind
    stamps = {path: path.stat().st_mtime_ns for path in found}
    assert run_child(cache)["warnings"] == []
    assert {path: path.stat().st_mtime_ns for path in entries(cache)} == stamps  # loaded


def _flip_payload_bit(data: bytes) -> bytes:
    middle = (len(data) + 76) // 2  # inside the object code, after the 76-byte header
    return data[:middle] + bytes([data[middle] ^ 0x10]) + data[middle + 1 :]


DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "truncated": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
    "header only": lambda data: data[:76],
    "garbled": lambda data: bytes((b * 7 + 3) % 256 for b in data),
    "one bit of the code": _flip_payload_bit,
    "other key": lambda data: disk_cache.pack(b"\x01" * 32, data[76:]),
    "other format": lambda data: data[:8] + b"\x09" + data[9:],
    "bare object code": lambda data: data[76:],  # as written before entries had headers
}


def test_damaged_entries_are_rebuilt_never_loaded(filled: Path, tmp_path: Path) -> None:
    """Each kind of damage on some entry; as many child processes as that takes."""
    cache = copy_of(filled, tmp_path)
    kinds = list(DAMAGE)
    count = len(entries(filled))
    for first in range(0, len(kinds), count):
        for path, kind in zip(entries(cache), kinds[first : first + count], strict=False):
            path.write_bytes(DAMAGE[kind](path.read_bytes()))
        assert run_child(cache)["warnings"] == []
        rebuilt = entries(cache)
        assert len(rebuilt) == count
        assert all(verified(path) for path in rebuilt), kinds[first : first + count]


def _one_cache_warning(report: dict[str, object], match: str) -> None:
    found = report["warnings"]
    assert isinstance(found, list)
    assert len(found) == 1, found  # once per process, though several functions compile
    kind, message = found[0]
    assert kind == "CacheWarning"
    assert match in message


def test_a_directory_that_cannot_be_created_means_compiling_in_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a regular file where a directory would go")
    _one_cache_warning(run_child(blocker / "cache"), "cannot be created")


def test_a_file_in_place_of_the_directory_means_compiling_in_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("a regular file")
    _one_cache_warning(run_child(blocker), "not a directory")
    assert blocker.read_text() == "a regular file"


def test_entries_that_cannot_be_written_mean_compiling_in_memory(
    filled: Path, tmp_path: Path
) -> None:
    cache = copy_of(filled, tmp_path)
    for path in entries(cache):  # neither readable nor replaceable, even by root
        path.unlink()
        path.mkdir()
    _one_cache_warning(run_child(cache), "cannot be written")
    assert all(path.is_dir() for path in entries(cache))
    assert not list(cache.glob(".*.tmp"))


def test_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    cache = tmp_path / "shared"
    cache.mkdir()
    cache.chmod(0o777)
    _one_cache_warning(run_child(cache), "writable by other users")
    assert not entries(cache)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs chown")
def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    cache = tmp_path / "theirs"
    cache.mkdir(mode=0o700)
    os.chown(cache, 65534, 65534)
    _one_cache_warning(run_child(cache), "belongs to user 65534")
    assert not entries(cache)


def test_a_new_directory_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "new" / "dilconv"
    monkeypatch.setenv("DILCONV_CACHE_DIR", str(cache))
    assert disk_cache.cache_dir() == cache
    assert cache.stat().st_mode & 0o777 == 0o700


def test_processes_filling_one_directory_at_once_all_succeed(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = {**os.environ, "DILCONV_CACHE_DIR": str(cache), "DILCONV_THREADS": "1"}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(3)
    ]
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err[-2000:]
        report = json.loads(out.splitlines()[-1])
        assert report == {"equal": True, "warnings": []}
    assert entries(cache)
    assert all(verified(path) for path in entries(cache))
    assert not list(cache.glob(".*.tmp"))


def test_the_key_covers_versions_cpu_and_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    source = "define void @f() {\n  ret void\n}\n"
    key = compiler.cache_key(source, "f")
    assert compiler.cache_key(source + "\n", "f") != key
    assert compiler.cache_key(source, "g") != key
    monkeypatch.setattr(compiler, "__version__", "0.0.0-other")
    assert compiler.cache_key(source, "f") != key
    monkeypatch.undo()
    monkeypatch.setattr(compiler, "PIPELINE", "O0")
    assert compiler.cache_key(source, "f") != key
    monkeypatch.undo()
    llvm, _ = compiler._llvm()
    monkeypatch.setattr(llvm, "get_host_cpu_name", lambda: "another-cpu")
    assert compiler.cache_key(source, "f") != key
    monkeypatch.undo()
    import llvmlite

    monkeypatch.setattr(llvmlite, "__version__", "0.0.0")
    assert compiler.cache_key(source, "f") != key

"""``dilconv apply`` end to end: Zarr larger than the workers' memory, compressors, bad input.

Every cluster binds 127.0.0.1 and is closed by the test that starts it (a cluster
of separate commands with a worker killed mid-run: ``test_dask_processes.py``). Results
are checked without loading a whole image: slab by slab against the in-memory
:func:`dilconv.conv2d` on the input rows each slab reads. Inputs are small
integers in float32 and kernels small integers, so every sum is exact in any
order by every algorithm but the FFT (which rounds): the runs and the references name
``shift_add`` (``METHOD``), and every comparison is exact equality.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from dask.utils import parse_bytes

import dilconv
from dilconv.cli import main

pytestmark = pytest.mark.slow

#: An algorithm that sums small integers exactly (any but "fft"), so results compare equal.
METHOD = "shift_add"


def write_image(path: Path, shape: tuple[int, int], chunks: tuple[int, int], seed: int) -> Any:
    """A float32 Zarr image of integers in [-8, 8], written one row of chunks at a time."""
    z = zarr.create_array(store=str(path), shape=shape, chunks=chunks, dtype="float32")
    rng = np.random.default_rng(seed)
    for r in range(0, shape[0], chunks[0]):
        rows = min(chunks[0], shape[0] - r)
        z[r : r + rows] = rng.integers(-8, 9, size=(rows, shape[1]), dtype=np.int8)
    return z


def check_by_slabs(
    x_path: Path, y_path: Path, w: np.ndarray, dilation: int, slab: int = 2048
) -> None:
    """``y == conv2d(x, w, dilation, padding="same")``, one slab of output rows at a time."""
    x, y = (
        zarr.open_array(store=str(x_path), mode="r"),
        zarr.open_array(store=str(y_path), mode="r"),
    )
    h, width = x.shape
    assert y.shape == x.shape
    (top, _), (left, right) = dilconv.same_padding((h, width), w.shape, dilation=dilation)
    extent = dilconv.effective_kernel_size(w.shape[0], dilation)
    for o0 in range(0, h, slab):
        o1 = min(o0 + slab, h)
        i0, i1 = o0 - top, o1 - 1 - top + extent  # the input rows these outputs read
        rows = x[max(i0, 0) : min(i1, h)]
        pads = ((max(-i0, 0), max(i1 - h, 0)), (left, right))
        expected = dilconv.conv2d(rows, w, dilation=dilation, padding=pads, method=METHOD)
        actual = y[o0:o1]
        if not np.array_equal(actual, expected):
            np.testing.assert_array_equal(actual, expected, err_msg=f"output rows {o0}:{o1}")


def kernel_file(tmp_path: Path, shape: tuple[int, ...] = (3, 3)) -> Path:
    w = np.random.default_rng(1).integers(-2, 3, size=shape).astype(np.float32)
    path = tmp_path / "k.npy"
    np.save(path, w)
    return path


def leftovers(tmp_path: Path, name: str) -> list[str]:
    """What a run left under the output's name: OUT itself or a partial sibling."""
    return sorted(p.name for p in tmp_path.iterdir() if p.name.lstrip(".").startswith(name))


def test_image_larger_than_the_workers_memory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 2 GiB float32 image on 2 workers of 256 MiB each: completes, exactly.

    Four times the workers' total memory limit (a worker process alone takes
    about 150 MiB of its 256). 75 s on this project's 2 shared cores at a load
    average of 4 to 5 (273 s at 9 to 12).
    """
    shape, chunks, workers, limit = (16384, 32768), (1024, 1024), 2, "256MiB"
    x = write_image(tmp_path / "in.zarr", shape, chunks, seed=0)
    assert x.nbytes == 2 * 2**30 >= 4 * workers * parse_bytes(limit)
    k = kernel_file(tmp_path)
    argv = [str(tmp_path / "in.zarr"), str(tmp_path / "out.zarr"), "--kernel", str(k)]
    argv += ["--dilation", "6", "--padding", "same", "--workers", str(workers), "--method", METHOD]
    assert main(["apply", *argv, "--memory-limit", limit]) == 0
    out = capsys.readouterr().out
    assert "scheduler tcp://127.0.0.1:" in out
    assert "2 workers, 2 threads, memory limit [268435456] bytes each" in out
    assert "chunks (1024, 1024) (regular" in out
    assert zarr.open_array(store=str(tmp_path / "out.zarr"), mode="r").chunks == chunks
    check_by_slabs(tmp_path / "in.zarr", tmp_path / "out.zarr", np.load(k), dilation=6)
    assert leftovers(tmp_path, "out.zarr") == ["out.zarr"]


# --- bad input: a clear error and no output that looks complete ---------------------------


def _apply(tmp_path: Path, x_name: str, *options: str, out: str = "out.zarr") -> int:
    argv = ["apply", str(tmp_path / x_name), str(tmp_path / out), "--kernel"]
    argv += [str(tmp_path / "k.npy"), "--scheduler", "threads", "--method", METHOD]
    return main([*argv, *options])


def test_kernel_larger_than_the_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_image(tmp_path / "in.zarr", (16, 16), (8, 8), seed=3)
    kernel_file(tmp_path, (5, 5))
    assert _apply(tmp_path, "in.zarr", "--dilation", "5") == 2
    err = capsys.readouterr().err
    assert "in.zarr" in err
    assert "dilated kernel (21x21" in err
    assert "larger than the padded input (16x16)" in err
    assert leftovers(tmp_path, "out.zarr") == []


def test_missing_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kernel_file(tmp_path)
    assert _apply(tmp_path, "nothing.zarr", "--dilation", "2") == 2
    assert "nothing.zarr' does not exist" in capsys.readouterr().err
    assert leftovers(tmp_path, "out.zarr") == []


@pytest.mark.parametrize("shape", [(64,), (2, 2, 2, 8, 8)])
def test_zarr_of_the_wrong_ndim(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], shape: tuple[int, ...]
) -> None:
    z = zarr.create_array(store=str(tmp_path / "in.zarr"), shape=shape, dtype="float32")
    z[...] = 1.0
    kernel_file(tmp_path)
    assert _apply(tmp_path, "in.zarr", "--dilation", "2") == 2
    err = capsys.readouterr().err
    assert f"got {len(shape)}-D shape {shape}" in err
    assert "x must be 2-D (H, W), 3-D or 4-D" in err
    assert leftovers(tmp_path, "out.zarr") == []


def test_stride_that_does_not_divide_the_chunks_is_realigned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Input chunks of 5 and a stride of 3: rechunked, output chunks of 2, exact."""
    x = write_image(tmp_path / "in.zarr", (37, 41), (5, 5), seed=4)
    k = kernel_file(tmp_path)
    options = ("--stride", "3", "--dilation", "2", "--padding", "same")
    assert _apply(tmp_path, "in.zarr", *options, "--padding-mode", "reflect") == 0
    captured = capsys.readouterr()
    assert "float32 (13, 14), chunks (2, 2)" in captured.out
    assert "dilconv apply: 100%" in captured.err  # the progress bar ran to the end
    y = zarr.open_array(store=str(tmp_path / "out.zarr"), mode="r")
    assert y.chunks == (2, 2)
    options_ = dict(stride=3, dilation=2, padding="same", padding_mode="reflect")
    expected = dilconv.conv2d(x[:], np.load(k), method=METHOD, **options_)
    np.testing.assert_array_equal(y[:], expected)


def test_failure_mid_run_leaves_no_output(tmp_path: Path) -> None:
    """A corrupt input chunk: the run fails and its partial output is removed."""
    write_image(tmp_path / "in.zarr", (64, 64), (16, 16), seed=5)
    (tmp_path / "in.zarr" / "c" / "2" / "1").write_bytes(b"not a zstd frame")
    kernel_file(tmp_path)
    try:
        status: object = _apply(tmp_path, "in.zarr", "--dilation", "2")
    except Exception as err:  # the codec's own error, raised from a chunk
        status = err
    assert status != 0
    assert leftovers(tmp_path, "out.zarr") == []


def test_existing_output_needs_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x = np.random.default_rng(6).integers(-8, 9, size=(3, 20, 24)).astype(np.float64)
    np.save(tmp_path / "in.npy", x)
    w = np.random.default_rng(7).integers(-2, 3, size=(4, 3, 3, 3)).astype(np.float64)
    np.save(tmp_path / "k.npy", w)
    np.save(tmp_path / "out.npy", np.zeros(3))  # an earlier output: --overwrite may replace it
    old = (tmp_path / "out.npy").read_bytes()
    assert _apply(tmp_path, "in.npy", "--dilation", "2", out="out.npy") == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "out.npy").read_bytes() == old
    argv = ["apply", str(tmp_path / "in.npy"), str(tmp_path / "out.npy"), "--kernel"]
    argv += [str(tmp_path / "k.npy"), "--dilation", "2", "--padding", "full", "--overwrite"]
    argv += ["--method", METHOD]
    assert main([*argv, "--scheduler", "processes", "--workers", "2"]) == 0
    expected = dilconv.conv2d(x, w, dilation=2, padding="full", method=METHOD)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)
    assert leftovers(tmp_path, "out.npy") == ["out.npy"]


def test_workers_with_a_scheduler_address_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_image(tmp_path / "in.zarr", (32, 32), (16, 16), seed=8)
    kernel_file(tmp_path)
    argv = ["apply", str(tmp_path / "in.zarr"), str(tmp_path / "out.zarr"), "--kernel"]
    argv += [str(tmp_path / "k.npy"), "--scheduler", "tcp://127.0.0.1:1", "--workers", "2"]
    assert main(argv) == 2
    assert "--workers and --memory-limit start a LocalCluster" in capsys.readouterr().err
    assert leftovers(tmp_path, "out.zarr") == []


def test_chunks_option_sets_the_output_chunking(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x = write_image(tmp_path / "in.zarr", (40, 50), (16, 16), seed=9)
    k = kernel_file(tmp_path)
    options = ("--stride", "2", "--dilation", "3", "--padding", "1,2,0,3", "--chunks", "4,6")
    assert _apply(tmp_path, "in.zarr", *options) == 0
    assert "chunks (4, 6) (regular" in capsys.readouterr().out
    y = zarr.open_array(store=str(tmp_path / "out.zarr"), mode="r")
    assert y.chunks == (4, 6)
    options_ = dict(stride=2, dilation=3, padding=((1, 2), (0, 3)), method=METHOD)
    expected = dilconv.conv2d(x[:], np.load(k), **options_)
    np.testing.assert_array_equal(y[:], expected)


@pytest.mark.parametrize("compressor", ["none", "zstd", "blosc"])
def test_compressor_choice(tmp_path: Path, compressor: str) -> None:
    x = write_image(tmp_path / "in.zarr", (40, 36), (16, 16), seed=10)
    k = kernel_file(tmp_path)
    options = ("--dilation", "9", "--padding", "same", "--padding-mode", "circular")
    assert _apply(tmp_path, "in.zarr", *options, "--compressor", compressor) == 0
    y = zarr.open_array(store=str(tmp_path / "out.zarr"), mode="r")
    names = [type(c).__name__ for c in y.compressors]
    assert names == {"none": [], "zstd": ["ZstdCodec"], "blosc": ["BloscCodec"]}[compressor]
    options_ = dict(dilation=9, padding="same", padding_mode="circular", method=METHOD)
    np.testing.assert_array_equal(y[:], dilconv.conv2d(x[:], np.load(k), **options_))

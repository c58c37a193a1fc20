"""``dilconv apply`` on 3-D volumes and 1-D signals: per-axis flags, the rank from the kernel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import dilconv
from dilconv.cli import main

RNG = np.random.default_rng(5)
VOLUME = RNG.integers(-8, 9, size=(2, 13, 11, 12)).astype(np.float64)  # (C, D, H, W)
KERNEL = RNG.integers(-2, 3, size=(3, 2, 3, 2, 3)).astype(np.float64)  # (O, I, kd, kh, kw)


def _files(tmp_path: Path, x: np.ndarray, w: np.ndarray, chunks: tuple[int, ...]) -> list[str]:
    zarr.create_array(store=str(tmp_path / "in.zarr"), data=x, chunks=chunks)
    np.save(tmp_path / "k.npy", w)
    return [str(tmp_path / "in.zarr"), str(tmp_path / "out.zarr"), "--kernel"]


def _apply(tmp_path: Path, head: list[str], *flags: str) -> np.ndarray:
    args = ["apply", *head, str(tmp_path / "k.npy"), "--scheduler", "threads", "--no-progress"]
    assert main([*args, *flags]) == 0
    return zarr.open_array(store=str(tmp_path / "out.zarr"), mode="r")[:]


@pytest.mark.parametrize(
    ("flags", "options"),
    [
        (
            ["--dilation", "2,1,3", "--stride", "1,2,1", "--padding", "same"],
            {"dilation": (2, 1, 3), "stride": (1, 2, 1), "padding": "same"},
        ),
        (
            ["--dilation", "3", "--padding", "1,2,0,3,4,0", "--padding-mode", "reflect"],
            {"dilation": 3, "padding": ((1, 2), (0, 3), (4, 0)), "padding_mode": "reflect"},
        ),
        (
            ["--padding", "2,1,3", "--padding-mode", "circular", "--chunks", "3,5,2"],
            {"padding": (2, 1, 3), "padding_mode": "circular"},
        ),
    ],
)
def test_volume_equals_conv3d(tmp_path: Path, flags: list[str], options: dict[str, Any]) -> None:
    """Chunks of 4 voxels, smaller than the halos: the Zarr volume's window reads."""
    head = _files(tmp_path, VOLUME, KERNEL, (1, 4, 4, 4))
    bias = np.array([1.0, -2.0, 3.0])
    np.save(tmp_path / "b.npy", bias)
    y = _apply(tmp_path, head, "--bias", str(tmp_path / "b.npy"), "--method", "shift_add", *flags)
    expected = dilconv.conv3d(VOLUME, KERNEL, bias, method="shift_add", **options)
    np.testing.assert_array_equal(y, expected)


def test_volume_channels_last_from_npy(tmp_path: Path) -> None:
    """An .npy volume in NDHWC with --chunks: dilconv.dask.conv3d, rechunked."""
    x = np.moveaxis(VOLUME, 0, -1).copy()
    np.save(tmp_path / "in.npy", x)
    w = np.moveaxis(KERNEL, (0, 1), (4, 3)).copy()  # (kd, kh, kw, I, O)
    np.save(tmp_path / "k.npy", w)
    head = [str(tmp_path / "in.npy"), str(tmp_path / "out.zarr"), "--kernel"]
    flags = ["--data-format", "NDHWC", "--dilation", "2", "--padding", "same", "--chunks", "3"]
    y = _apply(tmp_path, head, "--method", "shift_add", *flags)
    options = dict(dilation=2, padding="same", data_format="NDHWC", method="shift_add")
    np.testing.assert_array_equal(y, dilconv.conv3d(x, w, **options))


def test_signal_equals_conv1d(tmp_path: Path) -> None:
    """A plain signal (1-D kernel) with causal padding, and a signal with channels (NCW)."""
    x = RNG.integers(-8, 9, size=50).astype(np.float64)
    head = _files(tmp_path, x, np.array([1.0, -2.0, 3.0]), (7,))
    y = _apply(tmp_path, head, "--dilation", "4", "--padding", "causal", "--stride", "2")
    expected = dilconv.conv1d(x, np.array([1.0, -2.0, 3.0]), dilation=4, padding="causal", stride=2)
    np.testing.assert_array_equal(y, expected)
    xc, wc = x.reshape(2, 25), RNG.integers(-2, 3, size=(3, 2, 2)).astype(np.float64)
    (tmp_path / "c").mkdir()
    head = _files(tmp_path / "c", xc, wc, (2, 6))
    y = _apply(tmp_path / "c", head, "--data-format", "NCW", "--padding", "3,1")
    np.testing.assert_array_equal(y, dilconv.conv1d(xc, wc, padding=((3, 1),)))


def test_wrong_number_of_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    head = _files(tmp_path, VOLUME, KERNEL, (1, 4, 4, 4))
    args = ["apply", *head, str(tmp_path / "k.npy"), "--scheduler", "threads"]
    assert main([*args, "--padding", "1,2,3,4"]) != 0
    assert "--padding 1,2,3,4 has 4 values; a 3-D input takes P, 3 (one per axis) or 6" in (
        capsys.readouterr().err
    )
    assert main([*args, "--stride", "1,2"]) != 0
    assert "stride" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--dilation", "1,2,3,4"])
    assert "expected N, H,W or D,H,W" in capsys.readouterr().err
    assert not (tmp_path / "out.zarr").exists()

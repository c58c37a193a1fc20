"""The command line: --version and `dilconv conv`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dilconv
from dilconv.cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"dilconv {dilconv.__version__}"


def test_console_script_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dilconv", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("dilconv ")


def test_conv_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 4, 9, 9)), rng.standard_normal((6, 2, 3, 3)), np.arange(6.0)
    for name, a in (("x", x), ("w", w), ("b", b)):
        np.save(tmp_path / f"{name}.npy", a)
    status = main(
        [
            "conv",
            str(tmp_path / "x.npy"),
            str(tmp_path / "w.npy"),
            str(tmp_path / "y.npy"),
            "--bias",
            str(tmp_path / "b.npy"),
            "--groups",
            "2",
            "--dilation",
            "2,1",
            "--padding",
            "1,2,0,3",
            "--stride",
            "2",
            "--padding-mode",
            "reflect",
            "--flip",
        ]
    )
    assert status == 0
    expected = dilconv.conv2d(
        x,
        w,
        b,
        groups=2,
        dilation=(2, 1),
        padding=((1, 2), (0, 3)),
        stride=2,
        padding_mode="reflect",
        flip=True,
    )
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected)
    assert "y.npy: float64" in capsys.readouterr().out


def test_conv_reports_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "x.npy", np.ones((4, 4)))
    np.save(tmp_path / "w.npy", np.ones((3, 3)))
    status = main(
        [
            "conv",
            str(tmp_path / "x.npy"),
            str(tmp_path / "w.npy"),
            str(tmp_path / "y.npy"),
            "--dilation",
            "3",
        ]
    )
    assert status == 2
    assert "larger than the padded input" in capsys.readouterr().err
    assert not (tmp_path / "y.npy").exists()
    status = main(
        ["conv", str(tmp_path / "missing.npy"), str(tmp_path / "w.npy"), str(tmp_path / "y.npy")]
    )
    assert status == 2
    assert "missing.npy' does not exist" in capsys.readouterr().err


def test_bad_flag_values_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["conv", "a", "b", "c", "--padding", "1,2,3"])
    assert done.value.code == 2
    assert "padding must be same, valid, full" in capsys.readouterr().err

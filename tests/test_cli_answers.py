"""The command line answers bad input with a message and exit status 2, never a traceback,
and every long-running command takes ``--no-progress`` and ``--json [FILE]``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import dilconv
from dilconv.cli import build_parser, main


def _npy_with_header(path: Path, shape: tuple[int, ...], data: bytes = b"") -> None:
    """An .npy file whose header promises ``shape`` but holds only ``data``."""
    with path.open("wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f8", "fortran_order": False, "shape": shape}
        )
        f.write(data)


@pytest.mark.parametrize("which", ["input", "kernel"])
def test_a_huge_header_shape_is_refused_before_allocating(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], which: str
) -> None:
    np.save(tmp_path / "x.npy", np.ones((4, 4)))
    np.save(tmp_path / "w.npy", np.ones((3, 3)))
    _npy_with_header(tmp_path / f"{which}.npy", (10**6, 10**6), b"\0" * 64)
    x = "input.npy" if which == "input" else "x.npy"
    w = "kernel.npy" if which == "kernel" else "w.npy"
    assert main(["conv", str(tmp_path / x), str(tmp_path / w), str(tmp_path / "y.npy")]) == 2
    err = capsys.readouterr().err
    assert f"dilconv conv: error: {which} " in err
    assert "(1000000, 1000000) (8000000000000 bytes), but the file holds 64 bytes" in err
    assert "Traceback" not in err
    assert not (tmp_path / "y.npy").exists()


def test_not_an_npy_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x.npy").write_text("hello")
    np.save(tmp_path / "w.npy", np.ones((3, 3)))
    assert main(["conv", str(tmp_path / "x.npy"), str(tmp_path / "w.npy"), "y"]) == 2
    assert "is not a readable .npy file" in capsys.readouterr().err


def test_out_of_memory_is_an_error_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def conv2d(*args: object, **kwargs: object) -> None:
        raise MemoryError("Unable to allocate 7.28 TiB for an array with shape (1000000, 1000000)")

    monkeypatch.setattr(dilconv, "conv2d", conv2d)
    np.save(tmp_path / "x.npy", np.ones((4, 4)))
    argv = ["conv", str(tmp_path / "x.npy"), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "dilconv conv: error: out of memory: Unable to allocate 7.28 TiB for an array with "
        "shape (1000000, 1000000)\n"
    )


def test_conv_says_the_file_it_wrote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "x.npy", np.ones((4, 4)))
    np.save(tmp_path / "w.npy", np.ones((3, 3)))
    argv = ["conv", str(tmp_path / "x.npy"), str(tmp_path / "w.npy"), str(tmp_path / "outnoext")]
    assert main(argv) == 0
    written = tmp_path / "outnoext.npy"
    assert capsys.readouterr().out == f"{written}: float64 (2, 2)\n"
    np.testing.assert_array_equal(np.load(written), np.full((2, 2), 9.0))
    assert not (tmp_path / "outnoext").exists()


def test_figures_list_needs_no_folder(capsys: pytest.CaptureFixture[str]) -> None:
    from dilconv.viz import FIGURES

    assert main(["figures", "--list"]) == 0
    names = [line.split(":")[0] for line in capsys.readouterr().out.splitlines()]
    assert names == list(FIGURES)
    assert main(["figures"]) == 2
    assert "--out FOLDER is needed" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["apply", "verify", "bench"])
def test_long_running_commands_take_the_same_report_options(command: str) -> None:
    parser = build_parser()
    positional = ["in.zarr", "out.zarr", "--kernel", "k.npy"] if command == "apply" else []
    base = [command, *positional]
    assert parser.parse_args(base).json is None
    assert parser.parse_args(base).no_progress is False
    args = parser.parse_args([*base, "--no-progress", "--json"])
    assert (args.no_progress, args.json) == (True, "-")
    assert parser.parse_args([*base, "--json", "r.json"]).json == "r.json"


def test_verify_json_to_stdout_and_to_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["verify", "--count", "3", "--ops", "conv2d", "--peers", "scipy", "--no-progress"]
    assert main([*argv, "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["count"] == 3  # nothing but the JSON on stdout
    assert captured.err == ""  # and no progress bar
    assert main([*argv, "--json", str(tmp_path / "v.json")]) == 0
    out = capsys.readouterr().out
    assert "dilconv verify: 3 cases" in out  # the table as well
    assert f"wrote {tmp_path / 'v.json'}" in out
    assert json.loads((tmp_path / "v.json").read_text())["ok"] is True


def test_bench_json_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "--quick", "--cases", "wave", "--methods", "im2col", "--peers", "scipy"]
    assert main([*argv, "--repeats", "1", "--settle", "0", "--no-progress", "--json"]) == 0
    captured = capsys.readouterr()
    record = json.loads(captured.out)
    assert [r["case"] for r in record["rows"]] == ["wave"]
    assert "it/s" not in captured.err

"""``dilconv figures``: every file written, non-blank, of sane size, identical on a rerun."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from dilconv.cli import main
from dilconv.viz import FIGURES, FORMATS, write_figures


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("figures")
    return out, write_figures(out)


def test_every_figure_in_every_format(written: tuple[Path, list[Path]]) -> None:
    out, paths = written
    expected = {f"{name}.{fmt}" for name in FIGURES for fmt in FORMATS}
    assert {p.name for p in paths} == expected
    assert {p.name for p in out.iterdir()} == expected
    names = set(FIGURES)
    assert {"kernel_dilation", "receptive_field_growth", "gridding"} <= names
    assert {"stride_vs_dilation", "tutorial_results", "gradient_transposed"} <= names


@pytest.mark.parametrize("name", list(FIGURES))
def test_png_is_not_blank_and_sane(written: tuple[Path, list[Path]], name: str) -> None:
    import matplotlib.image

    path = written[0] / f"{name}.png"
    assert 10_000 < path.stat().st_size < 2_000_000
    pixels = matplotlib.image.imread(path)
    h, w = pixels.shape[:2]
    assert 200 <= h <= 2500
    assert 300 <= w <= 3000
    rgb = pixels[..., :3]
    ink = (rgb.sum(axis=-1) < 2.4).mean()  # fraction of pixels that are not near-white
    assert 0.01 < ink < 0.9, f"{name}: {ink:.3f} of the pixels are drawn"
    assert len(np.unique(rgb[::3, ::3].reshape(-1, 3), axis=0)) > 8  # more than a flat fill


@pytest.mark.parametrize("name", list(FIGURES))
def test_svg_is_a_drawing(written: tuple[Path, list[Path]], name: str) -> None:
    text = (written[0] / f"{name}.svg").read_text()
    assert text.lstrip().startswith("<?xml")
    assert "<svg" in text
    assert text.count("<path") > 20
    assert 10_000 < len(text) < 5_000_000
    assert "<dc:date>" not in text  # no date: the file is reproducible


def test_rerun_gives_identical_files(written: tuple[Path, list[Path]], tmp_path: Path) -> None:
    again = write_figures(tmp_path, only=["kernel_dilation", "gridding"])
    for path in again:
        first = (written[0] / path.name).read_bytes()
        assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(first).digest(), path


def test_cli_writes_and_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["figures", "--out", str(tmp_path / "f"), "--only", "kernel_dilation",
                 "--format", "svg"]) == 0  # fmt: skip
    assert [p.name for p in (tmp_path / "f").iterdir()] == ["kernel_dilation.svg"]
    assert "kernel_dilation.svg" in capsys.readouterr().out
    assert main(["figures", "--out", str(tmp_path), "--only", "nothing"]) == 2
    assert "unknown figure 'nothing'" in capsys.readouterr().err
    assert main(["figures", "--out", str(tmp_path), "--format", "gif"]) == 2
    assert "formats must be among" in capsys.readouterr().err
    assert main(["figures", "--out", str(tmp_path), "--list"]) == 0
    assert "gridding:" in capsys.readouterr().out

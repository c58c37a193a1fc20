"""``examples/stream_wavenet.py`` runs end to end, shortened, and its streams match."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "stream_wavenet.py"


def test_shortened_example_trains_streams_and_matches(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("stream_wavenet", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = ["--channels", "4", "--repeats", "1", "--steps", "4", "--batch", "2"]
    argv += ["--length", "256", "--seconds", "0.03", "--blocks", "1,16,256"]
    results = module.main(argv)
    assert set(results) == {1, 16, 256}
    for rtf, diff in results.values():
        assert rtf > 0
        assert diff < 1e-5  # float32, 12 layers: rounding only
    out = capsys.readouterr().out
    assert "receptive field 1025 samples, history 4093 values" in out
    assert "step    3  loss" in out
    assert "block  256: real-time factor" in out

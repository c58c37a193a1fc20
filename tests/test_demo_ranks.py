"""``dilconv demo --rank 1`` / ``--rank 3``: the tutorial's experiment on a signal, a volume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dilconv.cli import main
from dilconv.tutorial_nd import dilate, dilconv_route, inputs, numpy_route, scipy_route


@pytest.mark.parametrize("rank", [1, 3])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_dilconv_is_the_tutorials_method_in_every_rank(rank: int, padding: str) -> None:
    x, kernel = inputs(rank, 12, seed=rank)
    for d in (1, 2, 3, 4):
        expected = scipy_route(x, kernel, d, padding)
        assert np.array_equal(dilconv_route(x, kernel, d, padding), expected)
        if rank == 1:
            assert np.array_equal(numpy_route(x, kernel, d, padding), expected)


def test_dilate_puts_zeros_between_taps_on_every_axis() -> None:
    k = np.arange(1, 9).reshape(2, 2, 2)
    big = dilate(k, 3)
    assert big.shape == (4, 4, 4)
    assert np.array_equal(big[::3, ::3, ::3], k)
    assert int(np.count_nonzero(big)) == 8


@pytest.mark.parametrize("rank", [1, 3])
def test_demo_rank_json_every_route_agrees(rank: int, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--rank", str(rank), "--dilations", "1..4", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["agree"] is True
    assert report["rank"] == rank
    assert [d["dilation"] for d in report["dilations"]] == [1, 2, 3, 4]
    for entry in report["dilations"]:
        labels = set(entry["results"]) | set(entry["unavailable"])
        assert f"dilconv.conv{rank}d(flip=True)" in entry["results"]
        assert "signal.convolve(dilated kernel)" in entry["results"]
        assert len(labels) == (6 if rank == 1 else 5)
        assert len(entry["results"]) >= 2
        assert entry["max_difference"] == 0


def test_demo_rank_3_prints_each_route_and_the_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--rank", "3", "--dilations", "1,2"]) == 0
    out = capsys.readouterr().out
    assert "The volume (7x7x7, seed 0)" in out
    assert out.count("verdict: agree") == 2
    assert "dilconv.conv3d(flip=True)  ->  (5, 5, 5)" in out
    assert "dilconv.conv3d(flip=True)  ->  (3, 3, 3)" in out
    assert "Overall: every route agrees at every dilation" in out

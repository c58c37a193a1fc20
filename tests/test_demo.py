"""``dilconv demo``: the tutorial's experiment, the NumPy routes against TensorFlow and PyTorch."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from scipy import signal

import dilconv
from dilconv.cli import main
from dilconv.cli.demo import dilation_range
from dilconv.tutorial import (
    NUMPY_ROUTES,
    PEER_ROUTES,
    flip_check,
    inputs,
    run_experiment,
    tf_conv2d_route,
)
from tests.extras import import_peer

TF_LABELS = ("tf.nn.conv2d(dilations=d, flipped)", "tf.nn.atrous_conv2d(rate=d, flipped)")
TORCH_LABEL = "torch F.conv2d(dilation=d, flipped)"


@pytest.fixture(scope="module")
def tf():  # type: ignore[no-untyped-def]
    return import_peer("tensorflow")


@pytest.fixture(scope="module")
def demo_json(tf) -> dict:  # type: ignore[no-untyped-def, type-arg]
    """``dilconv demo --json`` for dilations 1 to 4, run once."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["demo", "--dilations", "1..4", "--json"]) == 0
    return json.loads(out.getvalue())


def test_demo_numbers_for_dilations_1_to_4_match_tensorflow(tf, demo_json: dict) -> None:  # type: ignore[no-untyped-def, type-arg]
    x = np.array(demo_json["matrix"], dtype=np.float64)
    kernel = np.array(demo_json["kernel"], dtype=np.float64)
    assert [d["dilation"] for d in demo_json["dilations"]] == [1, 2, 3, 4]
    for entry in demo_json["dilations"]:
        d = entry["dilation"]
        # TensorFlow computed here, independently of the demo: the flipped 3x3 kernel,
        # the dilation given to the op, as in the tutorial
        expected = tf.nn.conv2d(
            x[None, :, :, None], kernel[::-1, ::-1, None, None], strides=1, padding="VALID",
            dilations=d,
        ).numpy()[0, :, :, 0]  # fmt: skip
        assert expected.shape == (x.shape[0] - 2 * d, x.shape[1] - 2 * d)
        for label in ("convolve2d(dilate_kernel)", "dilconv.conv2d(flip=True)", *TF_LABELS):
            np.testing.assert_array_equal(np.array(entry["results"][label]), expected)
        np.testing.assert_array_equal(
            np.array(entry["dilated_kernel"]), dilconv.dilate_kernel(kernel, d)
        )
        assert entry["max_difference"] == 0.0
        assert entry["unavailable"] == {}
    assert demo_json["agree"] is True


def test_demo_lists_every_pair_and_pytorch(demo_json: dict) -> None:  # type: ignore[type-arg]
    entry = demo_json["dilations"][0]
    labels = [r.label for r in (*NUMPY_ROUTES, *PEER_ROUTES)]
    assert list(entry["results"]) == labels
    assert len(entry["differences"]) == len(labels) * (len(labels) - 1) // 2
    assert TORCH_LABEL in entry["results"]


def test_flip_check_tensorflow_needs_the_flipped_kernel(tf) -> None:  # type: ignore[no-untyped-def]
    x, kernel = inputs(12, seed=0)
    assert not np.array_equal(kernel, kernel[::-1, ::-1])
    unflipped = flip_check(x, kernel, [1, 2, 3, 4])
    assert all(v > 1 for v in unflipped.values())
    symmetric = kernel + kernel[::-1, ::-1]  # a kernel the flip leaves unchanged
    assert all(v == 0 for v in flip_check(x, symmetric, [1, 2, 3, 4]).values())
    # and the flipped route is exactly the tutorial's true convolution
    for d in (1, 2, 3, 4):
        dk = dilconv.dilate_kernel(kernel, d)
        np.testing.assert_array_equal(tf_conv2d_route(x, kernel, d, "valid"),
                                      signal.convolve2d(x, dk, mode="valid"))  # fmt: skip


def test_demo_prints_the_flip_line_and_a_verdict(tf, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    assert main(["demo", "--dilations", "2", "--padding", "same"]) == 0
    out = capsys.readouterr().out
    assert "Without the flip, tf.nn.conv2d disagrees with convolve2d" in out
    assert "verdict: agree (largest difference 0)" in out
    for label in (*TF_LABELS, TORCH_LABEL):
        assert f"max |convolve2d(dilate_kernel) - {label}| = 0" in out


def test_dilations_1_to_8_run_without_a_tensorflow_error(tf) -> None:  # type: ignore[no-untyped-def]
    found = run_experiment(*inputs(20, seed=1), dilation_range("1..8"), "valid",
                           (*NUMPY_ROUTES, *PEER_ROUTES))  # fmt: skip
    assert [r.dilation for r in found] == list(range(1, 9))
    for r in found:
        assert r.unavailable == {}
        assert set(TF_LABELS) <= set(r.results)
        assert r.max_difference == 0.0


def test_missing_peers_are_reported_and_numpy_still_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    monkeypatch.setitem(sys.modules, "torch", None)
    assert main(["demo", "--dilations", "1..2"]) == 0
    out = capsys.readouterr().out
    assert "tensorflow is not installed: pip install tensorflow-cpu" in out
    assert "torch is not installed: pip install torch==2.13.0" in out
    assert "Flip check skipped: tensorflow is not installed" in out
    assert "max |convolve2d(dilate_kernel) - dilconv.conv2d(flip=True)| = 0" in out
    assert "every route agrees at every dilation" in out

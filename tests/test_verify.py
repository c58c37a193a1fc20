"""``dilconv verify``: the case generator covers the space, the sweep counts honestly, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import dilconv
from dilconv import verify
from dilconv.cli import main
from dilconv.peers import OPS, Case, NotApplicable, PeerRefused, Route
from dilconv.peers._base import peer_errors
from dilconv.verify import OURS, draw_case, generate_cases, run_sweep
from tests.extras import peer_or_missing


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return generate_cases(400, seed=0)


def _pair(v: object) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)  # type: ignore[return-value]


def test_generated_cases_cover_the_argument_space(cases: list[Case]) -> None:
    opts = [c.options for c in cases]
    assert {c.op for c in cases} == set(OPS)
    assert max(max(_pair(o["dilation"])) for o in opts) == 8
    assert any(_pair(o["dilation"])[0] != _pair(o["dilation"])[1] for o in opts)
    assert any(max(_pair(o["stride"])) > 1 and max(_pair(o["dilation"])) > 1 for o in opts)
    paddings = {type(o["padding"]).__name__ if not isinstance(o["padding"], str)
                else o["padding"] for o in opts}  # fmt: skip
    assert {"int", "tuple", "same", "valid"} <= paddings
    assert any(isinstance(o["padding"], tuple) and isinstance(o["padding"][0], tuple)
               and o["padding"][0][0] != o["padding"][0][1] for o in opts)  # fmt: skip
    assert {o["data_format"] for o in opts} == {"NCHW", "NHWC"}
    assert {c.dtype for c in cases} == {np.dtype(np.float32), np.dtype(np.float64)}
    assert {len(c.x_shape) for c in cases} == {2, 3, 4}
    assert max(c.x_shape[0] for c in cases if len(c.x_shape) == 4) > 1
    assert any(o.get("groups", 1) > 1 for o in opts)
    depthwise = [c for c in cases if len(c.x_shape) == 4 and c.options.get("groups", 1) > 1
                 and c.options["groups"] == (c.x_shape[1] if c.options["data_format"] == "NCHW"
                                             else c.x_shape[3])]  # fmt: skip
    assert depthwise
    assert {o.get("padding_mode", "zeros") for o in opts} == {
        "zeros", "reflect", "replicate", "circular", "symmetric"}  # fmt: skip
    assert any(o.get("flip") for o in opts)
    assert any(max(_pair(o.get("output_padding", 0))) > 0 for o in opts)


def test_cases_are_reproducible_and_valid(cases: list[Case]) -> None:
    again = generate_cases(20, seed=0)
    # tiered first calls may serve a case's first call with a stand-in (sums in
    # another order); "wait" runs the model's choice from the first call
    with dilconv.config_context(first_calls="wait"):
        for a, b in zip(cases[:20], again, strict=True):
            assert a.describe() == b.describe()
            np.testing.assert_array_equal(OURS[a.op](a), OURS[b.op](b))
    assert generate_cases(20, seed=1)[0].describe() != again[0].describe()


def _fake(monkeypatch: pytest.MonkeyPatch, compute) -> None:  # type: ignore[no-untyped-def]
    route = Route("fake", "conv2d", "fake.conv2d", compute)
    monkeypatch.setattr(verify, "routes", lambda peer: (route,))
    monkeypatch.setattr(verify, "available", lambda peer: None)


def test_a_wrong_peer_answer_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake(monkeypatch, lambda c: OURS[c.op](c) * (1 + 1e-3))
    rows, missing = run_sweep(generate_cases(4, ops=["conv2d"]), ["fake"], progress=False)
    assert missing == {}
    assert len(rows[0].failures) == 4
    assert "relative error" in rows[0].failures[0]
    assert "MISMATCHES" in verify.format_table(rows, missing)


def test_shape_and_dtype_differences_are_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake(monkeypatch, lambda c: OURS[c.op](c).astype(np.float16))
    rows, _ = run_sweep(generate_cases(2, ops=["conv2d"]), ["fake"], progress=False)
    assert all("dtype" in f for f in rows[0].failures)
    _fake(monkeypatch, lambda c: OURS[c.op](c)[..., :-1])
    rows, _ = run_sweep(generate_cases(2, ops=["conv2d"]), ["fake"], progress=False)
    assert all("shape" in f for f in rows[0].failures)


def test_refusals_and_not_applicable_are_counted_not_failed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def compute(case: Case) -> np.ndarray:
        if case.seed % 2:
            raise NotApplicable("cannot express it")
        with peer_errors():
            raise RuntimeError("stride > 1 with dilation > 1 is not supported. More text")

    _fake(monkeypatch, compute)
    rows, missing = run_sweep(generate_cases(6, ops=["conv2d"]), ["fake"], progress=False)
    row = rows[0]
    assert (row.cases, row.agreed, row.n_refused, row.not_applicable) == (6, 0, 3, 3)
    assert row.refused == {"RuntimeError: stride > 1 with dilation > 1 is not supported.": 3}
    assert row.failures == []
    text = verify.format_table(rows, missing)
    assert "Refused by peer" in text
    assert "no mismatches" in text


def test_adapter_bugs_are_not_taken_for_refusals() -> None:
    with pytest.raises(PeerRefused, match="ValueError: bad"), peer_errors():
        raise ValueError("bad")
    with pytest.raises(AttributeError), peer_errors():
        raise AttributeError("typo in an adapter")


def test_dilconv_raising_on_a_valid_case_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake(monkeypatch, lambda c: OURS[c.op](c))
    case = draw_case("conv2d", 3)

    def broken(c: Case) -> np.ndarray:
        raise ValueError("boom")

    monkeypatch.setitem(OURS, "conv2d", broken)
    rows, _ = run_sweep([case], ["fake"], progress=False)
    assert "dilconv raised ValueError('boom')" in rows[0].failures[0]


@pytest.mark.peers
@pytest.mark.slow
def test_verify_count_200_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "--count", "200", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "no mismatches" in out
    for label in ("F.conv2d", "F.conv_transpose2d", "tf.nn.conv2d", "tf.nn.atrous_conv2d",
                  "tf.nn.conv2d_transpose", "tf.nn.atrous_conv2d_transpose", "GradientTape",
                  "lax.conv_general_dilated", "signal.convolve2d"):  # fmt: skip
        assert label in out
    assert "not installed" not in out


def test_json_output_and_peer_selection(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["verify", "--count", "6", "--seed", "2", "--ops", "conv2d",
               "--peers", "scipy", "--json"])  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert report["ok"] is True
    assert (report["count"], report["seed"]) == (6, 2)
    assert [(r["peer"], r["op"], r["cases"]) for r in report["rows"]] == [("scipy", "conv2d", 6)]


def test_missing_peer_is_reported_with_its_install_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "scipy.signal", None)
    rc = main(["verify", "--count", "2", "--ops", "conv2d", "--peers", "scipy"])
    out = capsys.readouterr().out
    assert rc == 2
    assert "scipy is not installed: pip install scipy" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ops", "conv4d"], "--ops must be a comma-separated list"),
        (["--peers", "mxnet"], "--peers must be a comma-separated list"),
    ],
)
def test_bad_arguments_are_refused(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_count_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "--count", "0"]) == 2
    assert "--count must be >= 1, got 0" in capsys.readouterr().err


def test_progress_goes_to_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _fake(monkeypatch, lambda c: OURS[c.op](c))
    run_sweep(generate_cases(3, ops=["conv2d"]), ["fake"], progress=True)
    captured = capsys.readouterr()
    assert "dilconv verify" in captured.err
    assert "3/3" in captured.err
    assert captured.out == ""


@pytest.mark.peers
def test_verify_runs_xla_without_the_pass_that_aborts_on_a_small_transpose() -> None:
    """JAX 0.10's XLA aborts the process on this transposed convolution unless the
    algebraic simplifier is off, as ``dilconv verify`` arranges; then JAX agrees."""
    peer_or_missing("jax")
    code = """
import numpy as np
from dilconv.cli.verify import _avoid_xla_abort
_avoid_xla_abort()
from dilconv.peers import Case
from dilconv.peers import jax as peer
from dilconv.verify import OURS
rng = np.random.default_rng(0)
x = rng.standard_normal((1, 3, 2, 3)).astype(np.float32)
w = rng.standard_normal((2, 4, 1, 3)).astype(np.float32)
options = {"stride": 2, "padding": 1, "data_format": "NHWC"}
case = Case("conv2d_transpose", options, x.shape, w.shape, x=x, w=w)
print(float(np.abs(peer.conv2d_transpose(case) - OURS[case.op](case)).max()))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "XLA_FLAGS": ""})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout) < 1e-5


def test_xla_workaround_keeps_other_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    from dilconv.cli import verify as cli_verify

    monkeypatch.delitem(sys.modules, "jax", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    cli_verify._avoid_xla_abort()
    assert cli_verify.XLA_WORKAROUND in os.environ["XLA_FLAGS"]
    assert "--xla_force_host_platform_device_count=2" in os.environ["XLA_FLAGS"]

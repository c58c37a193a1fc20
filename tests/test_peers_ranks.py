"""Parity in 1-D and 3-D with PyTorch, TensorFlow (Keras's causal Conv1D included), JAX,
NumPy and SciPy: the sweep's cases of every new operation on every route, and the
causal rule against Keras directly."""

from __future__ import annotations

import json

import numpy as np
import pytest

import dilconv
from dilconv.cli import main
from dilconv.peers import PEERS, NotApplicable, PeerRefused, routes
from dilconv.peers import Case as PeerCase
from dilconv.verify import OURS, draw_case, magnitude
from tests.extras import import_peer, peer_or_missing
from tests.tolerance import assert_close

pytestmark = pytest.mark.peers

#: What each peer is known to refuse in 1-D and 3-D (a substring of its message).
KNOWN_REFUSALS = {
    "torch": (),
    "tensorflow": (
        "do not yet support dilation rates larger than 1",
        "does not yet support dilation rates larger than 1",
        "only supports dilated rates of 1",
        "Gradients for grouped convolutions are not supported on CPU",
        "`strides > 1` not supported in conjunction with `dilation_rate > 1`",
        "AttributeError in TensorFlow's gradient function",
    ),
    "jax": (),
    "scipy": (),
}

NEW_OPS = [
    "conv1d",
    "conv1d_transpose",
    "conv1d_grad_input",
    "conv1d_grad_weight",
    "conv3d",
    "conv3d_transpose",
    "conv3d_grad_input",
    "conv3d_grad_weight",
]


@pytest.fixture(scope="module", params=PEERS)
def peer(request: pytest.FixtureRequest) -> str:
    return peer_or_missing(str(request.param))


def compare_routes(peer: str, case: PeerCase) -> int:
    """Run ``case`` on dilconv and on each route of ``peer``; return how many compared."""
    ours, scale = OURS[case.op](case), magnitude(case)
    kind = "values" if case.op in ("conv1d", "conv3d") else "gradients"
    compared = 0
    for route in routes(peer):
        if route.op != case.op:
            continue
        try:
            theirs = route.compute(case)
        except NotApplicable:
            continue
        except PeerRefused as err:
            if not any(known in str(err) for known in KNOWN_REFUSALS[peer]):
                pytest.fail(f"{route.label} refused {case.describe()} unexpectedly: {err}")
            continue
        assert_close(
            ours,
            theirs,
            magnitude=scale + scale.max(initial=0.0),
            kind=kind,
            context=f"dilconv vs {route.label}: {case.describe()}",
        )
        compared += 1
    return compared


@pytest.mark.parametrize("op", NEW_OPS)
def test_new_operations_match_peer(peer: str, op: str) -> None:
    """Four sweep cases of each operation on every route of the peer (JAX computes every
    case, so a silent all-refused route cannot pass there; ``dilconv verify --ops``
    runs as many as asked)."""
    compared = sum(compare_routes(peer, draw_case(op, seed)) for seed in range(4))
    if peer == "jax":
        assert compared == 4
    if peer == "torch" and not op.endswith("transpose"):
        assert compared >= 3  # F.pad has no "symmetric" mode


def test_same_padding_past_the_kernel_span_matches_tensorflow() -> None:
    """A stride that steps past the kernel's span (depth 3, kernel 1, stride 3: the
    sweep's seed 788). TensorFlow's CPU Conv3D given "SAME" crops there, against its own
    rule, so its routes get the rule's explicit pads; with them every route agrees."""
    peer_or_missing("tensorflow")
    case = draw_case("conv3d", 788)
    assert case.options["stride"] == (3, 3, 1)
    assert case.options["padding"] == "same"
    assert compare_routes("tensorflow", case) == 2


@pytest.fixture(scope="module")
def keras() -> object:
    return import_peer("tensorflow").keras


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("dilation", [1, 2, 4])
def test_causal_is_keras_conv1d_causal(keras: object, stride: int, dilation: int) -> None:
    """``padding="causal"`` against Keras's ``Conv1D(padding="causal")``, whose only
    refusal is stride > 1 with dilation > 1 (dilconv computes that by the same rule)."""
    rng = np.random.default_rng(stride * 10 + dilation)
    x, w = rng.standard_normal((2, 23, 3)), rng.standard_normal((3, 3, 4))
    b = rng.standard_normal(4)
    options = {"strides": stride, "padding": "causal", "dilation_rate": dilation}
    conv1d_layer = keras.layers.Conv1D  # type: ignore[attr-defined]
    if stride > 1 and dilation > 1:
        with pytest.raises(ValueError, match="not supported in conjunction with"):
            conv1d_layer(4, 3, dtype="float64", **options)
        return
    layer = conv1d_layer(4, 3, dtype="float64", **options)
    layer.build((None, 23, 3))
    layer.set_weights([w, b])
    expected = np.asarray(layer(x))
    ours = dilconv.conv1d(x, w, b, stride=stride, dilation=dilation, padding="causal",
                          data_format="NWC")  # fmt: skip
    assert ours.shape == (2, -(-23 // stride), 4)
    assert_close(ours, expected)


def test_verify_ops_sweeps_the_new_operations(capsys: pytest.CaptureFixture[str]) -> None:
    """``dilconv verify --ops conv1d,conv3d_grad_weight`` draws those operations only and
    reports every comparison agreeing."""
    peer_or_missing("jax")
    argv = ["verify", "--ops", "conv1d,conv3d_grad_weight", "--count", "6", "--peers", "jax"]
    assert main([*argv, "--json", "--no-progress"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["ok"] is True
    assert {(r["op"], r["agree"]) for r in record["rows"]} == {
        ("conv1d", 3),
        ("conv3d_grad_weight", 3),
    }

"""Parity with the real frameworks, in the style of tinygrad's ``helper_test_op``.

One call (a hypothesis-drawn spec) is run on dilconv and on every route of a
peer, compared by shape, then dtype, then values, then the gradients of the same
spec. A case a peer refuses must be refused with one of the messages listed in
``KNOWN_REFUSALS`` (a surprise error fails the test, so an adapter bug is never
taken for a refusal).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dilconv
from dilconv.peers import PEERS, Case, NotApplicable, PeerRefused, available, load, routes
from dilconv.tutorial import RouteUnavailable
from dilconv.verify import OURS, draw_case, magnitude
from tests.extras import peer_or_missing
from tests.strategies import conv_cases
from tests.tolerance import assert_close

pytestmark = pytest.mark.peers

#: What each peer is known to refuse (a substring of its message).
KNOWN_REFUSALS = {
    "torch": ("padding='same' is not supported for strided convolutions",),
    "tensorflow": (
        "do not yet support dilation rates larger than 1",
        "Gradients for grouped convolutions are not supported on CPU",
    ),
    "jax": (),
    "scipy": (),
}


def _peer_fixture(name: str):  # type: ignore[no-untyped-def]
    @pytest.fixture(scope="module")
    def fixture() -> str:
        return peer_or_missing(name)

    return fixture


torch_peer = _peer_fixture("torch")
tensorflow_peer = _peer_fixture("tensorflow")
jax_peer = _peer_fixture("jax")
scipy_peer = _peer_fixture("scipy")


@pytest.fixture(scope="module", params=PEERS)
def peer(request: pytest.FixtureRequest) -> str:
    """Each installed peer, imported once per module."""
    return str(request.getfixturevalue(f"{request.param}_peer"))


def helper_test_op(peer: str, case: Case) -> int:
    """Run ``case`` on dilconv and on each route of ``peer``; return how many compared.

    Shape, then dtype, then values (``assert_close``), against the magnitude bound
    of the same operation on absolute values.
    """
    ours, scale = OURS[case.op](case), magnitude(case)
    kind = "values" if case.op in ("conv2d", "conv2d_transpose") else "gradients"
    compared = 0
    for route in routes(peer):
        if route.op != case.op:
            continue
        refusal = ""
        try:
            theirs = route.compute(case)
        except NotApplicable:
            continue
        except PeerRefused as err:
            refusal = str(err)
        if refusal:
            assert any(known in refusal for known in KNOWN_REFUSALS[peer]), (
                f"{route.label} refused {case.describe()} unexpectedly: {refusal}"
            )
            continue
        assert_close(
            ours,
            theirs,
            magnitude=scale + scale.max(initial=0.0),  # FFT methods round at the global scale
            kind=kind,
            context=f"dilconv vs {route.label}: {case.describe()}",
        )
        compared += 1
    return compared


def with_gradients(case: Case, seed: int) -> list[Case]:
    """The forward case, then the two gradient cases of the same spec."""
    assert case.x is not None
    assert case.w is not None
    out = dilconv.conv2d(case.x, case.w, **case.options)
    grad_out = np.random.default_rng(seed).standard_normal(out.shape).astype(out.dtype)
    return [
        case,
        Case("conv2d_grad_input", case.options, case.x_shape, case.w_shape, w=case.w,
             grad_out=grad_out, seed=seed),
        Case("conv2d_grad_weight", case.options, case.x_shape, case.w_shape, x=case.x,
             grad_out=grad_out, seed=seed),
    ]  # fmt: skip


@settings(max_examples=25)
@given(conv_cases(dtypes=(np.float32, np.float64)), st.integers(0, 2**32 - 1))
def test_conv2d_and_gradients_match_peer(peer: str, drawn, seed: int) -> None:  # type: ignore[no-untyped-def]
    case = Case("conv2d", drawn.options, drawn.x.shape, drawn.w.shape, x=drawn.x, w=drawn.w,
                bias=drawn.bias, seed=seed)  # fmt: skip
    for c in with_gradients(case, seed):
        helper_test_op(peer, c)


@pytest.mark.parametrize("peer_name", ["torch", "tensorflow", "jax"])
@settings(max_examples=20)
@given(seed=st.integers(0, 2**32 - 1))
def test_conv2d_transpose_matches_peer(peer_name: str, seed: int, request) -> None:  # type: ignore[no-untyped-def]
    peer = request.getfixturevalue(f"{peer_name}_peer")
    helper_test_op(peer, draw_case("conv2d_transpose", seed))


@pytest.mark.parametrize("peer_name", ["torch", "tensorflow", "jax"])
@pytest.mark.parametrize("data_format", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_per_axis_dilation_every_route_compares(
    peer_name: str, data_format: str, dtype: type, request: pytest.FixtureRequest
) -> None:
    """Dilation (8, 5), stride 1 and SAME: every peer computes it (no refusal, no skip)."""
    peer = request.getfixturevalue(f"{peer_name}_peer")
    rng = np.random.default_rng(3)
    x_shape = (2, 4, 20, 17) if data_format == "NCHW" else (2, 20, 17, 4)
    w_shape = (6, 2, 3, 3) if data_format == "NCHW" else (3, 3, 2, 6)
    options = {"padding": "same", "dilation": (8, 5), "groups": 2, "data_format": data_format}
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    assert helper_test_op(peer, Case("conv2d", options, x_shape, w_shape, x=x, w=w)) >= 1


@pytest.mark.parametrize("rate", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_atrous_drop_ins_match_tensorflow(tensorflow_peer: str, rate: int, padding: str) -> None:
    tf = load("tensorflow").framework()
    rng = np.random.default_rng(rate)
    value = rng.standard_normal((2, 19, 21, 3))
    filters = rng.standard_normal((3, 2, 3, 4))
    expected = tf.nn.atrous_conv2d(value, filters, rate=rate, padding=padding).numpy()
    magnitude = dilconv.atrous_conv2d(abs(value), abs(filters), rate, padding)
    assert_close(
        dilconv.atrous_conv2d(value, filters, rate, padding), expected, magnitude=magnitude
    )
    y = rng.standard_normal(expected.shape)
    out_shape = list(value.shape)
    back = tf.nn.atrous_conv2d_transpose(y, filters, out_shape, rate, padding)
    ours = dilconv.atrous_conv2d_transpose(y, filters, out_shape, rate, padding)
    assert_close(ours, back.numpy(), kind="gradients",
                 magnitude=dilconv.atrous_conv2d_transpose(
                     abs(y), abs(filters), out_shape, rate, padding))  # fmt: skip


def test_tensorflow_cpu_refusals_are_reported_as_refusals(tensorflow_peer: str) -> None:
    """TensorFlow's CPU gradient refuses dilation > 1: a refusal with its message, no failure."""
    options = {"dilation": 2, "padding": "valid", "data_format": "NHWC"}
    case = Case("conv2d_grad_input", options, (1, 9, 9, 2), (3, 3, 2, 3),
                w=np.ones((3, 3, 2, 3)), grad_out=np.ones((1, 5, 5, 3)))  # fmt: skip
    route = next(r for r in routes("tensorflow") if r.label == "GradientTape(tf.nn.conv2d)")
    with pytest.raises(PeerRefused, match="dilation rates larger than 1"):
        route.compute(case)
    assert helper_test_op("tensorflow", case) == 1  # the atrous route still computes it


@pytest.mark.parametrize("peer_name", PEERS)
def test_missing_peer_names_its_install_command(
    peer_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = {"scipy": "scipy.signal"}.get(peer_name, peer_name)
    monkeypatch.setitem(sys.modules, module, None)
    route = routes(peer_name)[0]
    with pytest.raises(RouteUnavailable, match=rf"{peer_name} is not installed: pip install "):
        route.compute(draw_case("conv2d", 1))
    assert "pip install" in str(available(peer_name))

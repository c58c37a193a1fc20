"""nn's WaveNet layers (Tanh, Sigmoid, Residual, Gated) and streaming trained stacks."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dilconv import nn
from dilconv._stream_stack import compiled_refusal, plan
from tests.test_nn import check_one_step


def causal(c: int, o: int, k: int, d: int, rng: Any, dtype: Any = np.float64, **kw: Any) -> Any:
    """A causal 1-D convolution as a one-row Conv2d: ``d * (k - 1)`` zeros on the left."""
    pad = ((0, 0), (d * (k - 1), 0))
    return nn.Conv2d(c, o, (1, k), dilation=(1, d), padding=pad, rng=rng, dtype=dtype, **kw)


def forward_1d(net: nn.Module, x: np.ndarray) -> np.ndarray:
    """The stack's batch forward on ``(N, C, L)``, as ``(N, C, 1, L)``."""
    y: np.ndarray = net.forward(x[:, :, None, :])[:, :, 0, :]
    return y


def stream_blocks(s: Any, x: np.ndarray, sizes: list[int]) -> np.ndarray:
    outs, t = [s.push(x[:, :, :0])], 0
    while t < x.shape[2]:
        for n in sizes:
            outs.append(s.push(x[:, :, t : t + n]))
            t += n
    return np.concatenate(outs, axis=2)


def assert_stack_close(got: np.ndarray, want: np.ndarray, rtol: float, context: str = "") -> None:
    """Shape, dtype, then values within ``rtol`` of the largest output (a stack's
    rounding errors are relative to the sizes of the sums, not of each output)."""
    assert got.shape == want.shape, context
    assert got.dtype == want.dtype, context
    scale = max(1.0, float(np.abs(want).max(initial=0)))
    err = float(np.abs(got.astype(np.float64) - want).max(initial=0))
    assert err <= rtol * scale, f"max difference {err:.3g} > {rtol} x {scale:.3g} {context}"


# -- the layers -------------------------------------------------------------------------


def test_one_step_of_each_new_layer() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 1, 9))
    check_one_step(nn.Tanh(), x, seed=1)
    check_one_step(nn.Sigmoid(), x, seed=2)
    check_one_step(nn.Residual(causal(3, 3, 2, 2, 3)), x, seed=4)
    check_one_step(nn.Gated(causal(3, 2, 2, 1, 5), causal(3, 2, 3, 2, 6)), x, seed=7)
    blocks = [
        nn.Residual(
            nn.Sequential(
                nn.Gated(causal(3, 3, 2, 4, 8 + k), causal(3, 3, 2, 4, 9 + k)),
                causal(3, 3, 1, 1, 10 + k),
            )
        )
        for k in (0, 3)
    ]
    check_one_step(nn.Sequential(blocks[0], nn.Tanh(), blocks[1]), x, seed=11, samples=6)


def test_values_and_dtypes() -> None:
    x = np.array([-1000.0, -1.0, 0.0, 2.0, 1000.0], np.float32)
    s = nn.Sigmoid()(x)  # no overflow warning (warnings are errors)
    np.testing.assert_allclose(s, [0, 1 / (1 + np.e), 0.5, 1 / (1 + np.exp(-2)), 1], rtol=1e-6)
    assert s.dtype == np.float32
    assert nn.Tanh()(x).dtype == np.float32
    np.testing.assert_array_equal(nn.Residual(nn.Tanh())(x), x + np.tanh(x))
    np.testing.assert_allclose(nn.Gated(nn.ReLU(), nn.Tanh())(x), np.tanh(np.maximum(x, 0))
                               * nn.Sigmoid()(np.tanh(x)), rtol=1e-6)  # fmt: skip
    gated = nn.Gated(causal(1, 2, 2, 1, 0), causal(1, 2, 2, 1, 1))
    assert len(gated.parameters()) == 4
    assert len(nn.Residual(gated).parameters()) == 4
    assert repr(nn.Residual(nn.Tanh())) == "Residual(Tanh())"


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: nn.Residual("tanh"), TypeError, r"inner must be a dilconv.nn.Module"),
        (lambda: nn.Gated(nn.Tanh(), 3), TypeError, r"b must be a dilconv.nn.Module"),
        (
            lambda: nn.Residual(causal(2, 3, 1, 1, 0))(np.ones((1, 2, 1, 4))),
            ValueError,
            r"Residual needs inner's output in the shape of its input \(1, 2, 1, 4\), got "
            r"\(1, 3, 1, 4\)",
        ),
        (
            lambda: nn.Gated(causal(2, 3, 1, 1, 0), causal(2, 2, 1, 1, 0))(np.ones((1, 2, 1, 4))),
            ValueError,
            r"Gated needs a and b to give one shape",
        ),
        (lambda: nn.Tanh().backward(np.ones(2)), RuntimeError, r"Tanh.backward called before"),
        (lambda: nn.Sigmoid().backward(np.ones(2)), RuntimeError, r"Sigmoid.backward called"),
        (lambda: nn.Gated(nn.Tanh(), nn.Tanh()).backward(1), RuntimeError, r"Gated.backward"),
    ],
)
def test_bad_layers(call: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()


# -- streaming stacks -------------------------------------------------------------------


@st.composite
def stacks(draw: st.DrawFn, strided: bool = False) -> tuple[nn.Module, int]:
    """A random causal stack of ``C`` channels (float64), and ``C``."""
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    c = draw(st.integers(1, 5))
    layers: list[nn.Module] = []
    for _ in range(draw(st.integers(1, 4))):
        k, d = draw(st.integers(1, 3)), draw(st.integers(1, 6))
        kind = draw(st.sampled_from(["conv", "residual", "gated", "act"]))
        bias = draw(st.booleans())
        if kind == "conv":
            layers.append(causal(c, c, k, d, rng, bias=bias))
        elif kind == "residual":
            act = draw(st.sampled_from([nn.ReLU, nn.Tanh, nn.Sigmoid]))()
            layers.append(nn.Residual(nn.Sequential(causal(c, c, k, d, rng, bias=bias), act)))
        elif kind == "gated":
            g = draw(st.sampled_from([g for g in (1, c) if c % g == 0]))
            a = causal(c, c, k, d, rng, groups=g)
            layers.append(nn.Gated(a, causal(c, c, k, d, rng, groups=g)))
        else:
            layers.append(draw(st.sampled_from([nn.ReLU, nn.Tanh, nn.Sigmoid]))())
    if strided:
        s = draw(st.integers(2, 3))
        pad = ((0, 0), (draw(st.integers(1, 3)), 0))
        layers.append(
            nn.Conv2d(c, 2, (1, pad[1][0] + 1), stride=(1, s), padding=pad, rng=rng,
                      dtype=np.float64)
        )  # fmt: skip
        layers.append(nn.Tanh())
    return nn.Sequential(causal(c, c, 1, 1, rng), *layers), c


sizes = st.one_of(st.just([1]), st.just([500]), st.lists(st.integers(0, 12), min_size=1,
                                                          max_size=5).filter(any))  # fmt: skip


@pytest.mark.parametrize("engine", ["layers", "compiled"])
@given(stack=stacks(), cuts=sizes, batch=st.integers(1, 3))
def test_stream_equals_forward(engine: str, stack: tuple[nn.Module, int], cuts: list[int],
                               batch: int) -> None:  # fmt: skip
    net, c = stack
    x = np.random.default_rng(batch).standard_normal((batch, c, 37))
    s = net.stream(batch=batch, engine=engine)
    assert s.engine == engine
    assert_stack_close(stream_blocks(s, x, cuts), forward_1d(net, x), 1e-12, repr(net))


@given(stack=stacks(strided=True), cuts=sizes)
def test_strided_stack_streams_layer_by_layer(
    stack: tuple[nn.Module, int], cuts: list[int]
) -> None:
    net, c = stack
    x = np.random.default_rng(0).standard_normal((2, c, 37))
    s = net.stream(batch=2)
    assert s.engine == "layers"
    assert_stack_close(stream_blocks(s, x, cuts), forward_1d(net, x), 1e-12, repr(net))


def wavenet(channels: int = 8, dtype: Any = np.float32, seed: int = 0) -> nn.Sequential:
    rng = np.random.default_rng(seed)
    return nn.Sequential(*[
        nn.Residual(nn.Sequential(causal(channels, channels, 2, d, rng, dtype), nn.Tanh()))
        for d in (1, 2, 4, 8, 16, 32) * 2
    ])  # fmt: skip


@pytest.mark.parametrize("engine", ["layers", "compiled"])
def test_float32_wavenet_within_rounding(engine: str) -> None:
    net = wavenet()
    x = np.random.default_rng(1).standard_normal((2, 8, 300)).astype(np.float32)
    s = net.stream(batch=2, engine=engine)
    assert s.receptive_field == 1 + 2 * 63
    assert s.history_values == 2 * 63 * 8
    assert_stack_close(stream_blocks(s, x, [1, 16, 0, 7]), forward_1d(net, x), 2e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_long_blocks_take_matrix_products(dtype: Any) -> None:
    """Blocks of ``PRODUCT_SAMPLES`` samples or more run as matrix products: rings read
    across their wrap (dilations past the block), channel counts that change between
    layers (registers wider than a layer), and a grouped layer that keeps the dot
    products; float32's vectorised tanh and sigmoid."""
    from dilconv import _stream_kernel

    rng = np.random.default_rng(5)
    net = nn.Sequential(
        causal(3, 8, 3, 1, rng, dtype),
        nn.Residual(nn.Sequential(causal(8, 8, 3, 70, rng, dtype), nn.Tanh())),
        nn.Gated(causal(8, 6, 2, 33, rng, dtype), causal(8, 6, 2, 5, rng, dtype, groups=2)),
        nn.Sigmoid(),
        causal(6, 4, 2, 129, rng, dtype, bias=False),
    )
    x = (3 * rng.standard_normal((2, 3, 1500))).astype(dtype)
    s = net.stream(batch=2, engine="compiled")
    sizes = [50, 33, 200, 1, 64, 31, _stream_kernel.PRODUCT_SAMPLES]
    assert min(sizes) < _stream_kernel.PRODUCT_SAMPLES <= max(sizes)
    rtol = 2e-5 if dtype == np.float32 else 1e-12
    assert_stack_close(stream_blocks(s, x, sizes), forward_1d(net, x), rtol, repr(net))


def test_streams_run_side_by_side_in_threads() -> None:
    """Streams of one stack pushed from four threads at once (the compiled step
    releases the GIL; its matrix products call BLAS from each thread)."""
    from concurrent.futures import ThreadPoolExecutor

    net = wavenet(channels=16, dtype=np.float32)
    xs = [np.random.default_rng(k).standard_normal((2, 16, 700)).astype(np.float32)
          for k in range(4)]  # fmt: skip
    wants = [forward_1d(net, x) for x in xs]

    def run(k: int) -> np.ndarray:
        return stream_blocks(net.stream(batch=2, engine="compiled"), xs[k], [64, 7, 100])

    with ThreadPoolExecutor(4) as threads:
        for got, want in zip(threads.map(run, range(4)), wants, strict=True):
            assert_stack_close(got, want, 2e-5)


def test_float32_activations_keep_nan_and_infinities() -> None:
    identity = causal(3, 3, 1, 1, 0, np.float32, bias=False)
    identity.weight[...] = np.eye(3, dtype=np.float32)[:, :, None, None]
    net = nn.Sequential(identity, nn.Tanh(), nn.Sigmoid(), nn.Residual(nn.Tanh()))
    x = np.linspace(-40, 40, 3 * 2 * 100, dtype=np.float32).reshape(2, 3, 100)
    x[0, 1, 7], x[1, 2, 50], x[1, 0, 90] = np.nan, np.inf, -np.inf
    s = net.stream(batch=2, engine="compiled")
    got, want = stream_blocks(s, x, [64, 36]), forward_1d(net, x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = ~np.isnan(want)
    assert np.abs(got[finite] - want[finite]).max() <= 4e-7


@pytest.mark.parametrize("engine", ["layers", "compiled"])
def test_stream_shares_the_weights(engine: str) -> None:
    net = wavenet(dtype=np.float64)
    x = np.random.default_rng(2).standard_normal((1, 8, 40))
    s = net.stream(engine=engine)
    before = s.push(x)
    # one SGD step changes every parameter in place; the stream sees the new weights
    net.zero_grad()
    y = forward_1d(net, x)
    net.backward(np.ones_like(y)[:, :, None, :])
    nn.SGD(net.parameters(), lr=0.1).step()
    s.reset()
    after = s.push(x)
    assert not np.allclose(before, after)
    assert_stack_close(after, forward_1d(net, x), 1e-12)


@pytest.mark.parametrize(("saver", "loader"), [("compiled", "layers"), ("layers", "compiled")])
def test_state_moves_between_engines_and_processes(saver: str, loader: str) -> None:
    net = wavenet(dtype=np.float64)
    x = np.random.default_rng(3).standard_normal((2, 8, 90))
    first = net.stream(batch=2, engine=saver)
    head = stream_blocks(first, x[:, :, :41], [5, 3])
    buffer = io.BytesIO()
    np.savez(buffer, **first.state)
    buffer.seek(0)
    second = net.stream(batch=2, engine=loader)
    with np.load(buffer) as saved:
        second.load_state(saved)
    tail = stream_blocks(second, x[:, :, 41:], [7])
    assert_stack_close(np.concatenate([head, tail], 2), forward_1d(net, x), 1e-12)
    assert set(first.state) == {f"{kind}.{k}" for kind in ("history", "phase") for k in range(12)}


@pytest.mark.parametrize("engine", ["layers", "compiled"])
def test_reset_one_stream(engine: str) -> None:
    net = wavenet(dtype=np.float64)
    x = np.random.default_rng(4).standard_normal((3, 8, 60))
    s = net.stream(batch=3, engine=engine)
    head = s.push(x[:, :, :25])
    s.reset(1)
    tail = s.push(x[:, :, 25:])
    want = forward_1d(net, x)
    assert_stack_close(np.concatenate([head, tail], 2)[[0, 2]], want[[0, 2]], 1e-12)
    assert_stack_close(tail[1:2], forward_1d(net, x[1:2, :, 25:]), 1e-12)


def test_stream_of_one_layer_and_of_blocks() -> None:
    conv = causal(2, 3, 3, 2, 0)
    x = np.random.default_rng(5).standard_normal((1, 2, 20))
    assert_stack_close(stream_blocks(conv.stream(), x, [3]), forward_1d(conv, x), 1e-12)
    gated = nn.Gated(causal(2, 2, 2, 1, 1), causal(2, 2, 2, 3, 2))
    s = gated.stream()
    assert s.receptive_field == 4
    assert_stack_close(stream_blocks(s, x, [1]), forward_1d(gated, x), 1e-12)


def test_refusals_name_the_layer() -> None:
    rng = np.random.default_rng(6)
    same = nn.Conv2d(2, 2, (1, 3), padding=(0, 1), rng=rng)
    with pytest.raises(ValueError, match=r"stack\[1\] \(Conv2d\(.*\)\) cannot be streamed: its "
                       r"padding is \(\(0, 0\), \(1, 1\)\); a causal layer pads"):  # fmt: skip
        nn.Sequential(causal(2, 2, 2, 1, rng), same).stream()
    with pytest.raises(ValueError, match=r"stack\[0\]\.inner\[0\] .* one kernel row"):
        nn.Sequential(nn.Residual(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1)))).stream()
    with pytest.raises(ValueError, match=r"stack\[0\] \(Conv2d.*\) .* padding_mode is 'reflect'"):
        nn.Sequential(causal(2, 2, 2, 1, rng, padding_mode="reflect")).stream()
    with pytest.raises(ValueError, match=r"stack\[1\] \(ContextModule|stack\[1\]\[0\]"):
        nn.Sequential(nn.ReLU(), nn.ContextModule(2)).stream()

    class Pool(nn.Module):
        def __repr__(self) -> str:
            return "Pool()"

    with pytest.raises(ValueError, match=r"stack\.b \(Pool\(\)\) cannot be streamed: it is not a"):
        nn.Gated(nn.Tanh(), Pool()).stream()
    with pytest.raises(ValueError, match=r"stack\[1\] expects 3 input channels, but gets 2"):
        nn.Sequential(causal(2, 2, 1, 1, rng), causal(3, 3, 1, 1, rng)).stream()
    with pytest.raises(ValueError, match=r"Residual's inner layers must keep channels"):
        nn.Residual(causal(2, 3, 1, 1, rng)).stream()
    with pytest.raises(ValueError, match=r"the stack has no convolution"):
        nn.Sequential(nn.Tanh()).stream()
    strided = nn.Sequential(nn.Conv2d(1, 1, (1, 2), stride=(1, 2), padding=((0, 0), (1, 0))))
    with pytest.raises(ValueError, match=r"engine='compiled' cannot run this stack: it runs "
                       r"stride 1 only, and stack\[0\] has stride > 1"):  # fmt: skip
        strided.stream(engine="compiled")
    with pytest.raises(ValueError, match=r"engine must be one of"):
        causal(1, 1, 2, 1, rng).stream(engine="gpu")
    s = causal(2, 2, 2, 1, rng).stream(batch=2)
    with pytest.raises(ValueError, match=r"block must have shape \(batch=2, C=2, n\), got"):
        s.push(np.ones((1, 2, 3)))
    with pytest.raises(TypeError, match=r"block has dtype complex128"):
        s.push(np.ones((2, 2, 3), complex))
    with pytest.raises(ValueError, match=r"state has no 'history.0'"):
        s.load_state({})
    with pytest.raises(ValueError, match=r"index must be < batch=2, got 2"):
        s.reset(2)


def test_compiled_engine_conditions() -> None:
    node = plan(nn.Sequential(causal(1, 1, 2, 1, 0)))
    assert compiled_refusal(node, np.dtype(np.float32)) is None
    assert "float16" in str(compiled_refusal(node, np.dtype(np.float16)))
    conv = causal(1, 1, 2, 1, 0, dtype=np.float16)
    assert conv.stream().engine == "layers"


class CausalConv1dStandIn(nn.Module):
    """The attributes a 1-D causal layer (``nn.Conv1d(..., padding="causal")``) has:
    weights ``(O, C/g, k)``, bias, ``options`` with per-axis tuples; forward on NCW."""

    def __init__(self, c: int, o: int, k: int, *, dilation: int, stride: int = 1) -> None:
        rng = np.random.default_rng(k * dilation)
        self.weight = nn.Parameter(rng.standard_normal((o, c, k)))
        self.bias = nn.Parameter(rng.standard_normal(o))
        self.options = {"stride": (stride,), "padding": "causal", "dilation": (dilation,),
                        "groups": 1, "padding_mode": "zeros"}  # fmt: skip

    def forward(self, x: np.ndarray) -> np.ndarray:
        from tests.test_stream import causal_conv1d

        s, d = self.options["stride"][0], self.options["dilation"][0]
        return causal_conv1d(x, self.weight, self.bias, stride=s, dilation=d)


@pytest.mark.parametrize("engine", ["layers", "compiled"])
def test_one_dimensional_causal_layers_stream(engine: str) -> None:
    """A layer with 3-D weights and padding "causal" streams like the one-row Conv2d."""
    layers = [CausalConv1dStandIn(3, 3, 2, dilation=d) for d in (1, 4, 2)]
    net = nn.Sequential(layers[0], nn.Residual(nn.Sequential(layers[1], nn.Tanh())), layers[2])
    x = np.random.default_rng(8).standard_normal((2, 3, 40))
    s = net.stream(batch=2, engine=engine)
    assert s.receptive_field == 1 + 1 + 4 + 2
    assert_stack_close(stream_blocks(s, x, [1, 5, 0, 9]), net.forward(x), 1e-12)
    strided = CausalConv1dStandIn(3, 2, 3, dilation=2, stride=2)
    assert_stack_close(stream_blocks(strided.stream(batch=2), x, [3]), strided.forward(x), 1e-12)
    plain = CausalConv1dStandIn(3, 2, 3, dilation=2)
    plain.options["padding"] = "same"
    with pytest.raises(ValueError, match=r"stack .* its padding is 'same', not 'causal'"):
        plain.stream()


def test_long_block_runs_in_chunks() -> None:
    from dilconv._stream_stack import CHUNK

    net = wavenet(channels=2, dtype=np.float64)
    x = np.random.default_rng(9).standard_normal((1, 2, 2 * CHUNK + 5))
    s = net.stream()
    assert s.engine == "compiled"
    assert_stack_close(s.push(x), forward_1d(net, x), 1e-12)


@pytest.mark.parametrize(
    "first", ["dilconv._nn_blocks", "dilconv._stream_stack", "dilconv.stream", "dilconv.nn"]
)
def test_each_module_can_be_imported_first(first: str) -> None:
    """nn and _nn_blocks, stream and _stream_stack import each other: in any order."""
    import subprocess
    import sys

    code = f"import {first}; from dilconv.nn import Gated; from dilconv.stream import StackStream"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


@pytest.mark.parametrize("engine", ["layers", "compiled"])
def test_nn_conv1d_causal_stack_streams(engine: str) -> None:
    """nn.Conv1d(padding="causal") layers: a WaveNet block on (N, C, L) activations."""
    rng = np.random.default_rng(10)

    def conv(d: int, **kw: Any) -> nn.Conv1d:
        return nn.Conv1d(4, 4, 2, dilation=d, padding="causal", rng=rng, dtype=np.float64, **kw)

    net = nn.Sequential(
        conv(1),
        nn.Residual(nn.Gated(conv(2), conv(2, groups=2))),
        nn.Residual(nn.Sequential(conv(4), nn.Tanh())),
    )
    x = rng.standard_normal((2, 4, 45))
    s = net.stream(batch=2, engine=engine)
    assert s.receptive_field == 1 + 1 + 2 + 4
    assert_stack_close(stream_blocks(s, x, [1, 6, 0, 13]), net.forward(x), 1e-12)
    strided = nn.Conv1d(4, 2, 3, stride=2, dilation=2, padding="causal", rng=rng, dtype=np.float64)
    assert_stack_close(stream_blocks(strided.stream(batch=2), x, [3]), strided.forward(x), 1e-12)
    same = nn.Conv1d(4, 4, 3, padding="same", rng=rng)
    with pytest.raises(ValueError, match=r"stack\[1\] \(Conv1d\(.*\)\) cannot be streamed: its "
                       r"padding is 'same', not 'causal'"):  # fmt: skip
        nn.Sequential(conv(1), same).stream()

"""dilconv.nn: initialisation, one-step gradient checks, the context module, SGD."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import dilconv
from dilconv import nn
from tests.extras import import_peer


def loss_and_grad(net: nn.Module, x: np.ndarray, r: np.ndarray) -> tuple[float, np.ndarray]:
    """Loss ``sum(net(x) * r)``, its input gradient, and the parameters' .grad filled."""
    net.zero_grad()
    y = net.forward(x)
    return float(np.sum(y * r)), net.backward(r)


def check_one_step(net: nn.Module, x: np.ndarray, seed: int, samples: int = 12) -> None:
    """Central differences at random coordinates of the input and of every parameter."""
    rng = np.random.default_rng(seed)
    r = rng.standard_normal(net.forward(x).shape)
    _, gx = loss_and_grad(net, x, r)
    grads = [p.grad.copy() for p in net.parameters()]
    eps = 1e-6

    def loss() -> float:
        return float(np.sum(net.forward(x) * r))

    targets = [("x", x, gx)] + [
        (f"param {k} {p.shape}", p, g)
        for k, (p, g) in enumerate(zip(net.parameters(), grads, strict=True))
    ]
    for name, array, grad in targets:
        for _ in range(samples):
            idx = tuple(int(rng.integers(n)) for n in array.shape)
            old = array[idx]
            array[idx] = old + eps
            up = loss()
            array[idx] = old - eps
            down = loss()
            array[idx] = old
            fd = (up - down) / (2 * eps)
            assert abs(fd - grad[idx]) <= 1e-6 * (1 + abs(fd)), (
                f"{name} at {idx}: backward {grad[idx]!r}, finite difference {fd!r} "
                f"(net={net!r}, seed={seed})"
            )


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"stride": 2, "padding": 1},
        {"dilation": 3, "padding": "same", "padding_mode": "reflect"},
        {"groups": 2, "dilation": 2, "padding": 2, "padding_mode": "circular", "bias": False},
    ],
)
def test_conv2d_one_step(kwargs: dict[str, Any]) -> None:
    layer = nn.Conv2d(4, 6, 3, rng=0, dtype=np.float64, **kwargs)
    x = np.random.default_rng(1).standard_normal((2, 4, 9, 10))
    check_one_step(layer, x, seed=2)
    assert len(layer.parameters()) == (1 if kwargs.get("bias") is False else 2)


def test_conv2d_forward_is_conv2d() -> None:
    layer = nn.Conv2d(3, 5, (3, 2), dilation=2, padding=1, rng=3)
    x = np.random.default_rng(4).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(
        layer(x), dilconv.conv2d(x, layer.weight, layer.bias, dilation=2, padding=1)
    )
    assert layer.weight.dtype == np.float32
    assert layer(x).dtype == np.float32


def test_pytorch_default_initialisation() -> None:
    """kaiming_uniform(a=sqrt(5)): U(-b, b) with b = 1/sqrt(fan_in), the bias likewise."""
    layer = nn.Conv2d(16, 64, 3, groups=2, rng=5, dtype=np.float64)
    bound = 1 / np.sqrt(16 // 2 * 3 * 3)
    assert layer.weight.shape == (64, 8, 3, 3)
    assert np.abs(layer.weight).max() <= bound
    assert np.abs(layer.bias).max() <= bound
    # a uniform on (-b, b) has standard deviation b / sqrt(3): 4608 draws pin it to ~2%
    assert np.std(layer.weight) == pytest.approx(bound / np.sqrt(3), rel=0.05)
    assert np.mean(layer.weight) == pytest.approx(0, abs=0.05 * bound)
    # the same seed gives the same layer; the torch module's bound is the same number
    again = nn.Conv2d(16, 64, 3, groups=2, rng=5, dtype=np.float64)
    np.testing.assert_array_equal(layer.weight, again.weight)
    torch = import_peer("torch")
    ref = torch.nn.Conv2d(16, 64, 3, groups=2)
    assert float(ref.weight.detach().abs().max()) <= bound
    assert float(ref.weight.detach().abs().max()) > 0.9 * bound


def test_context_module_is_the_identity_at_initialisation() -> None:
    m = nn.ContextModule(5)
    rng = np.random.default_rng(6)
    x = rng.random((2, 5, 40, 33)).astype(np.float32)  # non-negative features
    np.testing.assert_array_equal(m(x), x)
    # the truncations clip negatives, as in the paper: max(x, 0) comes through
    signed = rng.standard_normal((1, 5, 20, 20)).astype(np.float32)
    np.testing.assert_array_equal(m(signed), np.maximum(signed, 0))
    # and the identity is no dead end: the gradient of the identity is the identity
    m(x)
    np.testing.assert_array_equal(m.backward(np.ones_like(x)), np.ones_like(x))


def test_context_module_structure() -> None:
    m = nn.ContextModule(3)
    convs = [layer for layer in m if isinstance(layer, nn.Conv2d)]
    assert [c.options["dilation"] for c in convs] == [1, 1, 2, 4, 8, 16, 1, 1]
    assert [c.kernel_size for c in convs] == [(3, 3)] * 7 + [(1, 1)]
    assert sum(isinstance(layer, nn.ReLU) for layer in m) == 7
    assert m.receptive_field == (67, 67)
    assert nn.ContextModule(3, dilations=(1, 2, 4)).receptive_field == (15, 15)


def test_context_module_one_step() -> None:
    """Away from the identity (so that every weight matters), with reflect padding."""
    m = nn.ContextModule(
        2, dilations=(1, 2, 4), init="default", padding_mode="reflect", rng=7, dtype=np.float64
    )
    x = np.random.default_rng(8).standard_normal((1, 2, 12, 11))
    check_one_step(m, x, seed=9, samples=4)


def test_small_network_one_step_and_sgd() -> None:
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, rng=10, dtype=np.float64),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=2, dilation=2, rng=11, dtype=np.float64),
        nn.ReLU(),
        nn.Conv2d(4, 1, 1, rng=12, dtype=np.float64),
    )
    x = np.random.default_rng(13).standard_normal((3, 1, 10, 10))
    check_one_step(net, x, seed=14)
    # one SGD step along the gradient lowers a quadratic loss
    target = np.random.default_rng(15).standard_normal((3, 1, 10, 10))

    def loss() -> float:
        return float(np.mean((net(x) - target) ** 2))

    before = loss()
    net.zero_grad()
    y = net(x)
    net.backward(2 * (y - target) / y.size)
    nn.SGD(net.parameters(), lr=0.1, momentum=0.9).step()
    assert loss() < before


def test_gradients_accumulate_until_zero_grad() -> None:
    layer = nn.Conv2d(1, 1, 2, rng=16, dtype=np.float64)
    x = np.ones((1, 1, 3, 3))
    layer(x)
    layer.backward(np.ones((1, 1, 2, 2)))
    once = layer.weight.grad.copy()
    layer.backward(np.ones((1, 1, 2, 2)))
    np.testing.assert_array_equal(layer.weight.grad, 2 * once)
    layer.zero_grad()
    assert layer.weight.grad is None
    assert layer.bias.grad is None


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: nn.Conv2d(4, 6, 3, groups=4),
            ValueError,
            r"groups=4 must divide out_channels, got 6",
        ),
        (lambda: nn.Conv2d(0, 6, 3), ValueError, r"in_channels must be >= 1, got 0"),
        (lambda: nn.Conv2d(2, 2, 3, bias=1), TypeError, r"bias must be a bool, got 1"),
        (
            lambda: nn.Conv2d(2, 2, 3, padding_mode="edge"),
            ValueError,
            r"padding_mode must be one of",
        ),
        (
            lambda: nn.Conv2d(2, 2, 3).backward(np.ones((1, 2, 3, 3))),
            RuntimeError,
            r"before forward",
        ),
        (lambda: nn.ReLU().backward(np.ones(3)), RuntimeError, r"before forward"),
        (
            lambda: nn.Sequential(nn.ReLU(), "relu"),
            TypeError,
            r"layers\[1\] must be a dilconv.nn.Module",
        ),
        (lambda: nn.ContextModule(2, init="xavier"), ValueError, r"init must be one of"),
        (lambda: nn.SGD([], lr=0), ValueError, r"lr must be > 0, got 0"),
        (
            lambda: nn.SGD([], lr=0.1, momentum=1),
            ValueError,
            r"momentum must be in \[0, 1\), got 1",
        ),
    ],
)
def test_bad_input(call: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()

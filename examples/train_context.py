"""Train a dilated network and an undilated one on a task that needs a wide view.

Each image holds a few markers; every pixel must say whether some marker lies
within ``--radius`` pixels (20 by default). A pixel can only answer if its
receptive field reaches that far. Both networks have the same layers and the same
number of parameters, six 3x3 layers and a 1x1; the dilated one spaces its taps
1, 1, 2, 4, 8, 16 (a 65x65 receptive field, like Yu & Koltun's context module),
the undilated one does not (13x13). Plain NumPy: dilconv's convolutions forward,
its transposed convolutions and swapped correlations backward, SGD with momentum.

    python examples/train_context.py            # a few minutes on 2 cores
    python examples/train_context.py --steps 50 # a quick look
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from tqdm import tqdm

from dilconv import nn
from dilconv.receptive import receptive_field


def make_batch(
    rng: np.random.Generator, n: int, size: int, markers: int, radius: float, blob: float = 2.0
) -> tuple[np.ndarray, np.ndarray]:
    """Marker images ``(n, 1, size, size)`` (discs of radius ``blob``) and 0/1 targets."""
    x = np.zeros((n, 1, size, size), np.float32)
    y = np.zeros((n, 1, size, size), np.float32)
    rows, cols = np.mgrid[:size, :size]
    for k in range(n):
        for _ in range(int(rng.integers(1, markers + 1))):
            r, c = rng.integers(0, size, 2)
            dist2 = (rows - r) ** 2 + (cols - c) ** 2
            x[k, 0] = np.maximum(x[k, 0], dist2 <= blob**2)
            y[k, 0] = np.maximum(y[k, 0], dist2 <= radius**2)
    return x, y


def network(dilations: tuple[int, ...], channels: int, seed: int, prior: float) -> nn.Sequential:
    """3x3 layers with these dilations (each padded to keep the size), then a 1x1 to one logit.

    He initialisation (normal, standard deviation ``sqrt(2 / fan_in)``, zero bias)
    keeps the signal of the sparse markers alive through six rectified layers,
    where PyTorch's default (``Conv2d``'s) shrinks it about 2.4x per layer; the
    last bias starts at the log-odds of the positive pixels.
    """
    rng = np.random.default_rng(seed)
    layers: list[nn.Module] = []
    c_in = 1
    for d in dilations:
        layers += [nn.Conv2d(c_in, channels, 3, padding=d, dilation=d, rng=rng), nn.ReLU()]
        c_in = channels
    layers.append(nn.Conv2d(channels, 1, 1, rng=rng))
    net = nn.Sequential(*layers)
    for layer in net:
        if isinstance(layer, nn.Conv2d):
            fan_in = layer.weight[0].size
            layer.weight[...] = rng.normal(0, np.sqrt(2 / fan_in), layer.weight.shape)
            if layer.bias is not None:
                layer.bias[...] = 0
    last = net[-1]
    if isinstance(last, nn.Conv2d) and last.bias is not None:
        last.bias[...] = np.log(prior / (1 - prior))
    return net


def field(dilations: tuple[int, ...]) -> int:
    """Receptive field of the stack (the 1x1 adds nothing)."""
    return receptive_field([(3, 1, d) for d in dilations])[-1].size


def bce_with_logits(z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean binary cross-entropy of logits ``z`` against ``y``, and its gradient."""
    loss = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
    grad = (1 / (1 + np.exp(-z)) - y) / z.size
    return float(loss.mean()), grad.astype(np.float32)


def evaluate(net: nn.Sequential, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    z = net(x)
    loss, _ = bce_with_logits(z, y)
    return loss, float(np.mean((z > 0) == (y > 0.5)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=12)
    parser.add_argument("--markers", type=int, default=3)
    parser.add_argument("--radius", type=float, default=20.0)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--every", type=int, default=25, help="evaluate every this many steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    x_test, y_test = make_batch(
        np.random.default_rng(10**6), 32, args.size, args.markers, args.radius
    )
    prior = float(y_test.mean())
    stacks = {"dilated": (1, 1, 2, 4, 8, 16), "undilated": (1,) * 6}
    nets = {name: network(d, args.channels, args.seed, prior) for name, d in stacks.items()}
    for name, net in nets.items():
        size = field(stacks[name])
        count = sum(p.size for p in net.parameters())
        print(f"{name}: dilations {stacks[name]}, {count} parameters, field {size}x{size}")
    print(f"test set: 32 images {args.size}x{args.size}, {prior:.1%} of pixels positive")

    curves: dict[str, list[tuple[int, float, float]]] = {name: [] for name in nets}
    start = time.perf_counter()
    for name, net in nets.items():
        rng = np.random.default_rng(args.seed + 1)  # both nets see the same batches
        opt = nn.SGD(net.parameters(), lr=args.lr, momentum=0.9)
        curves[name].append((0, *evaluate(net, x_test, y_test)))
        for step in tqdm(range(1, args.steps + 1), desc=name, leave=False):
            x, y = make_batch(rng, args.batch, args.size, args.markers, args.radius)
            opt.zero_grad()
            _, grad = bce_with_logits(net(x), y)
            net.backward(grad)
            opt.step()
            if step % args.every == 0 or step == args.steps:
                curves[name].append((step, *evaluate(net, x_test, y_test)))

    print(f"\nlearning curves (test loss / pixel accuracy), {time.perf_counter() - start:.0f} s")
    print(f"{'step':>6}  {'dilated':>17}  {'undilated':>17}")
    for (step, dl, da), (_, ul, ua) in zip(curves["dilated"], curves["undilated"], strict=True):
        print(f"{step:>6}  {dl:8.4f} / {da:6.1%}  {ul:8.4f} / {ua:6.1%}")


if __name__ == "__main__":
    main()

"""Train a WaveNet-style stack, then stream it block by block, exactly.

The stack is the WaveNet paper's: causal layers of kernel 2 with dilations 1, 2,
..., 512, three times (a receptive field of 3070 samples), each a residual
``x + tanh(conv(x))`` on ``--channels`` channels, between a causal input layer
(1 channel in) and a 1x1 output layer (1 channel out). It learns a next-sample
task: predict ``x[t + 1]`` from ``x[..t]`` on a sum of sines with occasional
clicks, by a few hundred steps of SGD with momentum (plain NumPy: dilconv's
convolutions forward, its transposed convolutions and correlations backward).

Then the trained stack streams a test signal in blocks of 1, 16 and 256 samples
(``net.stream()``: a copy that shares the weights and keeps, per layer, only its
last ``dilation`` inputs). Each stream's outputs, concatenated, are checked
against the batch forward on the whole signal; the real-time factors at 16 kHz
(compute seconds per second of signal; below 1 is faster than real time) and the
largest difference are printed.

    python examples/stream_wavenet.py               # a few minutes on 2 cores
    python examples/stream_wavenet.py --steps 20    # a quick look
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dilconv import nn

SAMPLE_RATE = 16_000


def causal(c: int, o: int, k: int, d: int, rng: np.random.Generator) -> nn.Conv1d:
    """A causal 1-D convolution: ``d * (k - 1)`` zeros on the left (Keras's rule)."""
    return nn.Conv1d(c, o, k, dilation=d, padding="causal", rng=rng)


def wavenet(channels: int, repeats: int, seed: int = 0) -> nn.Sequential:
    """Input layer, ``10 * repeats`` residual causal layers, 1x1 output layer.

    Each residual branch starts at a tenth of PyTorch's default scale and the
    output layer at zero, so that the untrained stack is close to a sum of its
    input layer's features: thirty full-size branches add up to outputs of 30 and
    SGD diverges."""
    rng = np.random.default_rng(seed)
    layers: list[nn.Module] = [causal(1, channels, 2, 1, rng)]
    for d in [2**i for i in range(10)] * repeats:
        conv = causal(channels, channels, 2, d, rng)
        conv.weight *= 0.1
        layers.append(nn.Residual(nn.Sequential(conv, nn.Tanh())))
    out = causal(channels, 1, 1, 1, rng)
    out.weight[...] = 0
    layers.append(out)
    return nn.Sequential(*layers)


def signal(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    """``(n, 1, length)`` float32: three sines of random pitch and phase, and clicks."""
    t = np.arange(length) / SAMPLE_RATE
    x = np.zeros((n, 1, length), np.float32)
    for k in range(n):
        for _ in range(3):
            f, phase = rng.uniform(100, 2000), rng.uniform(0, 2 * np.pi)
            x[k, 0] += 0.3 * np.sin(2 * np.pi * f * t + phase)
        clicks = rng.random(length) < 2e-3
        x[k, 0, clicks] += rng.choice([-1.0, 1.0], clicks.sum())
    return x


def train(net: nn.Sequential, args: argparse.Namespace, rng: np.random.Generator) -> None:
    """SGD on the mean squared error of the next-sample prediction."""
    opt = nn.SGD(net.parameters(), lr=args.lr, momentum=0.9)
    for step in range(args.steps):
        x = signal(rng, args.batch, args.length)
        y = net.forward(x)
        diff = y[..., :-1] - x[..., 1:]  # output t predicts input t + 1
        loss = float(np.mean(diff**2))
        grad = np.zeros_like(y)
        grad[..., :-1] = 2 * diff / diff.size
        net.zero_grad()
        net.backward(grad)
        norm = np.sqrt(
            sum(float(np.sum(q.grad**2)) for q in net.parameters() if q.grad is not None)
        )
        for q in net.parameters():  # clip the gradient's norm at 1: a click is a big surprise
            if q.grad is not None and norm > 1:
                q.grad /= norm
        opt.step()
        if step % max(1, args.steps // 10) == 0 or step == args.steps - 1:
            baseline = float(np.mean((x[..., :-1] - x[..., 1:]) ** 2))
            print(f"step {step:4d}  loss {loss:.5f}  (repeating the last sample: {baseline:.5f})")


def stream_check(net: nn.Sequential, x: np.ndarray, block: int) -> tuple[float, float]:
    """Stream ``x`` ``(1, 1, L)`` in blocks; returns (real-time factor, largest difference
    from the batch forward)."""
    s = net.stream()
    s.push(x[:, :, :1])  # compile (once per machine) and warm up, then start afresh
    s.reset()
    start = time.perf_counter()
    outs = [s.push(x[:, :, t : t + block]) for t in range(0, x.shape[2], block)]
    seconds = time.perf_counter() - start
    batch = net.forward(x)
    diff = float(np.max(np.abs(np.concatenate(outs, axis=2) - batch)))
    return seconds / (x.shape[2] / SAMPLE_RATE), diff


def main(argv: list[str] | None = None) -> dict[int, tuple[float, float]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3, help="dilation cycles 1..512 (default 3)")
    p.add_argument("--steps", type=int, default=300, help="SGD steps (default 300)")
    p.add_argument("--batch", type=int, default=4, help="signals per step (default 4)")
    p.add_argument("--length", type=int, default=1024, help="samples per signal (default 1024)")
    p.add_argument("--lr", type=float, default=0.003)
    p.add_argument("--seconds", type=float, default=1.0, help="test signal (default 1 s)")
    p.add_argument("--blocks", default="1,16,256", help="block sizes (default 1,16,256)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    net = wavenet(args.channels, args.repeats, args.seed)
    s = net.stream()
    print(
        f"{len(net)} layers, {args.channels} channels, receptive field {s.receptive_field} "
        f"samples, history {s.history_values} values per stream"
    )
    train(net, args, rng)
    x = signal(rng, 1, round(args.seconds * SAMPLE_RATE))
    results = {}
    for block in (int(b) for b in args.blocks.split(",")):
        rtf, diff = stream_check(net, x, block)
        results[block] = (rtf, diff)
        print(
            f"block {block:4d}: real-time factor {rtf:.3f} ({1 / rtf:.1f}x faster than real "
            f"time), largest difference from the batch forward {diff:.2e}"
        )
    return results


if __name__ == "__main__":
    main()

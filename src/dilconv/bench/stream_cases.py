"""The ``stream`` case: a WaveNet stack streamed block by block, against its batch
forward, and a TCN streamed against pytorch-tcn's streaming inference.

The WaveNet stack (issue's shape): 30 causal layers of kernel 2, dilations 1, 2,
..., 512 three times, 32 channels, each ``x + tanh(conv(x))``, float32. Every row
streams a signal through a fresh stream (``reset`` first) and returns the whole
output, so the agreement check compares it with the batch forward. Figures
derived from the medians are in each row's ``derived``: the real-time factor at
16 kHz (seconds of compute per second of signal; below 1 is faster than real
time), the per-stream throughput of 64 streams relative to one, and the history
kept per stream.

The TCN rows mirror pytorch-tcn 1.2.3's ``TCN(32, [32] * 30, kernel_size=2,
dilations=..., use_norm=None, dropout=0)``: each block ``relu(x + relu(conv2(
relu(conv1(x)))))``, the weights copied from the torch model. pytorch-tcn streams
one stream only (batch 1) and runs here on one torch thread, its fastest setting
for such small per-block calls (on two threads a block took 15x longer).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dilconv import nn
from dilconv.bench import peers as P
from dilconv.bench.cases import Built, Row, Thunk

SAMPLE_RATE = 16_000
#: The paper's dilations, three times.
DILATIONS = tuple(2**i for i in range(10)) * 3


def causal_conv(c: int, o: int, k: int, d: int, rng: Any) -> nn.Conv1d:
    """A causal 1-D convolution: ``d * (k - 1)`` zeros on the left (Keras's rule)."""
    return nn.Conv1d(c, o, k, dilation=d, padding="causal", rng=rng)


def wavenet(channels: int, dilations: tuple[int, ...], seed: int = 0) -> nn.Sequential:
    """Residual causal layers ``x + tanh(conv(x))`` of kernel 2, float32."""
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        *[
            nn.Residual(nn.Sequential(causal_conv(channels, channels, 2, d, rng), nn.Tanh()))
            for d in dilations
        ]
    )


def _macs(net: nn.Module) -> int:
    """Multiply-adds per output sample of a stride-1 stack."""
    return sum(p.size for p in net.parameters() if p.ndim == 3)


def _streamer(net: nn.Module, x: np.ndarray, block: int) -> Thunk:
    """A thunk that streams ``x`` ``(batch, C, L)`` in blocks through a fresh stream."""
    s = net.stream(batch=x.shape[0])

    def run() -> np.ndarray:
        s.reset()
        y = np.empty((x.shape[0], s.out_channels, x.shape[2]), s.dtype)
        for t in range(0, x.shape[2], block):
            y[:, :, t : t + block] = s.push(x[:, :, t : t + block])
        return y

    return run


def _forward(net: nn.Module, x: np.ndarray) -> Thunk:
    return lambda: net.forward(x)


def _history_kib(net: nn.Module) -> float:
    s = net.stream()
    return s.history_values * np.dtype(s.dtype).itemsize / 1024


def wavenet_row(label: str, channels: int, seconds: float, block: int, batch: int = 1) -> Row:
    """Stream ``seconds`` of signal in blocks of ``block``: against the batch forward
    (one stream), or against one stream (``batch`` streams)."""

    def build(methods: tuple[str, ...], peers: tuple[str, ...], skip: float) -> Built:
        net = wavenet(channels, DILATIONS)
        n = round(seconds * SAMPLE_RATE)
        x = np.random.default_rng(1).standard_normal((batch, channels, n), dtype=np.float32)
        contenders: dict[str, Thunk] = {"dilconv auto": _streamer(net, x, block)}
        if batch == 1:
            contenders["batch forward"] = _forward(net, x)
        else:
            contenders["one stream"] = _streamer(net, x[:1], block)
        history = _history_kib(net)

        def derived(med: dict[str, float]) -> dict[str, float]:
            auto = med["dilconv auto"]
            out = {
                "real_time_factor": auto / (seconds * batch),
                "us_per_sample_per_stream": auto / (n * batch) * 1e6,
                "history_kib_per_stream": history,
            }
            if "batch forward" in med:
                out["over_batch_forward"] = auto / med["batch forward"]
            if "one stream" in med:
                out["per_stream_throughput_vs_one"] = med["one stream"] * batch / auto
            return out

        no_check = ("one stream",)  # one stream's output is not 64 streams'
        return Built(2.0 * _macs(net) * n * batch, contenders, "dilconv auto", {}, no_check,
                     derived)  # fmt: skip

    return Row("stream", label, build)


def _tcn_pair(channels: int, dilations: tuple[int, ...], torch: Any) -> tuple[Any, nn.Sequential]:
    """pytorch-tcn's TCN and the same stack in dilconv.nn, with the same weights."""
    from pytorch_tcn import TCN

    torch.manual_seed(0)
    ref = TCN(channels, [channels] * len(dilations), kernel_size=2, dilations=list(dilations),
              dropout=0.0, causal=True, use_norm=None, activation="relu").eval()  # fmt: skip
    blocks: list[nn.Module] = []
    for tb, d in zip(ref.network, dilations, strict=True):
        convs = [causal_conv(channels, channels, 2, d, 0) for _ in range(2)]
        for conv, src in zip(convs, (tb.conv1, tb.conv2), strict=True):
            conv.weight[...] = src.weight.detach().numpy()
            if conv.bias is not None:
                conv.bias[...] = src.bias.detach().numpy()
        inner = nn.Sequential(convs[0], nn.ReLU(), convs[1], nn.ReLU())
        blocks.append(nn.Sequential(nn.Residual(inner), nn.ReLU()))
    return ref, nn.Sequential(*blocks)


def tcn_row(label: str, channels: int, samples: int, block: int) -> Row:
    """A TCN streamed in blocks of ``block``: dilconv against pytorch-tcn."""

    def build(methods: tuple[str, ...], peers: tuple[str, ...], skip: float) -> Built:
        torch = P.enabled(peers, "torch")  # pytorch-tcn runs with the torch peer
        tcn = None if torch is None else P._load("pytorch_tcn")
        x = np.random.default_rng(2).standard_normal((1, channels, samples), dtype=np.float32)
        contenders: dict[str, Thunk] = {}
        if tcn is not None:
            ref, net = _tcn_pair(channels, DILATIONS, torch)
            contenders["pytorch-tcn"] = _tcn_streamer(ref, x, block, torch)
        else:
            rng = np.random.default_rng(0)
            net = nn.Sequential(*[
                nn.Sequential(nn.Residual(nn.Sequential(
                    causal_conv(channels, channels, 2, d, rng), nn.ReLU(),
                    causal_conv(channels, channels, 2, d, rng), nn.ReLU())), nn.ReLU())
                for d in DILATIONS
            ])  # fmt: skip
        contenders = {"dilconv auto": _streamer(net, x, block), **contenders}

        def derived(med: dict[str, float]) -> dict[str, float]:
            blocks = -(-samples // block)
            out = {"dilconv_us_per_block": med["dilconv auto"] / blocks * 1e6}
            if "pytorch-tcn" in med:
                out["pytorch_tcn_us_per_block"] = med["pytorch-tcn"] / blocks * 1e6
            return out

        return Built(2.0 * _macs(net) * samples, contenders, "dilconv auto", {}, (), derived)

    return Row("stream", label, build)


def _tcn_streamer(ref: Any, x: np.ndarray, block: int, torch: Any) -> Thunk:
    xt = torch.from_numpy(x)

    def run() -> np.ndarray:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.no_grad():
                ref.reset_buffers()
                outs = [ref.inference(xt[:, :, t : t + block]) for t in range(0, x.shape[2], block)]
            return torch.cat(outs, 2).numpy()
        finally:
            torch.set_num_threads(threads)

    return run


def stream_rows(quick: bool) -> list[Row]:
    """The ``stream`` case's rows (``quick``: 8 channels, short signals)."""
    c = 8 if quick else 32
    long, short = (0.02, 0.01) if quick else (10.0, 1.0)  # quick rows well under FAST_SECONDS
    return [
        wavenet_row("block=256", c, long, 256),
        wavenet_row("block=16", c, long, 16),
        wavenet_row("block=1", c, short, 1),
        wavenet_row("batch=64 block=16", c, short / 20, 16, batch=64),
        tcn_row("tcn block=1", c, 4 if quick else 64, 1),
        tcn_row("tcn block=16", c, 32 if quick else 512, 16),
    ]

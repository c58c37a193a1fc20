"""The 1-D and 3-D benchmark cases: ``signal1d``, ``tcn1d``, ``volume3d`` and ``back1d3d``.

dilconv runs channels-last (NWC, NDHWC: its engine's layout, so no layout copy is
timed); PyTorch runs its own NCW / NCDHW (and channels_last_3d), TensorFlow NWC /
NDHWC. A peer call that raises at warm-up (TensorFlow's CPU Conv3D refuses
dilation > 1) is listed by the runner as refused, with its message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

import dilconv
from dilconv.bench import peers as P
from dilconv.bench.cases import Built, Row, Thunk


def _torch_forward(
    x_last: np.ndarray, w_last: np.ndarray, pads: list[int], d: int, peers: tuple[str, ...]
) -> dict[str, Thunk]:
    """``F.pad`` (when asked) then ``F.conv1d`` / ``F.conv3d`` in NC... (and channels_last_3d)."""
    torch = P.enabled(peers, "torch")
    if torch is None:
        return {}
    f = torch.nn.functional
    rank = x_last.ndim - 2
    xt = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x_last, -1, 1)))
    wt = torch.from_numpy(np.ascontiguousarray(np.moveaxis(w_last, (-1, -2), (0, 1))))
    conv = f.conv1d if rank == 1 else f.conv3d
    formats = [("torch NCW" if rank == 1 else "torch NCDHW", torch.contiguous_format)]
    if rank == 3:
        formats.append(("torch CL3d", torch.channels_last_3d))
    out: dict[str, Thunk] = {}
    for label, fmt in formats:
        xf, wf = xt.contiguous(memory_format=fmt), wt.contiguous(memory_format=fmt)

        def run(xf: Any = xf, wf: Any = wf) -> Any:
            with torch.no_grad():
                return conv(f.pad(xf, pads) if any(pads) else xf, wf, dilation=d)

        out[label] = run
    return out


def _tf_forward(
    x_last: np.ndarray, w_last: np.ndarray, pads: list[list[int]], d: int, peers: tuple[str, ...]
) -> dict[str, Thunk]:
    """``tf.pad`` (when asked) then ``tf.nn.conv1d`` / ``tf.nn.conv3d``, channels-last."""
    tf = P.enabled(peers, "tensorflow")
    if tf is None:
        return {}
    rank = x_last.ndim - 2
    xt, wt = tf.constant(x_last), tf.constant(w_last)

    def run() -> Any:
        xp = tf.pad(xt, pads) if any(v for p in pads for v in p) else xt
        if rank == 1:
            return tf.nn.conv1d(xp, wt, stride=1, padding="VALID", dilations=d)
        return tf.nn.conv3d(xp, wt, strides=[1] * 5, padding="VALID", dilations=[1, d, d, d, 1])

    return {f"tf conv{rank}d": run}


def _pads(rank: int, k: int, d: int, causal: bool) -> tuple[Any, list[int], list[list[int]]]:
    """dilconv's padding, ``F.pad``'s list and ``tf.pad``'s list for "same" or causal."""
    total = d * (k - 1)
    lo, hi = (total, 0) if causal else (total // 2, total - total // 2)
    ours: Any = "causal" if causal else "same"
    return ours, [lo, hi] * rank, [[0, 0], *[[lo, hi]] * rank, [0, 0]]


def forward_row_nd(
    case: str, label: str, shape: tuple[int, ...], o: int, k: int, d: int, causal: bool = False
) -> Row:
    """One ``conv1d`` / ``conv3d``: input ``(N, C, *spatial)``, ``o`` outputs, ``k`` taps
    per axis, dilation ``d``, padding "same" (or causal), float32."""

    def build(methods: tuple[str, ...], peers: tuple[str, ...], skip: float) -> Built:
        n, c, *spatial = shape
        rank = len(spatial)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, *spatial, c), dtype=np.float32)
        w = rng.standard_normal((*(k,) * rank, c, o), dtype=np.float32) / np.sqrt(c * k**rank)
        w = w.astype(np.float32)
        padding, torch_pads, tf_pads = _pads(rank, k, d, causal)
        fmt = "NWC" if rank == 1 else "NDHWC"
        fn: Callable[..., np.ndarray] = dilconv.conv1d if rank == 1 else dilconv.conv3d
        contenders: dict[str, Thunk] = {
            "dilconv auto": lambda: fn(x, w, padding=padding, dilation=d, data_format=fmt)
        }
        contenders.update(_torch_forward(x, w, torch_pads, d, peers))
        contenders.update(_tf_forward(x, w, tf_pads, d, peers))
        macs = n * int(np.prod(spatial)) * o * c * k**rank
        return Built(2.0 * macs, contenders, "dilconv auto")

    return Row(case, label, build)


def backward_row_nd(
    case: str, label: str, shape: tuple[int, ...], o: int, k: int, d: int, causal: bool = False
) -> Row:
    """grad_input plus grad_weight of one ``conv1d`` / ``conv3d`` layer, against PyTorch's
    ``convolution_backward`` (what autograd runs)."""

    def build(methods: tuple[str, ...], peers: tuple[str, ...], skip: float) -> Built:
        n, c, *spatial = shape
        rank = len(spatial)
        rng = np.random.default_rng(1)
        x = rng.standard_normal((n, *spatial, c), dtype=np.float32)
        w = rng.standard_normal((*(k,) * rank, c, o), dtype=np.float32)
        g = rng.standard_normal((n, *spatial, o), dtype=np.float32)
        padding, torch_pads, _ = _pads(rank, k, d, causal)
        fmt = "NWC" if rank == 1 else "NDHWC"
        grad_in = dilconv.conv1d_grad_input if rank == 1 else dilconv.conv3d_grad_input
        grad_w = dilconv.conv1d_grad_weight if rank == 1 else dilconv.conv3d_grad_weight
        opts: dict[str, Any] = {"padding": padding, "dilation": d, "data_format": fmt}

        def both() -> tuple[np.ndarray, np.ndarray]:
            return grad_in(g, w, x.shape, **opts), grad_w(x, g, w.shape, **opts)

        contenders: dict[str, Thunk] = {"dilconv auto": both}
        torch = P.enabled(peers, "torch")
        if torch is not None:
            f = torch.nn.functional
            xt = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))
            xt = f.pad(xt, torch_pads) if any(torch_pads) else xt
            wt = torch.from_numpy(np.ascontiguousarray(np.moveaxis(w, (-1, -2), (0, 1))))
            gt = torch.from_numpy(np.ascontiguousarray(np.moveaxis(g, -1, 1)))

            def run() -> Any:  # the padded input's gradient: F.pad's backward is a slice
                return torch.ops.aten.convolution_backward(
                    gt, xt, wt, None, [1] * rank, [0] * rank, [d] * rank, False, [0] * rank,
                    1, [True, True, False],
                )  # fmt: skip

            contenders["torch autograd"] = run
        macs = n * int(np.prod(spatial)) * o * c * k**rank
        return Built(4.0 * macs, contenders, None)

    return Row(case, label, build)


def all_cases_nd(quick: bool = False) -> dict[str, list[Row]]:
    """The 1-D and 3-D cases by name; ``quick`` shrinks every size for a smoke run."""
    signal = (1, 1, 2**14) if quick else (1, 1, 2**24)
    tcn = (1, 8, 2000) if quick else (1, 64, 32000)
    volume = (1, 4, 12, 12, 12) if quick else (1, 32, 64, 64, 64)
    signal_d = (1, 64, 1024) if quick else (1, 64, 4096)
    return {
        "signal1d": [forward_row_nd("signal1d", f"d={d}", signal, 1, 3, d) for d in signal_d],
        "tcn1d": [
            forward_row_nd("tcn1d", f"k={k} d={d}", tcn, tcn[1], k, d, causal=True)
            for k in (2, 3)
            for d in (1, 16, 256)
        ],
        "volume3d": [
            forward_row_nd("volume3d", f"d={d}", volume, volume[1], 3, d) for d in (1, 2, 4)
        ],
        "back1d3d": [
            backward_row_nd("back1d3d", "tcn1d k=3 d=16", tcn, tcn[1], 3, 16, causal=True),
            backward_row_nd("back1d3d", "volume3d d=2", volume, volume[1], 3, 2),
        ],
    }

"""The named benchmark cases: each a list of rows, each row a set of contenders.

A row is built only when it runs (its arrays can be large). All cases are float32
with padding "same". dilconv is called in NHWC (its canonical layout, like
TensorFlow's and PyTorch's channels_last), so no layout copy is timed; each of
its algorithms that applies runs as well as ``method="auto"``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

import dilconv
from dilconv import _select
from dilconv._methods import METHODS
from dilconv._spec import make_spec
from dilconv.bench import peers as P

Thunk = Callable[[], Any]

#: The context module of Yu & Koltun (2016): seven 3x3 layers and their dilations.
CONTEXT_DILATIONS = (1, 1, 2, 4, 8, 16, 1)

#: A method whose modelled time exceeds both this (seconds; with ``--quick``
#: QUICK_SKIP_SECONDS) and SKIP_FACTOR x the fastest modelled method is not run
#: (its row says so): the loop oracle, or the tutorial's dilated kernel on
#: thousands of channels, would take hours.
SKIP_SECONDS = 1.0
QUICK_SKIP_SECONDS = 0.05
SKIP_FACTOR = 30.0


@dataclasses.dataclass
class Built:
    """A row ready to time."""

    flops: float
    contenders: dict[str, Thunk]
    reference: str | None = None
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    no_check: tuple[str, ...] = ()
    #: Figures computed from the contenders' medians (seconds, by name), if any.
    derived: Callable[[dict[str, float]], dict[str, float]] | None = None


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of a case: a label and the function that builds its contenders."""

    case: str
    label: str
    build: Callable[[tuple[str, ...], tuple[str, ...], float], Built]


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _arrays(n: int, c: int, hw: int, o: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = _rng(seed)
    x = rng.standard_normal((n, hw, hw, c), dtype=np.float32)
    w = (rng.standard_normal((3, 3, c, o), dtype=np.float32) / np.sqrt(9 * c)).astype(np.float32)
    return x, w


def _methods(spec: Any, methods: tuple[str, ...], skip: float) -> tuple[list[str], dict[str, str]]:
    """The forward algorithms to run on a spec (or on a list: a chain of calls), and why
    the others are not run."""
    specs = [s.lowered() for s in (spec if isinstance(spec, list) else [spec])]
    names = [m for m in METHODS if m in methods]
    estimates = {m: sum(_select.estimate_seconds(m, s) for s in specs) for m in names}
    allowed = set.intersection(*(set(_select.candidates(s)) for s in specs)) | {"direct"}
    best = min(estimates.values(), default=0.0)
    run, skipped = [], {}
    for m in names:
        if m not in allowed:
            skipped[m] = "over the workspace limit or refused"
        elif estimates[m] > max(skip, SKIP_FACTOR * best):
            skipped[m] = f"modelled at {estimates[m]:.0f} s"
        else:
            run.append(m)
    return run, skipped


def forward_row(
    case: str, label: str, n: int, c: int, hw: int, o: int, d: int, single: bool = False
) -> Row:
    """One forward convolution, NHWC float32, 3x3, dilation ``d``, padding "same"."""

    def build(methods: tuple[str, ...], peers: tuple[str, ...], skip: float) -> Built:
        x, w = _arrays(n, c, hw, o)
        if single:
            x2, w2 = x[0, :, :, 0].copy(), w[:, :, 0, 0].copy()
            spec = make_spec(x2.shape, w2.shape, padding="same", dilation=d)

            def call(m: str) -> Thunk:
                return lambda: dilconv.conv2d(x2, w2, padding="same", dilation=d, method=m)
        else:
            spec = make_spec(x.shape, w.shape, padding="same", dilation=d, data_format="NHWC")

            def call(m: str) -> Thunk:
                return lambda: dilconv.conv2d(
                    x, w, padding="same", dilation=d, data_format="NHWC", method=m
                )

        run, skipped = _methods(spec, methods, skip)
        contenders = {"dilconv auto": call("auto")}
        derived = None
        if single:
            copy_into = np.empty_like(x2)
            contenders["numpy copyto"] = lambda: np.copyto(copy_into, x2)
            derived = _over("auto_over_copyto", "numpy copyto")
        else:  # PyTorch's layout: the caller's NCHW arrays, the result in NCHW
            xc = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
            wc = np.ascontiguousarray(w.transpose(3, 2, 0, 1))
            contenders["dilconv auto NCHW"] = lambda: dilconv.conv2d(
                xc, wc, padding="same", dilation=d
            )
            derived = _nchw_figures
        contenders.update({f"dilconv {m}": call(m) for m in run})
        contenders.update(P.torch_conv2d(x, w, spec.pad, d, peers))
        contenders.update(P.tf_conv2d(x, w, d, peers))
        if single:
            contenders.update(P.scipy_single(x, w, d, peers))
        no_check = ("numpy copyto",)
        return Built(2.0 * spec.macs, contenders, "dilconv auto", skipped, no_check, derived)

    return Row(case, label, build)


def _over(name: str, other: str) -> Callable[[dict[str, float]], dict[str, float]]:
    """A row's figure: dilconv auto's median over ``other``'s."""

    def figure(med: dict[str, float]) -> dict[str, float]:
        if "dilconv auto" in med and other in med:
            return {name: med["dilconv auto"] / med[other]}
        return {}

    return figure


def _nchw_figures(med: dict[str, float]) -> dict[str, float]:
    """dilconv on NCHW arrays over dilconv on NHWC arrays, and over PyTorch's better layout."""
    out = {}
    nchw = med.get("dilconv auto NCHW")
    if nchw is not None and "dilconv auto" in med:
        out["nchw_over_nhwc"] = nchw / med["dilconv auto"]
    torch_best = min((t for n, t in med.items() if n.startswith("torch")), default=None)
    if nchw is not None and torch_best is not None:
        out["nchw_over_torch_best"] = nchw / torch_best
    return out


def chain_row(case: str, label: str, c: int, hw: int) -> Row:
    """The seven context layers in sequence (convolutions only, no nonlinearity)."""

    def build(methods: tuple[str, ...], peers: tuple[str, ...], skip: float) -> Built:
        x, _ = _arrays(1, c, hw, c)
        ws = [_arrays(1, c, 3, c, seed=k + 1)[1] for k in range(len(CONTEXT_DILATIONS))]
        specs = [
            make_spec(x.shape, w.shape, padding="same", dilation=d, data_format="NHWC")
            for w, d in zip(ws, CONTEXT_DILATIONS, strict=True)
        ]
        spec = specs[0]
        run, skipped = _methods(specs, methods, skip)

        def call(m: str) -> Thunk:
            def chain() -> np.ndarray:
                y = x
                for w, d in zip(ws, CONTEXT_DILATIONS, strict=True):
                    y = dilconv.conv2d(
                        y, w, padding="same", dilation=d, data_format="NHWC", method=m
                    )
                return y

            return chain

        contenders = {"dilconv auto": call("auto")}
        xc = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        wcs = [np.ascontiguousarray(w.transpose(3, 2, 0, 1)) for w in ws]

        def chain_nchw() -> np.ndarray:
            y = xc
            for w, d in zip(wcs, CONTEXT_DILATIONS, strict=True):
                y = dilconv.conv2d(y, w, padding="same", dilation=d)
            return y

        contenders["dilconv auto NCHW"] = chain_nchw
        contenders.update({f"dilconv {m}": call(m) for m in run})
        layers = [
            {**P.torch_conv2d(x, w, ((d, d), (d, d)), d, peers), **P.tf_conv2d(x, w, d, peers)}
            for w, d in zip(ws, CONTEXT_DILATIONS, strict=True)
        ]
        for label_ in layers[0]:
            contenders[label_] = _peer_chain(label_, x, ws, peers)
        return Built(
            2.0 * spec.macs * len(ws), contenders, "dilconv auto", skipped, derived=_nchw_figures
        )

    return Row(case, label, build)


def _peer_chain(label: str, x: np.ndarray, ws: list[np.ndarray], peers: tuple[str, ...]) -> Thunk:
    """The peer's own chain: each layer's output feeds the next without leaving the peer."""
    if label.startswith("torch"):
        import torch

        fmt = torch.channels_last if label.endswith("CL") else torch.contiguous_format
        xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).contiguous(
            memory_format=fmt
        )
        wts = [
            torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1))).contiguous(
                memory_format=fmt
            )
            for w in ws
        ]

        def torch_chain() -> Any:
            with torch.no_grad():
                y = xt
                for w, d in zip(wts, CONTEXT_DILATIONS, strict=True):
                    y = torch.nn.functional.conv2d(y, w, padding=d, dilation=d)
            return y

        return torch_chain
    import tensorflow as tf

    xt, wts = tf.constant(x), [tf.constant(w) for w in ws]
    atrous = label.endswith("atrous")

    def tf_chain() -> Any:
        y = xt
        for w, d in zip(wts, CONTEXT_DILATIONS, strict=True):
            if atrous:
                y = tf.nn.atrous_conv2d(y, w, rate=d, padding="SAME")
            else:
                y = tf.nn.conv2d(y, w, strides=1, padding="SAME", dilations=d)
        return y

    return tf_chain


def backward_row(case: str, label: str, n: int, c: int, hw: int, o: int, d: int) -> Row:
    """grad_input plus grad_weight of one layer, NHWC."""

    def build(methods: tuple[str, ...], peers: tuple[str, ...], skip: float) -> Built:
        x, w = _arrays(n, c, hw, o)
        g = _rng(7).standard_normal((n, hw, hw, o), dtype=np.float32)
        spec = make_spec(x.shape, w.shape, padding="same", dilation=d, data_format="NHWC")
        opts: dict[str, Any] = {"padding": "same", "dilation": d, "data_format": "NHWC"}

        def both() -> tuple[np.ndarray, np.ndarray]:
            return (
                dilconv.conv2d_grad_input(g, w, x.shape, **opts),
                dilconv.conv2d_grad_weight(x, g, w.shape, **opts),
            )

        contenders: dict[str, Thunk] = {"dilconv auto": both}
        contenders.update(P.torch_backward(x, w, g, d, peers))
        contenders.update(P.tf_backward(x, w, g, d, peers))
        return Built(4.0 * spec.macs, contenders, None)

    return Row(case, label, build)


def transpose_row(case: str, label: str, n: int, c: int, hw: int, o: int, s: int, d: int) -> Row:
    """conv2d_transpose with TensorFlow's SAME size ``H * stride``, NHWC."""

    def build(methods: tuple[str, ...], peers: tuple[str, ...], skip: float) -> Built:
        rng = _rng(3)
        x = rng.standard_normal((n, hw, hw, c), dtype=np.float32)
        w = (rng.standard_normal((3, 3, o, c), dtype=np.float32) / np.sqrt(9 * c)).astype(
            np.float32
        )
        opts: dict[str, Any] = {"stride": s, "dilation": d, "padding": "same"}
        contenders: dict[str, Thunk] = {
            "dilconv auto": lambda: dilconv.conv2d_transpose(x, w, data_format="NHWC", **opts)
        }
        contenders.update(P.torch_transpose(x, w, s, d, peers))
        contenders.update(P.tf_transpose(x, w, s, d, peers))
        flops = 2.0 * n * hw * hw * c * o * 9
        no_check = tuple(k for k in contenders if k.startswith("torch"))  # its crop differs
        return Built(flops, contenders, "dilconv auto", no_check=no_check)

    return Row(case, label, build)


def all_cases(quick: bool = False) -> dict[str, list[Row]]:
    """Every case by name; ``quick`` shrinks every size for a smoke run."""
    seed_hw = 256 if quick else 2048
    ctx = ((8, 48),) if quick else ((21, 256), (64, 256))
    aspp = (1, 64, 17, 16) if quick else (1, 2048, 65, 256)
    wave = (2, 8, 24, 8) if quick else (8, 64, 128, 64)
    transpose = (1, 16, 9, 8) if quick else (1, 256, 65, 64)
    cases: dict[str, list[Row]] = {
        "seed": [
            forward_row("seed", f"d={d}", 1, 1, seed_hw, 1, d, single=True)
            for d in (1, 2, 4, 8, 16)
        ],
        "context": [],
        "aspp": [forward_row("aspp", f"d={d}", *aspp, d) for d in (6, 12, 18)],
        "wave": [forward_row("wave", "d=2", *wave, 2)],
        "backward": [
            backward_row("backward", "aspp d=12", *aspp, 12),
            backward_row("backward", "context d=8", 1, ctx[-1][0], ctx[-1][1], ctx[-1][0], 8),
        ],
        "transpose": [transpose_row("transpose", "s=2 d=2", *transpose, 2, 2)],
    }
    for c, hw in ctx:
        for k, d in enumerate(CONTEXT_DILATIONS, start=1):
            cases["context"].append(forward_row("context", f"C={c} L{k} d={d}", 1, c, hw, c, d))
        cases["context"].append(chain_row("context", f"C={c} chain", c, hw))
    from dilconv.bench.cases_nd import all_cases_nd
    from dilconv.bench.cold_cases import cold_rows
    from dilconv.bench.stream_cases import stream_rows

    cases.update(all_cases_nd(quick))
    cases["stream"] = stream_rows(quick)
    cases["cold"] = cold_rows()
    return cases

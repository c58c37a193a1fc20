"""A randomized parity sweep of dilconv against PyTorch, TensorFlow, JAX and SciPy.

:func:`generate_cases` draws calls of ``conv2d``, ``conv2d_transpose``,
``conv2d_grad_input`` and ``conv2d_grad_weight`` (and, asked for by name, their 1-D and 3-D
counterparts: :mod:`dilconv.verify_nd`) across stride, padding,
dilation (per axis, up to 8), groups (depthwise included), both layouts, float32
and float64 and batch sizes. :func:`run_sweep` runs every case on dilconv and on
every route of every peer, and :func:`format_table` prints one row per peer and
route. A peer that raises an error for a case counts it as *refused by peer*
with the peer's message; one that cannot express the case at all (SciPy with
channels, say) counts it as *n/a*; neither is dilconv's failure, and both are
counted in the table.

Errors are measured against a magnitude bound: the operation run again on the
absolute values of its arrays bounds every term of each output's sum. The
relative error of an output is ``|ours - peer| / (magnitude + largest magnitude)``:
the first term keeps small outputs to their own scale, the second allows the
rounding of FFT-based algorithms, which round at the scale of the whole result
(an output whose exact value is 0 comes out as 1e-17, say). It must stay under
:data:`TOLERANCE`, a few dozen roundings of the dtype's epsilon.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

import dilconv
from dilconv._spec import make_spec
from dilconv.peers import (
    ALL_OPS,
    OPS,
    PEERS,
    Case,
    NotApplicable,
    PeerRefused,
    Route,
    available,
    routes,
)
from dilconv.verify_nd import OURS_ND, draw_case_nd

#: dtype -> largest accepted ``|ours - peer| / magnitude``.
TOLERANCE: dict[np.dtype, float] = {
    np.dtype(np.float32): 1e-5,
    np.dtype(np.float64): 1e-12,
}

#: The dilconv function of each operation, called on a case.
OURS: dict[str, Callable[[Case], np.ndarray]] = {
    "conv2d": lambda c: dilconv.conv2d(c.x, c.w, c.bias, **c.options),
    "conv2d_transpose": lambda c: dilconv.conv2d_transpose(c.x, c.w, c.bias, **c.options),
    "conv2d_grad_input": lambda c: dilconv.conv2d_grad_input(
        c.grad_out, c.w, c.x_shape, **c.options
    ),
    "conv2d_grad_weight": lambda c: dilconv.conv2d_grad_weight(
        c.x, c.grad_out, c.w_shape, **c.options
    ),
    **OURS_ND,
}


# --- case generation -------------------------------------------------------------------------


def _draw_padding(rng: np.random.Generator) -> Any:
    kind = rng.choice(["int", "pair", "asymmetric", "same", "valid"], p=[0.2, 0.2, 0.2, 0.25, 0.15])
    if kind == "int":
        return int(rng.integers(0, 4))
    if kind == "pair":
        return int(rng.integers(0, 4)), int(rng.integers(0, 4))
    if kind == "asymmetric":
        t, b, lf, r = (int(v) for v in rng.integers(0, 4, size=4))
        return (t, b), (lf, r)
    return str(kind)


def _draw_options(rng: np.random.Generator, op: str, rank: int) -> dict[str, Any]:
    transposed = op == "conv2d_transpose"
    # a third of the cases undilated: TensorFlow's CPU gradients refuse dilation > 1
    dil = [1, 1] if rng.random() < 0.3 else [int(v) for v in rng.integers(1, 9, size=2)]
    dilation: Any = dil[0] if rng.random() < 0.5 else (dil[0], dil[1])
    strides = [int(v) for v in rng.choice([1, 1, 1, 2, 3], size=2)]
    stride: Any = strides[0] if rng.random() < 0.6 else (strides[0], strides[1])
    options: dict[str, Any] = {
        "stride": stride,
        "padding": _draw_padding(rng),
        "dilation": dilation,
        "data_format": str(rng.choice(["NCHW", "NHWC"])),
    }
    if transposed:
        if not isinstance(options["padding"], str) and rng.random() < 0.3:
            (sh, sw), (dh, dw) = _pair(stride), _pair(dilation)
            most = (max(sh, dh) - 1, max(sw, dw) - 1)
            options["output_padding"] = (
                int(rng.integers(0, most[0] + 1)),
                int(rng.integers(0, most[1] + 1)),
            )
        return options
    options["flip"] = bool(rng.random() < 0.3)
    if rng.random() < 0.25:
        options["padding_mode"] = str(rng.choice(["reflect", "replicate", "circular", "symmetric"]))
    return options


def _pair(v: Any) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _shapes_for(
    rng: np.random.Generator, op: str, rank: int, options: dict[str, Any]
) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """Input and weight shapes (caller layout) and groups."""
    kh, kw = (int(v) for v in rng.integers(1, 5, size=2))
    (dh, dw) = _pair(options["dilation"])
    # large enough for the dilated kernel most of the time, small enough to be quick
    h = int(rng.integers(max(1, (kh - 1) * dh - 2), (kh - 1) * dh + 8))
    w = int(rng.integers(max(1, (kw - 1) * dw - 2), (kw - 1) * dw + 8))
    if op == "conv2d_transpose":
        h, w = max(1, h // 2), max(1, w // 2)
    if rank == 2:
        return (h, w), (kh, kw), 1
    kind = rng.choice(["plain", "grouped", "depthwise"], p=[0.5, 0.3, 0.2])
    groups = 1 if kind == "plain" else int(rng.integers(2, 4))
    cg = 1 if kind == "depthwise" else int(rng.integers(1, 4))
    og = int(rng.integers(1, 3)) if kind == "depthwise" else int(rng.integers(1, 4))
    c, o = groups * cg, groups * og
    n = int(rng.integers(1, 4))
    nchw = options["data_format"] == "NCHW"
    if op == "conv2d_transpose":  # x has the C_in channels; w is (C_in, C_out/g, kh, kw)
        x_shape = (n, c, h, w) if nchw else (n, h, w, c)
        w_shape = (c, og, kh, kw) if nchw else (kh, kw, og, c)
    else:
        x_shape = (n, c, h, w) if nchw else (n, h, w, c)
        w_shape = (o, cg, kh, kw) if nchw else (kh, kw, cg, o)
    return x_shape[4 - rank :], w_shape, groups


def _draw_case(rng: np.random.Generator, op: str, seed: int) -> Case | None:
    """One case, or None when the drawn arguments are not a valid call."""
    if op in OURS_ND:
        return draw_case_nd(rng, op, seed)
    rank = int(rng.choice([2, 3, 4, 4, 4, 4]))
    options = _draw_options(rng, op, rank)
    x_shape, w_shape, groups = _shapes_for(rng, op, rank, options)
    if rank > 2:
        options["groups"] = groups
    dtype = np.dtype(np.float32 if rng.random() < 0.5 else np.float64)
    with_bias = rank > 2 and op in ("conv2d", "conv2d_transpose") and rng.random() < 0.5
    n_out = 1
    if rank > 2 and op == "conv2d_transpose":
        n_out = (w_shape[1] if options["data_format"] == "NCHW" else w_shape[2]) * groups
    elif rank > 2:
        n_out = w_shape[0] if options["data_format"] == "NCHW" else w_shape[-1]

    def array(shape: Sequence[int]) -> np.ndarray:
        return rng.standard_normal(tuple(shape)).astype(dtype)

    bias = array((n_out,)) if with_bias else None
    if op == "conv2d_transpose":
        case = Case(op, options, x_shape, w_shape, x=array(x_shape), w=array(w_shape), bias=bias)
        try:
            out = OURS[op](case)
        except ValueError:
            return None
        return dataclasses.replace(case, seed=seed) if out.size else None
    try:
        spec = make_spec(x_shape, w_shape, dtypes=[dtype], **options)
    except ValueError:
        return None
    x, w = array(x_shape), array(w_shape)
    if op == "conv2d":
        return Case(op, options, x_shape, w_shape, x=x, w=w, bias=bias, seed=seed)
    grad_out = array(spec.out_shape)
    if op == "conv2d_grad_input":
        return Case(op, options, x_shape, w_shape, w=w, grad_out=grad_out, seed=seed)
    return Case(op, options, x_shape, w_shape, x=x, grad_out=grad_out, seed=seed)


def generate_cases(count: int, seed: int = 0, ops: Sequence[str] = OPS) -> list[Case]:
    """``count`` valid cases, the operations taken in turn; reproducible from ``seed``.

    Examples
    --------
    >>> [c.op for c in generate_cases(3, seed=1, ops=["conv2d", "conv2d_grad_weight"])]
    ['conv2d', 'conv2d_grad_weight', 'conv2d']
    """
    for op in ops:
        if op not in ALL_OPS:
            raise ValueError(f"ops must be among {list(ALL_OPS)}, got {op!r}")
    return [draw_case(ops[i % len(ops)], seed * 1_000_003 + i) for i in range(count)]


def draw_case(op: str, seed: int) -> Case:
    """One valid case of ``op``, reproducible from ``seed`` (invalid draws are redrawn).

    Examples
    --------
    >>> case = draw_case("conv2d", 7)
    >>> case.op, case.seed
    ('conv2d', 7)
    """
    if op not in ALL_OPS:
        raise ValueError(f"op must be one of {list(ALL_OPS)}, got {op!r}")
    rng = np.random.default_rng(seed)
    while (case := _draw_case(rng, op, seed)) is None:
        pass
    return case


# --- running and comparing -------------------------------------------------------------------


def magnitude(case: Case) -> np.ndarray:
    """The operation on the absolute values of the case's arrays: a bound on each sum's terms."""

    def absolute(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else np.abs(a)

    abs_case = dataclasses.replace(
        case,
        x=absolute(case.x),
        w=absolute(case.w),
        grad_out=absolute(case.grad_out),
        bias=absolute(case.bias),
    )
    return np.abs(OURS[case.op](abs_case).astype(np.float64))


def relative_error(ours: np.ndarray, peer: np.ndarray, scale: np.ndarray) -> float:
    """``max |ours - peer| / (scale + max(scale))`` (0/0 counts as 0, x/0 as infinity).

    Examples
    --------
    >>> relative_error(np.array([1.0, 2e-17]), np.array([1.0, 0.0]), np.array([1.0, 0.0]))
    2e-17
    """
    diff = np.abs(ours.astype(np.float64) - peer.astype(np.float64))
    if diff.size == 0:
        return 0.0
    bound = scale + scale.max()
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(diff == 0, 0.0, diff / bound)
    return float(ratio.max())


@dataclasses.dataclass
class Row:
    """What one route of one peer found over the sweep."""

    peer: str
    op: str
    label: str
    cases: int = 0
    agreed: int = 0
    refused: dict[str, int] = dataclasses.field(default_factory=dict)
    not_applicable: int = 0
    max_error: dict[str, float] = dataclasses.field(default_factory=dict)
    failures: list[str] = dataclasses.field(default_factory=list)

    @property
    def n_refused(self) -> int:
        """Cases the peer refused."""
        return sum(self.refused.values())


def compare(case: Case, ours: np.ndarray, scale: np.ndarray, route: Route) -> tuple[str, Any]:
    """Run one route on one case.

    Returns ``("agree", error)``, ``("fail", why)``, ``("refused", message)`` or
    ``("n/a", why)``.
    """
    try:
        peer = np.asarray(route.compute(case))
    except PeerRefused as refusal:
        return "refused", str(refusal)
    except NotApplicable as why:
        return "n/a", str(why)
    if peer.shape != ours.shape:
        return "fail", f"shape {ours.shape} != peer's {peer.shape}"
    if peer.dtype != ours.dtype:
        return "fail", f"dtype {ours.dtype} != peer's {peer.dtype}"
    err = relative_error(ours, peer, scale)
    if not err <= TOLERANCE[np.dtype(ours.dtype)]:
        return "fail", f"relative error {err:.3g}"
    return "agree", err


def run_sweep(
    cases: Sequence[Case],
    peers: Sequence[str] = PEERS,
    *,
    progress: bool | None = None,
) -> tuple[list[Row], dict[str, str]]:
    """Run every case on dilconv and on every route of the available peers.

    Returns the rows (one per peer route, in the order of ``peers``) and the
    peers that are not installed, with the command that installs each.
    ``progress`` shows a tqdm bar on stderr (default: only on a terminal).
    """
    from tqdm import tqdm

    missing = {p: why for p in peers if (why := available(p)) is not None}
    wanted_ops = {c.op for c in cases}
    table = [
        Row(r.peer, r.op, r.label)
        for p in peers
        if p not in missing
        for r in routes(p)
        if r.op in wanted_ops
    ]
    by_route = {(row.peer, row.op, row.label): row for row in table}
    active = [r for p in peers if p not in missing for r in routes(p) if r.op in wanted_ops]
    bar: Iterable[Case] = tqdm(
        cases,
        desc="dilconv verify",
        unit="case",
        file=sys.stderr,
        disable=(None if progress is None else not progress),
    )
    for case in bar:
        try:
            ours = np.asarray(OURS[case.op](case))
            scale = magnitude(case)
        except Exception as err:  # dilconv failed on a valid case: every route reports it
            for route in active:
                if route.op == case.op:
                    row = by_route[(route.peer, route.op, route.label)]
                    row.cases += 1
                    row.failures.append(f"{case.describe()}: dilconv raised {err!r}")
            continue
        for route in active:
            if route.op != case.op:
                continue
            row = by_route[(route.peer, route.op, route.label)]
            row.cases += 1
            verdict, detail = compare(case, ours, scale, route)
            if verdict == "agree":
                row.agreed += 1
                key = np.dtype(ours.dtype).name
                row.max_error[key] = max(row.max_error.get(key, 0.0), detail)
            elif verdict == "refused":
                row.refused[detail] = row.refused.get(detail, 0) + 1
            elif verdict == "n/a":
                row.not_applicable += 1
            else:
                row.failures.append(f"{case.describe()}: {detail}")
    return table, missing


def _err(row: Row, dtype: str) -> str:
    return f"{row.max_error[dtype]:>9.1e}" if dtype in row.max_error else f"{'-':>9}"


def format_table(rows: Sequence[Row], missing: dict[str, str]) -> str:
    """The sweep's table (peer by operation), then the refusals and the failures.

    The error columns are the largest relative error among the cases that agree,
    per dtype (``-``: no such case).
    """
    head = (
        f"{'peer':<11} {'operation':<19} {'route':<44} {'cases':>5} {'agree':>5} "
        f"{'refused':>7} {'n/a':>4} {'error f32':>9} {'error f64':>9} {'failures':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.peer:<11} {r.op:<19} {r.label:<44} {r.cases:>5} {r.agreed:>5} "
            f"{r.n_refused:>7} {r.not_applicable:>4} {_err(r, 'float32')} {_err(r, 'float64')} "
            f"{len(r.failures):>8}"
        )
    for peer, why in missing.items():
        lines.append(f"{peer:<11} not installed: {why}")
    refusals = [(r, msg, n) for r in rows for msg, n in r.refused.items()]
    if refusals:
        lines.append("\nRefused by peer (not dilconv's failures):")
        for r, msg, n in refusals:
            lines.append(f"  {r.peer} {r.label} [{r.op}], {n} case(s): {msg}")
    failures = [(r, f) for r in rows for f in r.failures]
    if failures:
        lines.append("\nMISMATCHES:")
        for r, f in failures:
            lines.append(f"  {r.peer} {r.label}: {f}")
    total = sum(len(r.failures) for r in rows)
    checked = sum(r.agreed for r in rows)
    lines.append(
        f"\n{checked} comparisons agree within tolerance "
        f"(float32 {TOLERANCE[np.dtype(np.float32)]:g}, "
        f"float64 {TOLERANCE[np.dtype(np.float64)]:g}, relative to the magnitude bound); "
        + ("no mismatches." if total == 0 else f"{total} MISMATCHES.")
    )
    return "\n".join(lines)


def as_json(rows: Sequence[Row], missing: dict[str, str], **meta: Any) -> dict[str, Any]:
    """The sweep as a JSON-ready dict."""
    return {
        **meta,
        "rows": [
            {
                "peer": r.peer,
                "op": r.op,
                "route": r.label,
                "cases": r.cases,
                "agree": r.agreed,
                "refused": r.n_refused,
                "refusals": r.refused,
                "not_applicable": r.not_applicable,
                "max_error": r.max_error,
                "failures": r.failures,
            }
            for r in rows
        ],
        "missing": missing,
        "ok": not any(r.failures for r in rows),
    }

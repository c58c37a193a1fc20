"""The parity sweep's cases in 1-D and 3-D (:func:`dilconv.verify.generate_cases` with
``ops`` among :data:`dilconv.peers.ranks.OPS_ND`).

Calls of ``conv1d``/``conv3d``, their transposes and gradients are drawn across
stride, padding (``"causal"`` in 1-D a fifth of the time), dilation (up to 8 in 1-D,
4 in 3-D), groups (depthwise included), padding modes, flip, both layouts, plain,
unbatched and batched input, float32 and float64.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

import dilconv
from dilconv._spec_nd import FORMATS, make_spec_nd
from dilconv.peers import Case
from dilconv.peers.ranks import rank_of


def _call(name: str) -> Callable[[Case], np.ndarray]:
    fn = getattr(dilconv, name)
    if name.endswith("grad_input"):
        return lambda c: fn(c.grad_out, c.w, c.x_shape, **c.options)
    if name.endswith("grad_weight"):
        return lambda c: fn(c.x, c.grad_out, c.w_shape, **c.options)
    return lambda c: fn(c.x, c.w, c.bias, **c.options)


#: The dilconv function of each 1-D and 3-D operation, called on a case.
OURS_ND: dict[str, Callable[[Case], np.ndarray]] = {
    op: _call(op)
    for op in (
        "conv1d",
        "conv1d_transpose",
        "conv1d_grad_input",
        "conv1d_grad_weight",
        "conv3d",
        "conv3d_transpose",
        "conv3d_grad_input",
        "conv3d_grad_weight",
    )
}


def _per_axis(rng: np.random.Generator, values: list[int]) -> Any:
    return values[0] if len(set(values)) == 1 and rng.random() < 0.7 else tuple(values)


def _options(rng: np.random.Generator, op: str, rank: int) -> dict[str, Any]:
    transposed = op.endswith("transpose")
    most_d = 9 if rank == 1 else 5
    dil = [1] * rank if rng.random() < 0.3 else [int(v) for v in rng.integers(1, most_d, rank)]
    strides = [int(v) for v in rng.choice([1, 1, 1, 2, 3], size=rank)]
    kind = rng.choice(["int", "axes", "same", "valid", "causal"], p=[0.2, 0.25, 0.25, 0.1, 0.2])
    padding: Any
    if kind == "int":
        padding = int(rng.integers(0, 4))
    elif kind == "axes":
        padding = tuple(
            (int(rng.integers(0, 4)), int(rng.integers(0, 4))) if rng.random() < 0.6
            else int(rng.integers(0, 4))
            for _ in range(rank)
        )  # fmt: skip
    elif kind == "causal" and (rank != 1 or transposed):
        padding = "same"
    else:
        padding = str(kind)
    options: dict[str, Any] = {
        "stride": _per_axis(rng, strides),
        "padding": padding,
        "dilation": _per_axis(rng, dil),
        "data_format": str(rng.choice(FORMATS[rank])),
    }
    if transposed:
        if not isinstance(padding, str) and rng.random() < 0.3:
            options["output_padding"] = tuple(
                int(rng.integers(0, max(s, d))) for s, d in zip(strides, dil, strict=True)
            )
        return options
    options["flip"] = bool(rng.random() < 0.3)
    if rng.random() < 0.25:
        options["padding_mode"] = str(rng.choice(["reflect", "replicate", "circular", "symmetric"]))
    return options


def draw_case_nd(rng: np.random.Generator, op: str, seed: int) -> Case | None:
    """One case of a 1-D or 3-D operation, or None when the draw is not a valid call."""
    rank = rank_of(op)
    transposed = op.endswith("transpose")
    options = _options(rng, op, rank)
    kernel = tuple(int(v) for v in rng.integers(1, 5 if rank == 1 else 4, rank))
    dil = options["dilation"]
    dil = (dil,) * rank if isinstance(dil, int) else dil
    most = 30 if rank == 1 else 7
    spatial = tuple(
        int(rng.integers(max(1, (k - 1) * d - 2), (k - 1) * d + most))
        for k, d in zip(kernel, dil, strict=True)
    )
    if transposed:
        spatial = tuple(max(1, n // 2) for n in spatial)
    x_ndim = int(rng.choice([rank, rank + 1, rank + 2, rank + 2, rank + 2]))
    group_kind = rng.choice(["plain", "grouped", "depthwise"], p=[0.5, 0.3, 0.2])
    groups = 1 if group_kind == "plain" or x_ndim == rank else int(rng.integers(2, 4))
    cg = 1 if group_kind == "depthwise" or x_ndim == rank else int(rng.integers(1, 4))
    og = 1 if x_ndim == rank else int(rng.integers(1, 4))
    c, o, n = groups * cg, groups * og, int(rng.integers(1, 4))
    first = options["data_format"].startswith("NC")
    if x_ndim == rank:
        x_shape, w_shape = spatial, kernel
    else:
        x_full = (n, c, *spatial) if first else (n, *spatial, c)
        x_shape = x_full[rank + 2 - x_ndim :]
        if transposed:  # x has C_in = c channels; w is (C_in, C_out/g, k...)
            w_shape = (c, og, *kernel) if first else (*kernel, og, c)
        else:
            w_shape = (o, cg, *kernel) if first else (*kernel, cg, o)
    if x_ndim > rank:
        options["groups"] = groups
    dtype = np.dtype(np.float32 if rng.random() < 0.5 else np.float64)
    n_out = og * groups if x_ndim > rank else 1

    def array(shape: tuple[int, ...]) -> np.ndarray:
        return rng.standard_normal(shape).astype(dtype)

    with_bias = x_ndim > rank and not op.startswith(("conv1d_grad", "conv3d_grad"))
    bias = array((n_out,)) if with_bias and rng.random() < 0.5 else None
    if transposed:
        case = Case(op, options, x_shape, w_shape, x=array(x_shape), w=array(w_shape), bias=bias)
        try:
            out = OURS_ND[op](case)
        except ValueError:
            return None
        return (
            Case(op, options, x_shape, w_shape, x=case.x, w=case.w, bias=bias, seed=seed)
            if out.size
            else None
        )
    try:
        spec = make_spec_nd(rank, x_shape, w_shape, dtypes=[dtype], **options)
    except ValueError:
        return None
    x, w = array(x_shape), array(w_shape)
    if op in ("conv1d", "conv3d"):
        return Case(op, options, x_shape, w_shape, x=x, w=w, bias=bias, seed=seed)
    grad_out = array(spec.out_shape)
    if op.endswith("grad_input"):
        return Case(op, options, x_shape, w_shape, w=w, grad_out=grad_out, seed=seed)
    return Case(op, options, x_shape, w_shape, x=x, grad_out=grad_out, seed=seed)

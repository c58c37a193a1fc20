"""Hypothesis strategies over the ``conv1d`` / ``conv3d`` argument space (any rank)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from dilconv._spec import PADDING_MODES
from dilconv._spec_nd import FORMATS, SpecN, make_spec_nd

#: Per rank: largest spatial size, kernel, stride and dilation drawn (3-D kept small:
#: the oracle loops over every output and tap).
LIMITS = {1: (24, 4, 3, 5), 2: (9, 3, 3, 3), 3: (6, 3, 2, 3)}


@dataclasses.dataclass
class CaseN:
    """One drawn call of rank ``rank``: arrays in the caller's layout and the options."""

    rank: int
    x: np.ndarray
    w: np.ndarray
    bias: np.ndarray | None
    options: dict[str, Any]
    spec: SpecN

    def __repr__(self) -> str:
        b = None if self.bias is None else self.bias.shape
        return (
            f"CaseN(rank={self.rank}, x={self.x.shape} {self.x.dtype}, w={self.w.shape}, "
            f"bias={b}, {self.options})"
        )


def per_axis(rank: int, values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """An int, or a tuple of one per axis."""
    return st.one_of(values, st.tuples(*(values for _ in range(rank))))


def paddings(rank: int) -> st.SearchStrategy[Any]:
    """Every form ``padding`` takes in this rank."""
    keywords = ["valid", "same", "full"] + (["causal"] if rank == 1 else [])
    entry = st.one_of(st.integers(0, 3), st.tuples(st.integers(0, 3), st.integers(0, 3)))
    return st.one_of(
        st.sampled_from(keywords),
        st.integers(0, 3),
        st.tuples(*(entry for _ in range(rank))),
    )


@st.composite
def nd_cases(
    draw: st.DrawFn,
    rank: int,
    *,
    dtypes: tuple[Any, ...] = (np.float64,),
    modes: tuple[str, ...] = PADDING_MODES,
    bias: bool | None = None,
    flip: bool | None = None,
    hw_kernel: tuple[int, int] | None = None,
) -> CaseN:
    """A valid call of the ``rank``-D convolution with small random arrays.

    ``hw_kernel``: this kernel in the last two axes, at stride 1 there (the 3-D
    calls whose planes Winograd F(2x2, 3x3) takes).
    """
    size, most_k, most_s, most_d = LIMITS[rank]
    x_ndim = draw(st.sampled_from([rank, rank + 1, rank + 2]))
    data_format = draw(st.sampled_from(FORMATS[rank]))
    groups = 1 if x_ndim == rank else draw(st.integers(1, 3))
    cg = 1 if x_ndim == rank else draw(st.integers(1, 3))
    og = 1 if x_ndim == rank else draw(st.integers(1, 3))
    n = draw(st.integers(1, 2))
    spatial = tuple(draw(st.integers(1, size)) for _ in range(rank))
    kernel = tuple(draw(st.integers(1, most_k)) for _ in range(rank))
    if hw_kernel is not None:
        kernel = (*kernel[:-2], *hw_kernel)
    c, o = groups * cg, groups * og
    if x_ndim == rank:
        x_shape, w_shape = spatial, kernel
    elif data_format.startswith("NC"):
        x_shape, w_shape = (n, c, *spatial)[rank + 2 - x_ndim :], (o, cg, *kernel)
    else:
        x_shape, w_shape = (n, *spatial, c)[rank + 2 - x_ndim :], (*kernel, cg, o)
    options = {
        "stride": (
            draw(per_axis(rank, st.integers(1, most_s)))
            if hw_kernel is None
            else (draw(st.integers(1, most_s)), 1, 1)
        ),
        "padding": draw(paddings(rank)),
        "dilation": draw(per_axis(rank, st.integers(1, most_d))),
        "groups": groups,
        "padding_mode": draw(st.sampled_from(modes)),
        "data_format": data_format,
        "flip": draw(st.booleans()) if flip is None else flip,
    }
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    try:
        spec = make_spec_nd(rank, x_shape, w_shape, dtypes=[dtype], **options)
    except ValueError:
        assume(False)
        raise
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))

    def draw_array(shape: tuple[int, ...]) -> np.ndarray:
        if dtype.kind in "iu":
            return rng.integers(-5, 6, size=shape).astype(dtype)
        return rng.standard_normal(shape).astype(dtype)

    with_bias = draw(st.booleans()) if bias is None else bias
    b = draw_array((o,)) if with_bias else None
    return CaseN(rank, draw_array(x_shape), draw_array(w_shape), b, options, spec)

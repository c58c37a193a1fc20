"""Hypothesis strategies over the whole ``conv2d`` argument space."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from dilconv._spec import PADDING_MODES, make_spec


@dataclasses.dataclass
class Case:
    """One drawn call: arrays in the caller's layout and the keyword options."""

    x: np.ndarray
    w: np.ndarray
    bias: np.ndarray | None
    options: dict[str, Any]

    def __repr__(self) -> str:
        b = None if self.bias is None else self.bias.shape
        return f"Case(x={self.x.shape} {self.x.dtype}, w={self.w.shape}, bias={b}, {self.options})"


pairs = st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3)))
dilations = st.one_of(st.integers(1, 4), st.tuples(st.integers(1, 4), st.integers(1, 4)))
paddings = st.one_of(
    st.sampled_from(["valid", "same", "full"]),
    st.integers(0, 3),
    st.tuples(st.integers(0, 3), st.integers(0, 3)),
    st.tuples(
        st.tuples(st.integers(0, 3), st.integers(0, 3)),
        st.tuples(st.integers(0, 3), st.integers(0, 3)),
    ),
)


@st.composite
def conv_cases(
    draw: st.DrawFn,
    *,
    dtypes: tuple[Any, ...] = (np.float64,),
    modes: tuple[str, ...] = PADDING_MODES,
    max_hw: int = 12,
    bias: bool | None = None,
    one_per_group: bool = False,
    three_by_three: bool = False,
) -> Case:
    """A valid ``conv2d`` call with small random arrays.

    ``one_per_group``: one input and one output channel per group (a single channel,
    or depthwise), the calls the elementwise algorithms take. ``three_by_three``: a
    3x3 kernel, stride 1, one group and 1-20 channels each side (partial SIMD
    vectors for float32 and float64), the calls Winograd F(2x2, 3x3) takes.
    """
    rank = draw(st.sampled_from([2, 3, 4]))
    data_format = draw(st.sampled_from(["NCHW", "NHWC"]))
    groups = 1 if rank == 2 or three_by_three else draw(st.integers(1, 3))
    most = 20 if three_by_three else 3
    cg = 1 if rank == 2 or one_per_group else draw(st.integers(1, most))
    og = 1 if rank == 2 or one_per_group else draw(st.integers(1, most))
    n = draw(st.integers(1, 2))
    h, w = draw(st.integers(1, max_hw)), draw(st.integers(1, max_hw))
    kh, kw = (3, 3) if three_by_three else (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    c, o = groups * cg, groups * og
    if rank == 2:
        x_shape, w_shape = (h, w), (kh, kw)
    elif data_format == "NCHW":
        x_shape, w_shape = (n, c, h, w)[4 - rank :], (o, cg, kh, kw)
    else:
        x_shape, w_shape = (n, h, w, c)[4 - rank :], (kh, kw, cg, o)
    options = {
        "stride": 1 if three_by_three else draw(pairs),
        "padding": draw(paddings),
        "dilation": draw(dilations),
        "groups": groups,
        "padding_mode": draw(st.sampled_from(modes)),
        "data_format": data_format,
        "flip": draw(st.booleans()),
    }
    try:
        make_spec(x_shape, w_shape, **options)
    except ValueError:
        assume(False)
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)

    def draw_array(shape: tuple[int, ...]) -> np.ndarray:
        if dtype.kind in "iu":
            return rng.integers(-5, 6, size=shape).astype(dtype)
        return rng.standard_normal(shape).astype(dtype)

    with_bias = draw(st.booleans()) if bias is None else bias
    b = draw_array((o,)) if with_bias else None
    return Case(draw_array(x_shape), draw_array(w_shape), b, options)


@st.composite
def winograd_nchw_cases(
    draw: st.DrawFn, *, channels: int, outputs: int, width: int, column_dilation: int
) -> Case:
    """A 3x3 NCHW call for Winograd's NCHW routes: up to ``channels`` in, ``outputs``
    out, ``width`` columns and ``column_dilation`` along the rows (up to 6 down the
    columns), padding uneven on either side, float32 or float64, at least one output."""
    d = (draw(st.integers(1, 6)), draw(st.integers(1, column_dilation)))
    c, o = draw(st.integers(1, channels)), draw(st.integers(1, outputs))
    h = draw(st.integers(1, 24)) + 2 * d[0]  # at least one output whatever the padding
    w = draw(st.integers(1, width)) + 2 * d[1]
    padding = draw(
        st.one_of(
            st.just("same"),
            st.integers(0, 5),
            st.tuples(
                st.tuples(st.integers(0, 7), st.integers(0, 3)),
                st.tuples(st.integers(0, 3), st.integers(0, 7)),
            ),
        )
    )
    batch = draw(st.sampled_from([None, 1, 3]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.standard_normal((c, h, w) if batch is None else (batch, c, h, w)).astype(dtype)
    wt = rng.standard_normal((o, c, 3, 3)).astype(dtype)
    return Case(x, wt, None, {"dilation": d, "padding": padding})

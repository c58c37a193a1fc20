"""The explorer's two questions, answered by dilconv itself.

:func:`conv_view` takes one request (sizes, options, values), runs
:func:`dilconv.conv2d` (or :func:`dilconv.conv2d_transpose`) and returns
everything the page draws: the values, the padding, and per axis which input
position every output position reads through every tap, taken from
:func:`dilconv._shapes.read_positions` and :func:`dilconv._padding.source_index`.
The page never computes an index. :func:`receptive_view` answers the
receptive-field panel.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from dilconv import _shapes
from dilconv._padding import source_index
from dilconv._spec import PADDING_MODES, PADDING_STRINGS, ConvSpec, make_spec
from dilconv.conv import conv2d
from dilconv.explore import _code, _schema
from dilconv.explore._receptive import parse_stack, receptive_view
from dilconv.explore._schema import ApiError

__all__ = ["LIMITS", "Params", "compute", "conv_view", "parse_conv", "parse_stack",
           "receptive_view"]  # fmt: skip

#: Caps on every size the explorer accepts: (smallest, largest).
LIMITS = {
    "in_h": (1, 24),
    "in_w": (1, 24),
    "k_h": (1, 7),
    "k_w": (1, 7),
    "stride_h": (1, 6),
    "stride_w": (1, 6),
    "dilation_h": (1, 10),
    "dilation_w": (1, 10),
    "pad": (0, 24),
    "seed": (0, 2**31 - 1),
}
FILLS = ("random", "ones")
CONV_KEYS = (
    "in_h", "in_w", "k_h", "k_w", "stride_h", "stride_w", "dilation_h", "dilation_w",
    "padding", "padding_mode", "flip", "transposed", "x", "w", "seed", "focus",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Params:
    """One validated explorer request."""

    in_h: int = 7
    in_w: int = 7
    k_h: int = 3
    k_w: int = 3
    stride_h: int = 1
    stride_w: int = 1
    dilation_h: int = 2
    dilation_w: int = 2
    padding: str | tuple[tuple[int, int], tuple[int, int]] = "valid"
    padding_mode: str = "zeros"
    flip: bool = False
    transposed: bool = False
    x: str | tuple[tuple[float, ...], ...] = "random"
    w: str | tuple[tuple[float, ...], ...] = "random"
    seed: int = 0
    focus: str = ""

    @property
    def options(self) -> dict[str, Any]:
        """The ``conv2d`` keyword arguments."""
        return {
            "stride": (self.stride_h, self.stride_w),
            "padding": self.padding,
            "dilation": (self.dilation_h, self.dilation_w),
            "padding_mode": self.padding_mode,
            "flip": self.flip,
        }


def _padding(obj: dict[str, Any]) -> str | tuple[tuple[int, int], tuple[int, int]]:
    value = obj.get("padding", "valid")
    if isinstance(value, str):
        return _schema.choice(obj, "padding", "valid", PADDING_STRINGS)
    if not (
        isinstance(value, list) and len(value) == 2 and all(isinstance(v, list) for v in value)
    ):
        raise ApiError(
            400,
            "padding must be valid, same, full or [[top, bottom], [left, right]]",
            field="padding",
            nearest="valid",
        )
    lo, hi = LIMITS["pad"]
    names = (("pad_top", "pad_bottom"), ("pad_left", "pad_right"))
    pads = []
    for axis, pair in enumerate(value):
        if len(pair) != 2:
            raise ApiError(400, f"padding[{axis}] must be a pair, got {pair}", field="padding")
        a = _schema.integer(dict(zip(names[axis], pair, strict=True)), names[axis][0], 0, lo, hi)
        b = _schema.integer(dict(zip(names[axis], pair, strict=True)), names[axis][1], 0, lo, hi)
        pads.append((a, b))
    return pads[0], pads[1]


def _values(obj: dict[str, Any], name: str, shape: tuple[int, int]) -> Any:
    value = obj.get(name, "random")
    if isinstance(value, str):
        return _schema.choice(obj, name, "random", FILLS)
    return tuple(tuple(row) for row in _schema.grid(name, value, shape))


def parse_conv(obj: dict[str, Any]) -> Params:
    """Validate a request object into :class:`Params` (an :class:`ApiError` if refused)."""
    _schema.check_keys(obj, CONV_KEYS)
    ints = {
        name: _schema.integer(obj, name, getattr(Params, name), *LIMITS[name])
        for name in ("in_h", "in_w", "k_h", "k_w", "stride_h", "stride_w")
        + ("dilation_h", "dilation_w", "seed")
    }
    return Params(
        **ints,
        padding=_padding(obj),
        padding_mode=_schema.choice(obj, "padding_mode", "zeros", PADDING_MODES),
        flip=_schema.boolean(obj, "flip", False),
        transposed=_schema.boolean(obj, "transposed", False),
        x=_values(obj, "x", (ints["in_h"], ints["in_w"])),
        w=_values(obj, "w", (ints["k_h"], ints["k_w"])),
        focus=_schema.choice(obj, "focus", "", ("", *CONV_KEYS)),
    )


def arrays(p: Params) -> tuple[np.ndarray, np.ndarray]:
    """The input and kernel: seeded random integers, ones, or the typed values."""
    rng = np.random.default_rng(p.seed)
    made: list[np.ndarray] = []
    for value, shape, low, high in ((p.x, (p.in_h, p.in_w), 0, 10), (p.w, (p.k_h, p.k_w), -3, 4)):
        if value == "random":
            made.append(rng.integers(low, high, size=shape))
        elif value == "ones":
            made.append(np.ones(shape, dtype=np.int64))
        else:
            arr = np.array(value, dtype=np.float64)
            made.append(arr.astype(np.int64) if np.array_equal(arr, np.round(arr)) else arr)
    return made[0], made[1]


def _forward(p: Params, x: np.ndarray, w: np.ndarray) -> tuple[ConvSpec, np.ndarray, list[dict]]:
    """``conv2d``: output ``o`` reads padded position ``read_positions[o][t]`` through tap
    ``t``, and that position holds the input pixel ``source_index`` names."""
    spec = make_spec(x.shape, w.shape, dtypes=(x.dtype, w.dtype), data_format="NCHW", **p.options)
    y = conv2d(x, w, **p.options)
    axes = []
    for a in range(2):
        n, k, lo, hi = spec.in_hw[a], spec.kernel_hw[a], *spec.pad[a]
        out = spec.out_hw[a]
        taps = np.arange(k)[::-1] if spec.flip else np.arange(k)  # the flip reverses the kernel
        positions = _shapes.read_positions(out, k, spec.stride[a], spec.dilation[a])
        axes.append(
            {
                "in": n, "k": k, "stride": spec.stride[a], "dilation": spec.dilation[a],
                "pad": [lo, hi], "out": out,
                "effective": spec.effective_kernel_hw[a],
                "source": source_index(n, lo, hi, spec.padding_mode).tolist(),
                "reads": [[[int(taps[t]), pos] for t, pos in enumerate(row)] for row in positions],
                "formula": _code.forward_formula("HW"[a], n, k, spec.stride[a], spec.dilation[a],
                                                 lo, hi, out),
            }
        )  # fmt: skip
    return spec, y, axes


def _transposed(p: Params, x: np.ndarray, w: np.ndarray) -> tuple[ConvSpec, np.ndarray, list[dict]]:
    """``conv2d_transpose``: output ``q`` gathers input ``o`` wherever the forward
    convolution on the output's size has output ``o`` read position ``q`` (its adjoint)."""
    import dilconv

    if p.flip:
        raise ApiError(
            422,
            "conv2d_transpose has no flip option: it is the adjoint of the correlation",
            field="flip",
            nearest=False,
        )
    if p.padding_mode != "zeros":
        raise ApiError(
            422,
            f"conv2d_transpose pads only with zeros, got padding_mode={p.padding_mode!r}",
            field="padding_mode",
            nearest="zeros",
        )
    opts = {"stride": p.options["stride"], "padding": p.padding, "dilation": p.options["dilation"]}
    y = np.asarray(dilconv.conv2d_transpose(x[None, None], w[None, None], **opts))[0, 0]
    spec = make_spec(y.shape, w.shape, dtypes=(y.dtype,), data_format="NCHW", **opts)
    axes = []
    for a in range(2):
        n, k, lo, hi, out = x.shape[a], w.shape[a], *spec.pad[a], y.shape[a]
        reads: list[list[list[int]]] = [[] for _ in range(out)]
        frame = source_index(out, lo, hi, "zeros")  # padded position -> output index
        for o, row in enumerate(_shapes.read_positions(n, k, spec.stride[a], spec.dilation[a])):
            for t, pos in enumerate(row):
                q = int(frame[pos])
                if q >= 0:
                    reads[q].append([t, o])
        axes.append(
            {
                "in": n, "k": k, "stride": spec.stride[a], "dilation": spec.dilation[a],
                "pad": [0, 0], "crop": [lo, hi], "out": out,
                "effective": spec.effective_kernel_hw[a],
                "source": list(range(n)), "reads": reads,
                "formula": _code.transposed_formula("HW"[a], n, k, spec.stride[a],
                                                    spec.dilation[a], lo, hi, out),
            }
        )  # fmt: skip
    return spec, y, axes


def compute(p: Params) -> dict[str, Any]:
    """Everything the page shows for one valid request (raises ValueError/TypeError if not)."""
    from dilconv import dilate_kernel

    x, w = arrays(p)
    spec, y, axes = (_transposed if p.transposed else _forward)(p, x, w)
    return {
        "mode": "transposed" if p.transposed else "forward",
        "x": x.tolist(),
        "w": w.tolist(),
        "w_dilated": dilate_kernel(w, (p.dilation_h, p.dilation_w)).tolist(),
        "y": y.tolist(),
        "dtype": str(y.dtype),
        "axes": axes,
        "code": _code.snippets(p, x, w, spec.pad, y.shape),
    }


#: Fields tried, in this order (the focused one first), for the nearest valid request.
_FIELDS = ("dilation_h", "dilation_w", "k_h", "k_w", "in_h", "in_w", "stride_h", "stride_w",
           "padding_mode", "padding", "flip", "transposed")  # fmt: skip


def _valid(p: Params) -> bool:
    try:
        compute(p)
    except (ValueError, TypeError, ApiError):
        return False
    return True


def _candidates(p: Params, field: str) -> list[Any]:
    """Values of ``field`` other than the current one, nearest first."""
    current = getattr(p, field)
    if field in LIMITS:
        lo, hi = LIMITS[field]
        steps = ((current - k, current + k) for k in range(1, hi - lo + 1))
        return [v for pair in steps for v in pair if lo <= v <= hi]
    if field == "padding_mode":
        return [m for m in ("zeros", "replicate", *PADDING_MODES) if m != current]
    if field == "padding":
        return [m for m in ("valid", "same", "full") if m != current]
    return [not current]


def nearest_valid(p: Params) -> tuple[str, Any] | None:
    """The field and value closest to ``p`` that make it valid, the focused field first."""
    for field in sorted(_FIELDS, key=lambda f: f != p.focus):
        for value in _candidates(p, field):
            if _valid(_replace(p, field, value)):
                return field, value
    return None


def _replace(p: Params, field: str, value: Any) -> Params:
    changes: dict[str, Any] = {field: value}
    if field in ("in_h", "in_w") and not isinstance(p.x, str):
        changes["x"] = "random"
    if field in ("k_h", "k_w") and not isinstance(p.w, str):
        changes["w"] = "random"
    return dataclasses.replace(p, **changes)


def conv_view(obj: dict[str, Any]) -> dict[str, Any]:
    """Answer ``POST /api/conv``: validate, compute, or explain why not (422)."""
    p = parse_conv(obj)
    try:
        return compute(p)
    except (ValueError, TypeError, ApiError) as err:
        problem = err
    # One change that makes the whole request valid; failing that (two things wrong at
    # once), the change that mends this problem, so the next answer names the other.
    found = nearest_valid(p)
    if found is None and isinstance(problem, ApiError) and problem.field is not None:
        found = problem.field, problem.nearest
    field, value = found if found else (None, None)
    message = problem.message if isinstance(problem, ApiError) else str(problem)
    raise ApiError(422, message, field=field, nearest=value)

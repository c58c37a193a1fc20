"""Arguments in, one frozen :class:`ConvSpec` out: every check on user input lives here.

Algorithms never see raw arguments. The public layer validates once, builds a
spec, and hands the algorithm the *lowered* spec (:meth:`ConvSpec.lowered`): a
zero-padded cross-correlation in the canonical layout, input ``(N, H, W, C)`` and
weights ``(kh, kw, C/groups, O)``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import operator
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from dilconv import _shapes
from dilconv._config import physical_memory_bytes

Pair = tuple[int, int]
Pads = tuple[tuple[int, int], tuple[int, int]]

DATA_FORMATS = ("NCHW", "NHWC")
PADDING_STRINGS = ("valid", "same", "full")
PADDING_MODES = ("zeros", "reflect", "replicate", "circular", "symmetric")
FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
#: The largest stride, dilation, padding or size option accepted: every size derived
#: from them (a product of two) then stays far inside int64.
MAX_OPTION = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """A validated 2-D convolution: every size, option and dtype, per axis as ``(h, w)``.

    ``pad`` is ``((top, bottom), (left, right))``. ``dtype`` is the accumulation
    dtype the algorithm computes in, ``out_dtype`` the dtype returned. ``x_ndim`` is
    the rank the caller gave (2, 3 or 4), so the result can be given back in kind.
    """

    batch: int
    in_channels: int
    out_channels: int
    groups: int
    in_hw: Pair
    kernel_hw: Pair
    stride: Pair
    dilation: Pair
    pad: Pads
    padding_mode: str = "zeros"
    flip: bool = False
    data_format: str = "NHWC"
    x_ndim: int = 4
    dtype: np.dtype = np.dtype(np.float64)
    out_dtype: np.dtype = np.dtype(np.float64)

    def __hash__(self) -> int:
        """The hash of the fields, made once: a call looks its spec up in several
        memos (plans, choices, row shares), and hashing fifteen fields, dtypes among
        them, each time cost more than the lookups."""
        found = self.__dict__.get("_hash")
        if found is None:
            found = hash(tuple(getattr(self, f.name) for f in dataclasses.fields(self)))
            self.__dict__["_hash"] = found  # frozen: written past __setattr__
        return found

    def __getstate__(self) -> dict[str, Any]:
        """The fields and the sizes derived from them, without the hash: another
        process hashes strings differently."""
        state = dict(self.__dict__)
        state.pop("_hash", None)
        return state

    @functools.cached_property
    def effective_kernel_hw(self) -> Pair:
        """The dilated kernel's extent ``dilation * (k - 1) + 1`` per axis."""
        (kh, kw), (dh, dw) = self.kernel_hw, self.dilation
        return _shapes.effective_size(kh, dh), _shapes.effective_size(kw, dw)

    @functools.cached_property
    def padded_hw(self) -> Pair:
        """Input size after padding."""
        (h, w), ((t, b), (lf, r)) = self.in_hw, self.pad
        return h + t + b, w + lf + r

    @functools.cached_property
    def out_hw(self) -> Pair:
        """Output spatial size."""
        return (
            _shapes.conv_out_size(
                self.in_hw[0], self.kernel_hw[0], self.stride[0], self.dilation[0], *self.pad[0]
            ),
            _shapes.conv_out_size(
                self.in_hw[1], self.kernel_hw[1], self.stride[1], self.dilation[1], *self.pad[1]
            ),
        )

    def tap_output_ranges(self, axis: int) -> list[tuple[int, int]]:
        """Per kernel index along ``axis`` (0: rows, 1: columns), the output indices
        ``[first, stop)`` where that tap reads real input (empty: ``first >= stop``)."""
        return [
            _shapes.tap_output_range(
                self.in_hw[axis],
                k,
                self.stride[axis],
                self.dilation[axis],
                self.pad[axis][0],
                self.out_hw[axis],
            )
            for k in range(self.kernel_hw[axis])
        ]

    @property
    def in_per_group(self) -> int:
        """Input channels each group reads."""
        return self.in_channels // self.groups

    @property
    def out_per_group(self) -> int:
        """Output channels each group writes."""
        return self.out_channels // self.groups

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the convolution (zero taps included)."""
        ho, wo = self.out_hw
        kh, kw = self.kernel_hw
        return self.batch * ho * wo * self.out_channels * self.in_per_group * kh * kw

    @functools.cached_property
    def out_shape(self) -> tuple[int, ...]:
        """The shape returned to the caller, in the caller's layout and rank."""
        ho, wo = self.out_hw
        if self.x_ndim == 2:
            return (ho, wo)
        if self.data_format == "NCHW":
            full: tuple[int, ...] = (self.batch, self.out_channels, ho, wo)
        else:
            full = (self.batch, ho, wo, self.out_channels)
        return full if self.x_ndim == 4 else full[1:]

    def lowered(self) -> ConvSpec:
        """The problem an algorithm solves: zero padding, correlation, canonical layout.

        A non-zero ``padding_mode`` is applied by the caller before the algorithm
        runs, so the lowered spec then has no padding and the padded input size.
        Built once per spec.
        """
        return _lowered(self)


@functools.lru_cache(maxsize=256)
def _lowered(spec: ConvSpec) -> ConvSpec:
    """:meth:`ConvSpec.lowered`, remembered."""
    if spec.padding_mode == "zeros":
        in_hw, pad = spec.in_hw, spec.pad
    else:
        in_hw, pad = spec.padded_hw, ((0, 0), (0, 0))
    return dataclasses.replace(
        spec,
        in_hw=in_hw,
        pad=pad,
        padding_mode="zeros",
        flip=False,
        data_format="NHWC",
        x_ndim=4,
    )


# --- scalar and tuple options ---------------------------------------------------------


def _scalar(value: Any) -> Any:
    """A 0-d array as its scalar (``padding=np.array(1)`` is 1); anything else as given."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    return value


def _refuse_text(name: str, value: Any) -> None:
    """Bytes and strings are sequences, but never a pair of ints (``b"\\x02\\x02"``)."""
    if isinstance(value, (str, bytes, bytearray, memoryview)):
        raise TypeError(
            f"{name} must be an int or a pair of ints, got {value!r} of type {type(value).__name__}"
        )


def as_int(name: str, value: Any, *, minimum: int) -> int:
    """An integer option (bools refused) from ``minimum`` to :data:`MAX_OPTION`."""
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} of type {type(value).__name__}")
    value = operator.index(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if value > MAX_OPTION:
        raise ValueError(f"{name} must be at most 2**31 - 1 = {MAX_OPTION}, got {value}")
    return value


def as_pair(name: str, value: Any, *, minimum: int) -> Pair:
    """An int or a pair of ints, each at least ``minimum``, as ``(h, w)``."""
    value = _scalar(value)
    _refuse_text(name, value)
    if isinstance(value, (Sequence, np.ndarray)):
        items = list(value)
        if len(items) != 2:
            raise ValueError(f"{name} must be an int or a pair (h, w), got {value!r}")
        h = as_int(f"{name}[0]", items[0], minimum=minimum)
        w = as_int(f"{name}[1]", items[1], minimum=minimum)
        return h, w
    v = as_int(name, value, minimum=minimum)
    return v, v


def as_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """A string option from a fixed list."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, one of {list(choices)}, got {value!r}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def parse_padding(padding: Any) -> str | Pads:
    """``padding`` as a lower-case keyword or ``((top, bottom), (left, right))``."""
    if isinstance(padding, str):
        key = padding.lower()
        if key == "causal":
            raise ValueError(
                "padding='causal' is for 1-D convolutions only (conv1d, conv1d_grad_*, "
                "nn.Conv1d), got it for a 2-D convolution; give the pads explicitly"
            )
        if key not in PADDING_STRINGS:
            raise ValueError(
                f"padding must be an int, a pair, a pair of pairs or one of "
                f"{list(PADDING_STRINGS)}, got {padding!r}"
            )
        return key
    padding = _scalar(padding)
    _refuse_text("padding", padding)
    if isinstance(padding, (Sequence, np.ndarray)):
        items = list(padding)
        if len(items) != 2:
            raise ValueError(
                f"padding must be an int, (ph, pw) or ((top, bottom), (left, right)), "
                f"got {padding!r}"
            )
        axes = []
        for axis, item in zip("hw", items, strict=True):
            item = _scalar(item)
            _refuse_text(f"padding[{'hw'.index(axis)}]", item)
            if isinstance(item, (Sequence, np.ndarray)):
                axes.append(as_pair(f"padding[{'hw'.index(axis)}]", item, minimum=0))
            else:
                p = as_int(f"padding[{'hw'.index(axis)}]", item, minimum=0)
                axes.append((p, p))
        return axes[0], axes[1]
    p = as_int("padding", padding, minimum=0)
    return (p, p), (p, p)


def resolve_pads(
    padding: str | Pads, in_hw: Pair, kernel_hw: Pair, stride: Pair, dilation: Pair
) -> Pads:
    """Turn a padding keyword into explicit pads for these sizes."""
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        return (
            _shapes.same_pads(in_hw[0], kernel_hw[0], stride[0], dilation[0]),
            _shapes.same_pads(in_hw[1], kernel_hw[1], stride[1], dilation[1]),
        )
    if padding == "full":
        return _shapes.full_pads(kernel_hw[0], dilation[0]), _shapes.full_pads(
            kernel_hw[1], dilation[1]
        )
    if isinstance(padding, str):
        raise ValueError(f"padding must be one of {list(PADDING_STRINGS)}, got {padding!r}")
    return padding


# --- arrays -----------------------------------------------------------------------------


#: The dtype characters of arrays taken as they are, in native byte order: float16,
#: float32, float64 and every integer.
_READY_CHARS = frozenset("efd" + np.typecodes["AllInteger"])


def as_array(name: str, value: Any) -> np.ndarray:
    """An array of real numbers: floats (16, 32, 64 bit) or integers (exact, int64).

    A big-endian (non-native) array is converted to native byte order, so results
    are native-endian. A masked array is refused: its mask would be lost.
    """
    if type(value) is np.ndarray:  # the usual case, in as few steps as can be
        dtype = value.dtype
        if dtype.char in _READY_CHARS and dtype.isnative:
            return value
    if value is None:
        raise TypeError(f"{name} must be an array, got None")
    if isinstance(value, np.ma.MaskedArray):
        raise TypeError(
            f"{name} is a masked array, whose mask a convolution would lose; pass "
            f"{name}.filled(0) to treat masked values as zeros, or {name}.data to use them"
        )
    arr = np.asarray(value)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    kind = arr.dtype.kind
    if kind == "f":
        if arr.dtype not in FLOAT_DTYPES:
            raise TypeError(
                f"{name} has dtype {arr.dtype}; expected float16, float32, float64 or an integer"
            )
        return arr
    if kind in "iu":
        return arr
    if kind == "b":
        raise TypeError(f"{name} has dtype bool; cast it to an integer or float type first")
    if kind == "c":
        raise TypeError(f"{name} has complex dtype {arr.dtype}; only real input is supported")
    raise TypeError(f"{name} has dtype {arr.dtype}; expected an array of real numbers")


def compute_dtypes(*dtypes: np.dtype) -> tuple[np.dtype, np.dtype]:
    """``(accumulate, result)`` dtypes: numpy's ``result_type``, float16 summed in float32.

    Integer input is exact: it is accumulated and returned as int64 (uint64 too:
    ``result_type(uint64, int64)`` would be float64), with :mod:`dilconv._exact`
    where int64 could overflow; its exact path passes ``object``, kept as is.
    """
    if all(np.dtype(d).kind in "iu" for d in dtypes):
        return np.dtype(np.int64), np.dtype(np.int64)
    result = np.result_type(*dtypes)
    if result.kind == "O":
        return result, result
    if result == np.float16:
        return np.dtype(np.float32), result
    return result, result


def split_layout(name: str, shape: tuple[int, ...], data_format: str) -> tuple[int, int, Pair]:
    """``(batch, channels, (h, w))`` of an input shape in a layout; ranks 2, 3, 4."""
    if len(shape) == 2:
        return 1, 1, (shape[0], shape[1])
    if len(shape) == 3:
        shape = (1, *shape)
    if len(shape) != 4:
        raise ValueError(
            f"{name} must be 2-D (H, W), 3-D or 4-D ({data_format}), "
            f"got {len(shape)}-D shape {shape}"
        )
    if data_format == "NCHW":
        n, c, h, w = shape
    else:
        n, h, w, c = shape
    return n, c, (h, w)


def split_weight(shape: tuple[int, ...], x_ndim: int, data_format: str) -> tuple[int, int, Pair]:
    """``(out_channels, in_per_group, (kh, kw))`` of a weight shape in a layout."""
    if x_ndim == 2:
        if len(shape) != 2:
            raise ValueError(f"w must be 2-D (kh, kw) when x is 2-D, got shape {shape}")
        return 1, 1, (shape[0], shape[1])
    if len(shape) != 4:
        expected = "(O, C/groups, kh, kw)" if data_format == "NCHW" else "(kh, kw, C/groups, O)"
        raise ValueError(f"w must be 4-D {expected} for {data_format} input, got shape {shape}")
    if data_format == "NCHW":
        o, cg, kh, kw = shape
    else:
        kh, kw, cg, o = shape
    return o, cg, (kh, kw)


def check_padding_mode_fits(mode: str, pad: Pads, in_hw: Pair) -> None:
    """Refuse pads that ``mode`` cannot fill from this input (PyTorch's rules)."""
    limits = {"reflect": 1, "circular": 0, "symmetric": 0}
    if mode not in limits:
        return
    for axis, ((lo, hi), size) in enumerate(zip(pad, in_hw, strict=True)):
        most = size - limits[mode]
        if max(lo, hi) > most:
            raise ValueError(
                f"padding {pad} is too wide for padding_mode={mode!r} on an input of "
                f"{'HW'[axis]}={size}: each side must be at most {most}"
            )


#: Specs remembered by :func:`make_spec` (the arguments of recent distinct calls).
SPEC_MEMO_SIZE = 256
_SPECS: dict[Hashable, ConvSpec] = {}


#: Option types whose value and type are a memo key as they are.
_FLAT = frozenset({int, str, bool})


def _memo_key(value: Any) -> Hashable:
    """``value`` with the type of every element (so ``1``, ``1.0`` and ``True`` differ:
    validation depends on types); TypeError for anything unhashable (an array)."""
    if isinstance(value, (tuple, list)):
        return (type(value), tuple(_memo_key(v) for v in value))
    hash(value)
    return (type(value), value)


def make_spec(
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    *,
    bias_shape: tuple[int, ...] | None = None,
    dtypes: Sequence[np.dtype] = (np.dtype(np.float64),),
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: Any = 1,
    padding_mode: Any = "zeros",
    data_format: Any = "NCHW",
    flip: Any = False,
    memory_check: bool = True,
) -> ConvSpec:
    """Validate every ``conv2d`` option against the shapes; return the spec.

    ``memory_check=False`` skips :func:`check_memory`, for callers (``dilconv.dask``)
    that never hold the whole output in memory. Arguments validated before (the
    same values of the same types) give back the spec built then: a call of a few
    milliseconds otherwise spends a tenth of a millisecond here, twice that when
    its code is no longer in the CPU's caches.
    """
    options = (stride, padding, dilation, groups, padding_mode, data_format, flip)
    shapes = (tuple(x_shape), tuple(w_shape), None if bias_shape is None else tuple(bias_shape))
    sizes = {*map(type, shapes[0]), *map(type, shapes[1]), *map(type, shapes[2] or ())}
    kinds = tuple(map(type, options))
    key: Hashable
    try:
        if not sizes <= {int}:
            key = None
        elif _FLAT.issuperset(kinds):  # the usual options: their types, without recursion
            key = (shapes, tuple(dtypes), options, kinds)
        else:
            key = (shapes, tuple(dtypes), _memo_key(options))
    except TypeError:
        key = None
    spec = None if key is None else _SPECS.get(key)
    if spec is None:
        spec = _build_spec(x_shape, w_shape, bias_shape, dtypes, *options)
        if key is not None:
            if len(_SPECS) >= SPEC_MEMO_SIZE:
                _SPECS.clear()
            _SPECS[key] = spec
    if memory_check:
        check_memory(spec)
    return spec


def _build_spec(
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    bias_shape: tuple[int, ...] | None,
    dtypes: Sequence[np.dtype],
    stride: Any,
    padding: Any,
    dilation: Any,
    groups: Any,
    padding_mode: Any,
    data_format: Any,
    flip: Any,
) -> ConvSpec:
    """:func:`make_spec` without the memory check or the memo."""
    data_format = as_choice("data_format", data_format, DATA_FORMATS)
    padding_mode = as_choice("padding_mode", padding_mode, PADDING_MODES)
    if not isinstance(flip, (bool, np.bool_)):
        raise TypeError(f"flip must be a bool, got {flip!r}")
    stride_hw = as_pair("stride", stride, minimum=1)
    dilation_hw = as_pair("dilation", dilation, minimum=1)
    n_groups = as_int("groups", groups, minimum=1)
    parsed_padding = parse_padding(padding)

    x_shape, w_shape = tuple(x_shape), tuple(w_shape)
    batch, channels, in_hw = split_layout("x", x_shape, data_format)
    out_ch, in_per_group, kernel_hw = split_weight(w_shape, len(x_shape), data_format)
    check_shapes(x_shape, w_shape, bias_shape, 2, n_groups, channels, out_ch, in_per_group)

    pad = resolve_pads(parsed_padding, in_hw, kernel_hw, stride_hw, dilation_hw)
    check_padding_mode_fits(padding_mode, pad, in_hw)
    accumulate, result = compute_dtypes(*dtypes)
    spec = ConvSpec(
        batch=batch,
        in_channels=channels,
        out_channels=out_ch,
        groups=n_groups,
        in_hw=in_hw,
        kernel_hw=kernel_hw,
        stride=stride_hw,
        dilation=dilation_hw,
        pad=pad,
        padding_mode=padding_mode,
        flip=bool(flip),
        data_format=data_format,
        x_ndim=len(x_shape),
        dtype=accumulate,
        out_dtype=result,
    )
    ho, wo = spec.out_hw
    if ho < 1 or wo < 1:
        (eh, ew), (ph, pw) = spec.effective_kernel_hw, spec.padded_hw
        raise ValueError(
            f"the dilated kernel ({eh}x{ew}: kernel {kernel_hw}, dilation {dilation_hw}) is "
            f"larger than the padded input ({ph}x{pw}); pad more, or use a smaller "
            "kernel or dilation"
        )
    return spec


#: The largest result (with the padded copy a padding mode needs) one call may
#: allocate, in bytes; None: half of this machine's physical memory, since the
#: result in the canonical layout and in the caller's may both be alive at once.
#: Raise it here (a setting of the same name, when there is one, sets this value).
OUTPUT_LIMIT_BYTES: int | None = None


def output_limit_bytes() -> int:
    """The output limit in bytes: :data:`OUTPUT_LIMIT_BYTES`, or half of physical memory."""
    if OUTPUT_LIMIT_BYTES is not None:
        return OUTPUT_LIMIT_BYTES
    return physical_memory_bytes() // 2


def size_text(nbytes: int) -> str:
    """Bytes as GiB, or MiB below one GiB.

    >>> size_text(3 * 2**30), size_text(2**19)
    ('3.0 GiB', '0.5 MiB')
    """
    if nbytes >= 2**30:
        return f"{nbytes / 2**30:.1f} GiB"
    return f"{nbytes / 2**20:.1f} MiB"


def check_result(what: str, shape: Sequence[int], itemsize: int, extra: int = 0) -> None:
    """Refuse, before allocating, a result of ``shape`` (plus ``extra`` scratch bytes)
    larger than :func:`output_limit_bytes`, naming the sizes and the setting."""
    need = math.prod(shape) * itemsize + extra
    limit = output_limit_bytes()
    if need > limit:
        raise ValueError(
            f"this call needs {size_text(need)} for its {what} {tuple(shape)}, more than "
            f"the output limit of {size_text(limit)} (dilconv._spec.OUTPUT_LIMIT_BYTES "
            f"raises it; by default half of this machine's "
            f"{size_text(physical_memory_bytes())}); use dilconv.dask for arrays "
            "larger than memory"
        )


def check_memory(spec: ConvSpec) -> None:
    """Refuse a call whose output (and padded input) would not fit the output limit.

    Run on every call, so the message is only written for a call it refuses.
    """
    padded = spec.batch * spec.in_channels * spec.padded_hw[0] * spec.padded_hw[1]
    pad_bytes = padded * spec.dtype.itemsize if spec.padding_mode != "zeros" else 0
    need = math.prod(spec.out_shape) * spec.dtype.itemsize + pad_bytes
    if need > output_limit_bytes():
        what = f"output (padding {spec.pad})"
        check_result(what, spec.out_shape, spec.dtype.itemsize, pad_bytes)


def input_shape(spec: ConvSpec) -> tuple[int, ...]:
    """The forward input's shape in the caller's layout and rank: what a transposed
    convolution or an input gradient returns."""
    h, w = spec.in_hw
    if spec.x_ndim == 2:
        return (h, w)
    if spec.data_format == "NCHW":
        full: tuple[int, ...] = (spec.batch, spec.in_channels, h, w)
    else:
        full = (spec.batch, h, w, spec.in_channels)
    return full if spec.x_ndim == 4 else full[1:]


def check_sizes_and_groups(
    x_shape: tuple[int, ...], w_shape: tuple[int, ...], rank: int, n_groups: int
) -> None:
    """No zero-size axis in ``x`` or ``w``, and one group for an input without a
    channel axis: the first checks of forward and transposed calls alike."""
    if 0 in x_shape:
        raise ValueError(f"x must have no zero-size dimension, got shape {x_shape}")
    if 0 in w_shape:
        raise ValueError(f"w must have no zero-size dimension, got shape {w_shape}")
    if len(x_shape) == rank and n_groups != 1:
        raise ValueError(f"groups must be 1 for {rank}-D input, got {n_groups}")


def check_shapes(
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    bias_shape: tuple[int, ...] | None,
    rank: int,
    n_groups: int,
    channels: int,
    out_ch: int,
    in_per_group: int,
) -> None:
    """The checks every rank makes of the arrays' shapes against ``groups``."""
    check_sizes_and_groups(x_shape, w_shape, rank, n_groups)
    if channels % n_groups:
        raise ValueError(
            f"groups={n_groups} must divide the input channels, got {channels} channels"
        )
    if out_ch % n_groups:
        raise ValueError(
            f"groups={n_groups} must divide the output channels of w, "
            f"got {out_ch} (w shape {w_shape})"
        )
    if in_per_group != channels // n_groups:
        raise ValueError(
            f"w shape {w_shape} has {in_per_group} input channels per group; x has "
            f"{channels} channels and groups={n_groups}, so expected {channels // n_groups}"
        )
    if bias_shape is not None and tuple(bias_shape) != (out_ch,):
        raise ValueError(f"bias must have shape ({out_ch},), got {tuple(bias_shape)}")

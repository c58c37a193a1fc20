"""Streaming causal dilated 1-D convolution: exact, block by block, many streams at once.

A causal convolution (Keras's ``padding="causal"``: ``dilation * (k - 1)`` zeros on
the left, none on the right) reads, for output ``t``, the inputs
``t * stride - dilation * (k - 1 - j)`` for taps ``j < k``: nothing later than
``t * stride``. So a stream that keeps the last ``dilation * (k - 1)`` inputs (the
*history*) can produce every output as soon as its newest input arrives, and the
outputs of any cut of a signal into blocks, concatenated, are the outputs of the
whole signal (Paine et al. 2016, *Fast Wavenet generation*, keep such a queue per
layer). :class:`Conv1dStream` is one such layer; ``dilconv.nn.Sequential.stream``
streams a whole stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from dilconv import _shapes
from dilconv._spec import FLOAT_DTYPES, as_array, as_choice, as_int, compute_dtypes
from dilconv.conv import conv2d

if TYPE_CHECKING:
    from dilconv._stream_stack import StackStream, stream_module

#: Layouts: activations ``(batch, C, n)`` with weights ``(O, C/groups, k)``, or
#: ``(batch, n, C)`` with ``(k, C/groups, O)``.
DATA_FORMATS = ("NCW", "NWC")

#: The dtypes a stream may keep its history in.
STREAM_DTYPES = (*FLOAT_DTYPES, np.dtype(np.int64))


def causal_outputs(phase: int, n: int, stride: int) -> int:
    """Outputs completed by ``n`` new samples when the next output's newest input is
    ``phase`` samples ahead: those ``t`` with ``phase + m * stride < n``.

    >>> [causal_outputs(0, n, 2) for n in range(5)], causal_outputs(1, 1, 2)
    ([0, 1, 1, 2, 2], 0)
    """
    return 0 if n <= phase else (n - phase - 1) // stride + 1


def next_phase(phase: int, n: int, stride: int) -> int:
    """The phase after ``n`` more samples (0 when an output has just completed).

    >>> next_phase(0, 3, 2), next_phase(1, 1, 2), next_phase(0, 4, 1)
    (1, 0, 0)
    """
    return (phase - n) % stride


def causal_taps(t: int, *, kernel_size: int, stride: int = 1, dilation: int = 1) -> list[int]:
    """The inputs causal output ``t`` reads: ``t * stride - dilation * (k - 1 - j)`` for
    taps ``j < k``, those before the signal's start (the zero padding) left out.

    >>> causal_taps(5, kernel_size=3, dilation=2), causal_taps(1, kernel_size=3, dilation=2)
    ([1, 3, 5], [1])
    """
    last = t * stride
    return [i for j in range(kernel_size) if (i := last - dilation * (kernel_size - 1 - j)) >= 0]


def causal_dependencies(t: int, layers: list[tuple[int, int, int]]) -> list[list[int]]:
    """Every position of every level that output ``t`` of a causal stack depends on.

    ``layers`` are ``(kernel_size, stride, dilation)`` from the input up; the result
    has one sorted list per level, the input's first and ``[t]`` last.

    >>> causal_dependencies(7, [(2, 1, 1), (2, 1, 2), (2, 1, 4)])[0]
    [0, 1, 2, 3, 4, 5, 6, 7]
    """
    levels = [[t]]
    for k, s, d in reversed(layers):
        below = {i for o in levels[0] for i in causal_taps(o, kernel_size=k, stride=s, dilation=d)}
        levels.insert(0, sorted(below))
    return levels


def _as_dtype(name: str, dtype: Any) -> np.dtype:
    try:
        out = np.dtype(dtype)
    except TypeError as err:
        raise TypeError(f"{name} must be a numpy dtype, got {dtype!r}") from err
    if out not in STREAM_DTYPES:
        raise ValueError(f"{name} must be one of float16, float32, float64, int64, got {out}")
    return out


class Conv1dStream:
    """A stateful causal dilated 1-D convolution fed a block of samples at a time.

    Parameters
    ----------
    w : array_like
        Weights ``(O, C/groups, k)`` for ``data_format="NCW"`` (PyTorch's), or
        ``(k, C/groups, O)`` for ``"NWC"`` (TensorFlow's).
    bias : array_like, optional
        ``(O,)``, added to every output sample.
    stride, dilation : int
        Step between output samples and between taps; each >= 1.
    groups : int
        Channel groups, as for :func:`dilconv.conv2d`.
    data_format : {"NCW", "NWC"}
        Layout of the blocks pushed and returned: ``(batch, C, n)`` or ``(batch, n, C)``.
    batch : int
        Number of independent streams, advanced together.
    dtype : numpy dtype, optional
        Of the history (pushed blocks are cast to it): float16, float32, float64 or
        int64. ``None``: that of ``w`` (int64 for integer weights, summed exactly).
    method : str
        The :func:`dilconv.conv2d` method each push runs (``"auto"``: chosen per call).

    Notes
    -----
    Output ``t`` reads inputs ``t * stride - dilation * (k - 1 - j)``, taps
    ``j < k``, zeros before the signal's start: Keras's causal padding, output
    length ``ceil(L / stride)``. Each stream keeps only its history, the last
    ``dilation * (k - 1)`` inputs (:attr:`history_size` values per channel), and
    the phase of the stride. Each :meth:`push` returns every output whose newest
    input it brought, so there is no ``flush()``: a causal output never waits for a
    later input, and none is left pending at the end of a signal. For every cut of
    a signal into blocks, the outputs of the pushes, concatenated, are the causal
    convolution of the whole signal: exactly for integers, and bit for bit for
    floats when the whole call uses the same ``method`` (``"direct"`` sums each
    output in the same order whatever the signal's length; other methods agree
    within rounding).

    Examples
    --------
    >>> import numpy as np
    >>> s = Conv1dStream(np.array([[[1, 10, 100]]]), dilation=2)
    >>> s.receptive_field, s.latency, s.history_size
    (5, 0, 4)
    >>> s.push(np.array([[[1, 2, 3]]])).tolist(), s.push(np.array([[[4, 5]]])).tolist()
    ([[[100, 200, 310]]], [[[420, 531]]])
    """

    def __init__(
        self,
        w: Any,
        bias: Any = None,
        *,
        stride: Any = 1,
        dilation: Any = 1,
        groups: Any = 1,
        data_format: str = "NCW",
        batch: Any = 1,
        dtype: Any = None,
        method: str = "auto",
    ) -> None:
        wa = as_array("w", w)
        self.data_format = as_choice("data_format", data_format, DATA_FORMATS)
        if wa.ndim != 3:
            layout = "(O, C/groups, k)" if self.data_format == "NCW" else "(k, C/groups, O)"
            raise ValueError(f"w must have 3 dimensions {layout}, got shape {wa.shape}")
        # canonical (O, C/groups, k); a view of the caller's array where possible
        w_ock = wa if self.data_format == "NCW" else wa.transpose(2, 1, 0)
        self.out_channels, cg, self.kernel_size = w_ock.shape
        if self.kernel_size < 1 or cg < 1 or self.out_channels < 1:
            raise ValueError(f"w must have no empty axis, got shape {wa.shape}")
        self.stride = as_int("stride", stride, minimum=1)
        self.dilation = as_int("dilation", dilation, minimum=1)
        self.groups = as_int("groups", groups, minimum=1)
        if self.out_channels % self.groups:
            raise ValueError(
                f"groups={self.groups} must divide the output channels, got {self.out_channels}"
            )
        self.channels = cg * self.groups
        self.batch = as_int("batch", batch, minimum=1)
        ba = None if bias is None else as_array("bias", bias)
        if ba is not None and ba.shape != (self.out_channels,):
            raise ValueError(f"bias must have shape ({self.out_channels},), got {ba.shape}")
        self.dtype = _as_dtype("dtype", compute_dtypes(wa.dtype)[1] if dtype is None else dtype)
        dtypes = [self.dtype, wa.dtype] + ([] if ba is None else [ba.dtype])
        self.out_dtype = compute_dtypes(*dtypes)[1]
        self.method = as_choice("method", method, ("auto", *_methods()))
        self._w = w_ock[:, :, None, :]  # (O, C/g, 1, k): shares the caller's array
        self._bias = ba
        self.history_size = _shapes.effective_size(self.kernel_size, self.dilation) - 1
        self._history = np.zeros((self.batch, self.channels, self.history_size), self.dtype)
        self._phase = 0

    @property
    def latency(self) -> int:
        """Samples of delay between an input and the first output that reads it: 0."""
        return 0

    @property
    def receptive_field(self) -> int:
        """Input samples each output reads: ``dilation * (k - 1) + 1``."""
        return self.history_size + 1

    def push(self, block: Any) -> np.ndarray:
        """The outputs completed by the next ``n >= 0`` samples of every stream.

        ``block`` is ``(batch, C, n)`` (``"NCW"``) or ``(batch, n, C)`` (``"NWC"``);
        the result is ``(batch, O, m)`` or ``(batch, m, O)`` with ``m`` the outputs
        whose newest input is in the block: ``m = n`` for stride 1, possibly 0 with
        a larger stride.
        """
        x = self._block("block", block)
        n, p = x.shape[2], self.history_size
        m = causal_outputs(self._phase, n, self.stride)
        buf = np.concatenate([self._history, x], axis=2) if p else x
        if m:
            start = self._phase  # the first output's newest input is buf[p + phase]
            y = conv2d(
                buf[:, :, None, start : start + p + (m - 1) * self.stride + 1],
                self._w,
                self._bias,
                stride=(1, self.stride),
                dilation=(1, self.dilation),
                groups=self.groups,
                method=self.method,
            )[:, :, 0, :]
        else:
            y = np.zeros((self.batch, self.out_channels, 0), self.out_dtype)
        if p:
            self._history = np.ascontiguousarray(buf[:, :, buf.shape[2] - p :])
        self._phase = next_phase(self._phase, n, self.stride)
        return y if self.data_format == "NCW" else np.ascontiguousarray(y.transpose(0, 2, 1))

    def reset(self, index: Any = None) -> None:
        """Forget the history: of every stream (``index=None``), or of stream ``index``.

        A single stream can be reset only at a stride boundary (after a multiple of
        ``stride`` samples), since all streams produce their outputs together.
        """
        if index is None:
            self._history[...] = 0
            self._phase = 0
            return
        k = as_int("index", index, minimum=-self.batch)
        if k >= self.batch:
            raise ValueError(f"index must be < batch={self.batch}, got {k}")
        if self._phase:
            raise ValueError(
                f"index={k}: one stream can be reset only at a stride boundary; the streams "
                f"are {self.stride - self._phase} sample(s) past one (stride={self.stride})"
            )
        self._history[k] = 0

    @property
    def state(self) -> dict[str, np.ndarray]:
        """A copy of the stream's state as plain arrays: ``history`` ``(batch, C, p)``
        (the last ``p = dilation * (k - 1)`` inputs, oldest first) and ``phase`` (a
        0-d int64). :meth:`load_state` takes it back, here or in another process
        (``numpy.savez(path, **stream.state)``)."""
        return {"history": self._history.copy(), "phase": np.array(self._phase, np.int64)}

    def load_state(self, state: Any) -> None:
        """Continue from a :attr:`state` (a mapping with ``history`` and ``phase``)."""
        try:
            history, phase = state["history"], state["phase"]
        except (KeyError, TypeError, IndexError) as err:
            raise TypeError(
                f"state must be a mapping with 'history' and 'phase', got {type(state).__name__}"
            ) from err
        history = as_array("state['history']", history)
        want = self._history.shape
        if history.shape != want:
            raise ValueError(f"state['history'] must have shape {want}, got {history.shape}")
        if not np.can_cast(history.dtype, self.dtype, "same_kind"):
            raise TypeError(f"state['history'] has dtype {history.dtype}; expected {self.dtype}")
        phase_arr = np.asarray(phase)
        if phase_arr.ndim != 0 or phase_arr.dtype.kind not in "iu":
            raise TypeError(f"state['phase'] must be an integer, got {phase!r}")
        ph = int(phase_arr)
        if not 0 <= ph < self.stride:
            raise ValueError(f"state['phase'] must be in [0, {self.stride}), got {ph}")
        self._history = np.array(history, dtype=self.dtype, copy=True)
        self._phase = ph

    def _block(self, name: str, block: Any) -> np.ndarray:
        """A pushed block, validated, as ``(batch, C, n)`` in the history's dtype."""
        x = as_array(name, block)
        if x.ndim != 3:
            layout = "(batch, C, n)" if self.data_format == "NCW" else "(batch, n, C)"
            raise ValueError(f"{name} must have 3 dimensions {layout}, got shape {x.shape}")
        if self.data_format == "NWC":
            x = x.transpose(0, 2, 1)
        if x.shape[:2] != (self.batch, self.channels):
            raise ValueError(
                f"{name} must have batch={self.batch} and C={self.channels} "
                f"({self.data_format}), got shape {np.shape(block)}"
            )
        if not np.can_cast(x.dtype, self.dtype, "same_kind"):
            raise TypeError(f"{name} has dtype {x.dtype}, which the {self.dtype} stream refuses")
        return x.astype(self.dtype, copy=False)

    def __repr__(self) -> str:
        return (
            f"Conv1dStream(C={self.channels}, O={self.out_channels}, k={self.kernel_size}, "
            f"stride={self.stride}, dilation={self.dilation}, groups={self.groups}, "
            f"batch={self.batch}, dtype={self.dtype})"
        )


def _methods() -> tuple[str, ...]:
    from dilconv._methods import METHODS

    return tuple(METHODS)


# A stack's stream (``Module.stream``) lives in its own module, which needs
# Conv1dStream from here: looked up on first use (PEP 562), so no import cycle.
_STACK = ("StackStream", "stream_module")


def __getattr__(name: str) -> Any:
    if name in _STACK:
        from dilconv import _stream_stack

        return getattr(_stream_stack, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Conv1dStream",
    "StackStream",
    "causal_dependencies",
    "causal_outputs",
    "causal_taps",
    "next_phase",
    "stream_module",
]

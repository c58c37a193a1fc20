"""``conv1d`` and ``conv3d``: ``conv2d``'s options per axis, on the 2-D engine.

Arguments -> :class:`~dilconv._spec_nd.SpecN` (one validation path for every
rank) -> the lifted problem of :mod:`dilconv._engine_nd` (a 1-D signal is one row
of a 2-D call; a volume is a sum over its depth taps of 2-D calls on stacks of
planes, added in place) -> the result in the caller's layout.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dilconv import _engine_nd
from dilconv._spec import as_array
from dilconv._spec_nd import SpecN, make_spec_nd


def array_spec_nd(
    rank: int, x: Any, w: Any, bias: Any, **options: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, SpecN]:
    """Validated arrays and the spec of one ``rank``-D call."""
    xa, wa = as_array("x", x), as_array("w", w)
    ba = None if bias is None else as_array("bias", bias)
    dtypes = [xa.dtype, wa.dtype] + ([] if ba is None else [ba.dtype])
    spec = make_spec_nd(
        rank,
        xa.shape,
        wa.shape,
        bias_shape=None if ba is None else ba.shape,
        dtypes=dtypes,
        **options,
    )
    return xa, wa, ba, spec


def run_conv_nd(
    x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, spec: SpecN, method: str
) -> np.ndarray:
    """Run a validated call of any rank; the shared path of ``conv1d`` and ``conv3d``."""
    xc = _engine_nd.pad_input(_engine_nd.to_channels_last(x, spec), spec)
    wc = _engine_nd.weight_to_channels_last(w, spec)
    y = _engine_nd.forward(xc, wc, _engine_nd.volume(spec), method)
    if bias is not None:
        y += bias.astype(spec.dtype)
    return _engine_nd.from_channels_last(y, spec)


def conv1d(
    x: Any,
    w: Any,
    bias: Any = None,
    *,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    data_format: str = "NCW",
    flip: bool = False,
    method: str = "auto",
) -> np.ndarray:
    """Dilated 1-D convolution (cross-correlation unless ``flip=True``).

    Parameters
    ----------
    x : array_like
        ``(N, C, L)`` or ``(C, L)`` for ``data_format="NCW"``; ``(N, L, C)`` or
        ``(L, C)`` for ``"NWC"``; or a plain ``(L,)`` signal with a ``(k,)`` kernel.
    w : array_like
        PyTorch's ``(O, C/groups, k)`` for NCW, TensorFlow's ``(k, C/groups, O)``
        for NWC, ``(k,)`` for a plain signal.
    bias : array_like, optional
        ``(O,)``.
    stride, dilation : int or (int,)
        Step between outputs, and between taps; each >= 1.
    padding : int, ((int, int),), (int,) or str
        Symmetric pads, ``((before, after),)``, or ``"valid"``, ``"same"``
        (TensorFlow's SAME), ``"full"`` or ``"causal"`` (see Notes).
    groups, padding_mode, flip, method
        As for :func:`dilconv.conv2d`; ``method`` names the 2-D algorithm that runs
        the signal as one row.
    data_format : {"NCW", "NWC"}
        Layout of ``x``, ``w`` and the result.

    Returns
    -------
    numpy.ndarray
        In the input's layout and rank; dtype as for :func:`dilconv.conv2d`.

    Notes
    -----
    The output length is ``floor((L + lo + hi - d * (k - 1) - 1) / s) + 1`` and
    output ``t`` reads padded input ``t * s + j * d`` through tap ``j``.

    ``padding="causal"`` is Keras's ``Conv1D(padding="causal")``: ``d * (k - 1)``
    zeros before the signal and none after, for every stride, then an ordinary
    (valid) convolution. There are ``ceil(L / s)`` outputs and output ``t`` reads
    inputs ``t * s - d * (k - 1), ..., t * s``: never one later than ``t * s``.
    Keras gives exactly these outputs at stride > 1 with dilation 1 (and at any
    dilation with stride 1); it refuses stride > 1 together with dilation > 1,
    which dilconv computes by the same rule.

    Examples
    --------
    >>> import numpy as np
    >>> conv1d(np.arange(6), np.array([1, 1]), dilation=2)
    array([2, 4, 6, 8])
    >>> conv1d(np.arange(6), np.array([1, 1]), dilation=2, padding="causal")
    array([0, 1, 2, 4, 6, 8])
    >>> conv1d(np.ones((2, 3, 50)), np.ones((4, 3, 3)), padding="same", dilation=4).shape
    (2, 4, 50)
    """
    xa, wa, ba, spec = array_spec_nd(
        1,
        x,
        w,
        bias,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        padding_mode=padding_mode,
        data_format=data_format,
        flip=flip,
    )
    return run_conv_nd(xa, wa, ba, spec, method)


def conv3d(
    x: Any,
    w: Any,
    bias: Any = None,
    *,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    data_format: str = "NCDHW",
    flip: bool = False,
    method: str = "auto",
) -> np.ndarray:
    """Dilated 3-D convolution (cross-correlation unless ``flip=True``).

    Computed as a sum over the kernel's depth taps: the input planes each tap
    reads, stacked on the batch axis, go through one 2-D convolution (``method``
    names its algorithm) whose result is added in place into the output planes;
    taps that read only padding are skipped. ``blocked`` runs every depth tap in
    one tile loop instead, adding in cache.

    Parameters
    ----------
    x : array_like
        ``(N, C, D, H, W)`` or ``(C, D, H, W)`` for ``"NCDHW"``; ``(N, D, H, W, C)``
        or ``(D, H, W, C)`` for ``"NDHWC"``; or a plain ``(D, H, W)`` volume with a
        ``(kd, kh, kw)`` kernel.
    w : array_like
        ``(O, C/groups, kd, kh, kw)`` for NCDHW, ``(kd, kh, kw, C/groups, O)`` for
        NDHWC, ``(kd, kh, kw)`` for a plain volume.
    bias : array_like, optional
        ``(O,)``.
    stride, dilation : int or (int, int, int)
        Per axis ``(d, h, w)``; each >= 1.
    padding : int, (int, int, int), three (before, after) pairs, or str
        ``"valid"``, ``"same"`` or ``"full"`` as in :func:`dilconv.conv2d`.
    groups, padding_mode, flip, method
        As for :func:`dilconv.conv2d`.
    data_format : {"NCDHW", "NDHWC"}
        Layout of ``x``, ``w`` and the result.

    Returns
    -------
    numpy.ndarray
        In the input's layout and rank; dtype as for :func:`dilconv.conv2d`.

    Notes
    -----
    Along each axis the output size is ``floor((i + lo + hi - d * (k - 1) - 1) / s) + 1``.

    Examples
    --------
    >>> import numpy as np
    >>> v = np.zeros((5, 5, 5), dtype=int)
    >>> v[2, 2, 2] = 1
    >>> conv3d(v, np.ones((2, 2, 2), dtype=int), dilation=2, padding=2)[:, 2, 2]
    array([0, 0, 1, 0, 1, 0, 0])
    >>> conv3d(np.ones((1, 2, 8, 8, 8)), np.ones((4, 2, 3, 3, 3)), padding="same").shape
    (1, 4, 8, 8, 8)
    """
    xa, wa, ba, spec = array_spec_nd(
        3,
        x,
        w,
        bias,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        padding_mode=padding_mode,
        data_format=data_format,
        flip=flip,
    )
    return run_conv_nd(xa, wa, ba, spec, method)


# --- shape helpers of every rank (called by dilconv.conv's, which keep the 2-D ones) ----------


def output_shape_nd(
    rank: int,
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    **options: Any,
) -> tuple[int, ...]:
    """:func:`dilconv.output_shape` for a ``rank``-D layout."""
    return make_spec_nd(rank, x_shape, w_shape, **options).out_shape

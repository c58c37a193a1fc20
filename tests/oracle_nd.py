"""The loop oracle of every rank: one output position, one tap at a time. Never optimise.

Written from the definition alone (NumPy's own padding for the padding modes,
``np.moveaxis`` for the layouts): output ``o`` of group ``g`` is the sum over taps
``t`` of ``x_padded[o * stride + t * dilation, group g channels] @ w[t, :, group g
outputs]`` per axis, i.e. unpadded input ``o * stride - pad_before + t * dilation``.
The transposed oracle writes each source position back through the same index.
"""

from __future__ import annotations

import itertools

import numpy as np

from dilconv._spec_nd import SpecN

_NUMPY_MODES = {
    "reflect": "reflect",
    "replicate": "edge",
    "circular": "wrap",
    "symmetric": "symmetric",
}


def activations_last(a: np.ndarray, spec: SpecN) -> np.ndarray:
    """``(N, *spatial, C)`` float64/int64 from the caller's layout and rank."""
    if spec.x_ndim == spec.rank:
        return a[None, ..., None]
    if spec.x_ndim == spec.rank + 1:
        a = a[None]
    return np.moveaxis(a, 1, -1) if spec.channels_first else a


def activations_back(a: np.ndarray, spec: SpecN) -> np.ndarray:
    """Inverse of :func:`activations_last`."""
    if spec.x_ndim == spec.rank:
        return a[0, ..., 0]
    if spec.channels_first:
        a = np.moveaxis(a, -1, 1)
    return a[0] if spec.x_ndim == spec.rank + 1 else a


def weights_last(w: np.ndarray, spec: SpecN) -> np.ndarray:
    """``(*kernel, C/groups, O)`` from the caller's weight layout, reversed when ``flip``."""
    if spec.x_ndim == spec.rank:
        w = w[..., None, None]
    elif spec.channels_first:
        w = np.moveaxis(w, (0, 1), (-1, -2))
    if spec.flip:
        w = w[(slice(None, None, -1),) * spec.rank]
    return w


def conv(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, spec: SpecN) -> np.ndarray:
    """The convolution ``spec`` describes, by loops, in the caller's layout."""
    acc = np.int64 if spec.dtype.kind in "iu" else np.float64
    xs = activations_last(x, spec).astype(acc)
    ws = weights_last(w, spec).astype(acc)
    widths = [(0, 0), *spec.pad, (0, 0)]
    if spec.padding_mode == "zeros":
        xp = np.pad(xs, widths)
    else:
        xp = np.pad(xs, widths, mode=_NUMPY_MODES[spec.padding_mode])
    cg, og = spec.in_per_group, spec.out_channels // spec.groups
    y = np.zeros((xs.shape[0], *spec.out_size, spec.out_channels), dtype=acc)
    for out in itertools.product(*(range(n) for n in spec.out_size)):
        for tap in itertools.product(*(range(k) for k in spec.kernel)):
            pos = tuple(
                o * s + t * d
                for o, t, s, d in zip(out, tap, spec.stride, spec.dilation, strict=True)
            )
            for g in range(spec.groups):
                xin = xp[(slice(None), *pos, slice(g * cg, (g + 1) * cg))]
                wt = ws[(*tap, slice(None), slice(g * og, (g + 1) * og))]
                y[(slice(None), *out, slice(g * og, (g + 1) * og))] += xin @ wt
    if bias is not None:
        y += bias.astype(acc)
    return activations_back(y, spec)


def conv_transpose(g: np.ndarray, w: np.ndarray, spec: SpecN) -> np.ndarray:
    """The adjoint of the zero-padded convolution ``spec``, by loops: ``g`` has the
    forward output's shape, the result the forward input's (caller's layout)."""
    assert spec.padding_mode == "zeros"
    acc = np.int64 if spec.dtype.kind in "iu" else np.float64
    gs = activations_last(g, spec).astype(acc)
    ws = weights_last(w, spec).astype(acc)
    cg, og = spec.in_per_group, spec.out_channels // spec.groups
    xp = np.zeros((gs.shape[0], *spec.padded_size, spec.in_channels), dtype=acc)
    for out in itertools.product(*(range(n) for n in spec.out_size)):
        for tap in itertools.product(*(range(k) for k in spec.kernel)):
            pos = tuple(
                o * s + t * d
                for o, t, s, d in zip(out, tap, spec.stride, spec.dilation, strict=True)
            )
            for grp in range(spec.groups):
                src = gs[(slice(None), *out, slice(grp * og, (grp + 1) * og))]
                wt = ws[(*tap, slice(None), slice(grp * og, (grp + 1) * og))]
                xp[(slice(None), *pos, slice(grp * cg, (grp + 1) * cg))] += src @ wt.T
    crop = tuple(slice(lo, lo + n) for (lo, _), n in zip(spec.pad, spec.in_size, strict=True))
    return activations_back(xp[(slice(None), *crop, slice(None))], spec)

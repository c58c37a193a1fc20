"""The weight gradient as one long matrix product per kernel tap, on pitched slabs.

``dw[i, j] = sum over pixels of x[p + offset(i, j)]^T g[p]``: the correlation of the
input with the output gradient, one ``(C, O)`` block per kernel tap. With stride 1
the input rows a band of output rows reads are copied once into a zero-padded slab
whose rows all have the padded width (the *pitch*), stored flat as ``(rows * pitch,
C)``, and the output gradient into a slab of the same pitch whose extra columns are
zero. Output pixel ``(r, c)`` is then flat row ``r * pitch + c`` of the gradient slab
and reads flat row ``r * pitch + c + i * dh * pitch + j * dw`` of the input slab
through tap ``(i, j)``: a constant offset. So each tap is one product of a
contiguous block of the input slab, transposed, with the whole gradient slab
(inner size: every pixel of the band), with no gather. The zero columns of the
gradient slab cancel the pitch's extra columns exactly.

It applies to stride 1 and one group, in float32/float64, where the pitch adds
little (:data:`MAX_PITCH_WASTE`): with a wide kernel on a small image (``aspp``)
most of the pitch is padding, and :mod:`dilconv.grad` keeps the forward engine's
``im2col`` on the swapped problem.
"""

from __future__ import annotations

import functools

import numpy as np

from dilconv._config import get_workspace_limit
from dilconv._methods import _kernels
from dilconv._padding import zero_padded_rows
from dilconv._spec import ConvSpec

#: Largest share of a slab row that is padding (``pitch / Wo - 1``) where this applies.
MAX_PITCH_WASTE = 0.15

#: Target bytes of one band's two slabs (larger bands only add memory).
BAND_BYTES = 64 * 2**20


def applies(spec: ConvSpec) -> bool:
    """Stride 1, one group, float32/float64, and a pitch close to the output width."""
    pitch, wo = spec.padded_hw[1], spec.out_hw[1]
    return (
        spec.stride == (1, 1)
        and spec.groups == 1
        and spec.dtype in (np.dtype(np.float32), np.dtype(np.float64))
        and wo > 0
        and spec.out_hw[0] > 0
        and pitch <= (1 + MAX_PITCH_WASTE) * wo
    )


def band_rows(spec: ConvSpec) -> int:
    """Output rows per band: the slabs under the target and the workspace limit."""
    pitch, item = spec.padded_hw[1], spec.dtype.itemsize
    halo = spec.effective_kernel_hw[0] - 1
    per_row = pitch * (spec.in_channels + spec.out_channels) * item
    budget = min(BAND_BYTES, get_workspace_limit()) - halo * pitch * spec.in_channels * item
    return int(min(spec.out_hw[0], max(1, budget // per_row)))


def workspace_bytes(spec: ConvSpec) -> int:
    """One band's input slab (with its halo) and gradient slab."""
    rows, pitch = band_rows(spec), spec.padded_hw[1]
    halo = spec.effective_kernel_hw[0] - 1
    items = (rows + halo) * pitch * spec.in_channels + rows * pitch * spec.out_channels
    return items * spec.dtype.itemsize


def grad_weight(x: np.ndarray, g: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """``dw`` ``(kh, kw, C, O)`` for NHWC ``x`` and ``g`` of a lowered (zero-padded) spec."""
    (kh, kw), (dh, dw) = spec.kernel_hw, spec.dilation
    (ho, wo), pitch = spec.out_hw, spec.padded_hw[1]
    c, o = spec.in_channels, spec.out_channels
    halo = spec.effective_kernel_hw[0] - 1
    taps = [(i, j) for i in range(kh) for j in range(kw)]
    starts = {(i, j): i * dh * pitch + j * dw for i, j in taps}  # each tap's offset
    out = np.zeros((kh, kw, c, o), dtype=spec.dtype)
    step = band_rows(spec)
    grad_slab = np.zeros((step, pitch, o), dtype=spec.dtype)
    threads = min(_kernels.num_threads(), len(taps))
    shares = [taps[k::threads] for k in range(threads)]
    for b in range(spec.batch):
        for r0 in range(0, ho, step):
            r1 = min(ho, r0 + step)
            slab = zero_padded_rows(x[b : b + 1], spec.pad, r0, r1 + halo)
            flat = slab.reshape(-1, c)
            grad_slab[: r1 - r0, :wo] = g[b, r0:r1]
            length = (r1 - r0 - 1) * pitch + wo  # up to the band's last real pixel
            grads = grad_slab.reshape(-1, o)[:length]

            with _kernels.single_threaded_blas():
                _kernels.parallel_map(
                    functools.partial(_add_tap_products, out, flat, grads, starts), shares
                )
    return out


def _add_tap_products(
    out: np.ndarray,
    flat: np.ndarray,
    grads: np.ndarray,
    starts: dict[tuple[int, int], int],
    share: list[tuple[int, int]],
) -> None:
    """``out[i, j] += flat[block of tap (i, j)].T @ grads`` for the taps in ``share``."""
    length = grads.shape[0]
    for i, j in share:
        out[i, j] += flat[starts[i, j] : starts[i, j] + length].T @ grads

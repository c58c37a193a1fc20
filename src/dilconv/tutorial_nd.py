"""The tutorial's experiment in 1-D and 3-D: a small integer signal or volume, an
asymmetric 3-tap (3x3x3) integer kernel, dilations 1 to 4, every route side by side.

The reference is the tutorial's method in that rank: dilate the kernel by hand
(zeros between the taps) and run an ordinary true convolution,
``scipy.signal.convolve`` (and ``np.convolve`` in 1-D). dilconv and the frameworks
compute the same thing with the dilation given to the operation and the kernel
flipped (they compute cross-correlation; ``flip=True`` in dilconv).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import signal

from dilconv import _shapes
from dilconv.convnd import conv1d, conv3d
from dilconv.tutorial import DilationResult, Route, RouteUnavailable


def dilate(kernel: np.ndarray, dilation: int) -> np.ndarray:
    """``d - 1`` zeros between neighbouring taps along every axis.

    >>> dilate(np.array([1, 2, 3]), 2)
    array([1, 0, 2, 0, 3])
    """
    shape = [_shapes.effective_size(k, dilation) for k in kernel.shape]
    out = np.zeros(shape, dtype=kernel.dtype)
    out[(slice(None, None, dilation),) * kernel.ndim] = kernel
    return out


def _reversed(kernel: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(kernel[(slice(None, None, -1),) * kernel.ndim], dtype=np.float64)


def scipy_route(x: np.ndarray, kernel: np.ndarray, dilation: int, padding: str) -> np.ndarray:
    """``scipy.signal.convolve(x, dilate(kernel))``: the tutorial's method in any rank."""
    return signal.convolve(x, dilate(kernel, dilation), mode=padding, method="direct")


def numpy_route(x: np.ndarray, kernel: np.ndarray, dilation: int, padding: str) -> np.ndarray:
    """``np.convolve(x, dilate(kernel))`` (1-D only)."""
    mode: Any = padding
    return np.convolve(x, dilate(kernel, dilation), mode=mode)


def dilconv_route(x: np.ndarray, kernel: np.ndarray, dilation: int, padding: str) -> np.ndarray:
    """``dilconv.conv1d`` / ``conv3d`` with ``flip=True``: the kernel as given."""
    fn = conv1d if x.ndim == 1 else conv3d
    return fn(x, kernel, dilation=dilation, padding=padding, flip=True)


def torch_route(x: np.ndarray, kernel: np.ndarray, dilation: int, padding: str) -> np.ndarray:
    """PyTorch ``F.conv1d`` / ``F.conv3d(dilation=d)`` with the kernel flipped by hand."""
    from dilconv.peers.torch import framework

    torch = framework()
    fn = torch.nn.functional.conv1d if x.ndim == 1 else torch.nn.functional.conv3d
    xt = torch.tensor(np.asarray(x, dtype=np.float64))[None, None]
    kt = torch.tensor(_reversed(kernel))[None, None]
    return fn(xt, kt, padding=padding, dilation=dilation)[0, 0].numpy()


def tf_route(x: np.ndarray, kernel: np.ndarray, dilation: int, padding: str) -> np.ndarray:
    """``tf.nn.conv1d`` / ``tf.nn.conv3d(dilations=d)`` with the kernel flipped by hand.

    TensorFlow's CPU Conv3D refuses dilation > 1: the refusal is reported, with its
    message, as this route's result.
    """
    from dilconv.peers.tensorflow import framework

    tf = framework()
    xt = np.asarray(x, dtype=np.float64)[None, ..., None]
    kt = _reversed(kernel)[..., None, None]
    try:
        if x.ndim == 1:
            y = tf.nn.conv1d(xt, kt, stride=1, padding=padding.upper(), dilations=dilation)
        else:
            y = tf.nn.conv3d(
                xt, kt, strides=[1] * 5, padding=padding.upper(), dilations=[1, *[dilation] * 3, 1]
            )
    except Exception as err:  # TensorFlow's own error types
        from dilconv.peers._base import first_sentence

        raise RouteUnavailable(f"refused by TensorFlow: {first_sentence(str(err))}") from err
    return np.asarray(y)[0, ..., 0]


def jax_route(x: np.ndarray, kernel: np.ndarray, dilation: int, padding: str) -> np.ndarray:
    """JAX ``lax.conv_general_dilated(rhs_dilation=d)`` with the kernel flipped by hand."""
    from dilconv.peers.jax import framework

    jax = framework()
    xt = np.asarray(x, dtype=np.float32)[None, None]
    kt = _reversed(kernel).astype(np.float32)[None, None]
    y = jax.lax.conv_general_dilated(
        xt, kt, (1,) * x.ndim, padding.upper(), rhs_dilation=(dilation,) * x.ndim
    )
    return np.asarray(y, dtype=np.float64)[0, 0]


def routes(rank: int) -> list[Route]:
    """The experiment's routes in ``rank`` dimensions (peers report a missing install)."""
    name = f"conv{rank}d"
    found = [Route("signal.convolve(dilated kernel)", scipy_route)]
    if rank == 1:
        found.append(Route("np.convolve(dilated kernel)", numpy_route))
    return [
        *found,
        Route(f"dilconv.{name}(flip=True)", dilconv_route),
        Route(f"torch F.{name}(dilation=d, flipped)", torch_route),
        Route(f"tf.nn.{name}(dilations=d, flipped)", tf_route),
        Route("jax conv_general_dilated(rhs_dilation=d, flipped)", jax_route),
    ]


def inputs(rank: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A small integer signal or volume and an asymmetric 3-tap integer kernel."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 10, size=(size,) * rank)
    kernel = rng.integers(-3, 4, size=(3,) * rank)
    while np.array_equal(kernel, kernel[(slice(None, None, -1),) * rank]):  # the flip matters
        kernel = rng.integers(-3, 4, size=(3,) * rank)
    return x, kernel


def default_size(rank: int, dilations: Sequence[int]) -> int:
    """A size every dilation fits in with ``valid`` padding (longer for a signal)."""
    fits = _shapes.effective_size(3, max(dilations)) + 2
    return max(16, fits + 6) if rank == 1 else max(6, fits)


def run_experiment(
    x: np.ndarray,
    kernel: np.ndarray,
    dilations: Sequence[int],
    padding: str = "valid",
    route_list: Sequence[Route] | None = None,
) -> list[DilationResult]:
    """Run every route at every dilation and compare them pairwise.

    Examples
    --------
    >>> x, k = inputs(1, 16, seed=0)
    >>> [r.max_difference for r in run_experiment(x, k, [1, 2], route_list=routes(1)[:3])]
    [0.0, 0.0]
    """
    chosen = routes(x.ndim) if route_list is None else route_list
    found = []
    for d in dilations:
        results: dict[str, np.ndarray] = {}
        unavailable: dict[str, str] = {}
        for route in chosen:
            try:
                results[route.label] = np.asarray(route.compute(x, kernel, d, padding))
            except RouteUnavailable as missing:
                unavailable[route.label] = str(missing)
        labels = list(results)
        differences = {
            (a, b): float(np.abs(results[a].astype(np.float64) - results[b]).max())
            if results[a].shape == results[b].shape
            else float("inf")
            for i, a in enumerate(labels)
            for b in labels[i + 1 :]
        }
        found.append(DilationResult(d, dilate(kernel, d), results, unavailable, differences))
    return found

"""The tutorial's experiment: one integer matrix, one 3x3 kernel, dilations 1 to 4.

The reference route is the tutorial's NumPy method: build the dilated kernel and
run an ordinary true convolution (``scipy.signal.convolve2d``). Every other route
computes the same thing its own way; the experiment reports each result and the
largest difference between every pair of routes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
from scipy import signal

from dilconv import _shapes
from dilconv._kernel import dilate_kernel
from dilconv.conv import conv2d

#: A route computes the true (flipped-kernel) convolution of 2-D ``x`` with 2-D
#: ``kernel`` at ``dilation`` with ``padding`` ("valid" or "same").
RouteFn = Callable[[np.ndarray, np.ndarray, int, str], np.ndarray]


class RouteUnavailable(RuntimeError):
    """A route whose library is not installed; the message says how to install it."""


@dataclasses.dataclass(frozen=True)
class Route:
    """One way of computing the experiment."""

    label: str
    compute: RouteFn


def tutorial_route(x: np.ndarray, kernel: np.ndarray, dilation: int, padding: str) -> np.ndarray:
    """The tutorial's NumPy method: ``convolve2d(x, dilate_kernel(kernel, d))``."""
    return signal.convolve2d(x, dilate_kernel(kernel, dilation), mode=padding)


def dilconv_route(x: np.ndarray, kernel: np.ndarray, dilation: int, padding: str) -> np.ndarray:
    """``dilconv.conv2d(flip=True)``: the original kernel, the dilation given to the op."""
    return conv2d(x, kernel, dilation=dilation, padding=padding, flip=True)


NUMPY_ROUTES = (
    Route("convolve2d(dilate_kernel)", tutorial_route),
    Route("dilconv.conv2d(flip=True)", dilconv_route),
)


def _nhwc(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)[None, :, :, None]


def _hwio(kernel: np.ndarray) -> np.ndarray:
    return np.asarray(kernel, dtype=np.float64)[:, :, None, None]


def tf_conv2d_route(x: np.ndarray, kernel: np.ndarray, dilation: int, padding: str) -> np.ndarray:
    """``tf.nn.conv2d(dilations=d)`` with the kernel flipped by hand (the tutorial's point 6)."""
    from dilconv.peers.tensorflow import framework

    tf = framework()
    y = tf.nn.conv2d(
        _nhwc(x), _hwio(kernel[::-1, ::-1]), strides=1, padding=padding.upper(), dilations=dilation
    )
    return np.asarray(y)[0, :, :, 0]


def tf_atrous_route(x: np.ndarray, kernel: np.ndarray, dilation: int, padding: str) -> np.ndarray:
    """``tf.nn.atrous_conv2d(rate=d)`` with the kernel flipped by hand."""
    from dilconv.peers.tensorflow import framework

    tf = framework()
    y = tf.nn.atrous_conv2d(
        _nhwc(x), _hwio(kernel[::-1, ::-1]), rate=dilation, padding=padding.upper()
    )
    return np.asarray(y)[0, :, :, 0]


def torch_conv2d_route(
    x: np.ndarray, kernel: np.ndarray, dilation: int, padding: str
) -> np.ndarray:
    """PyTorch ``F.conv2d(dilation=d)`` with the kernel flipped by hand."""
    from dilconv.peers.torch import framework

    torch = framework()
    xt = torch.tensor(np.asarray(x, dtype=np.float64))[None, None]
    kt = torch.tensor(np.ascontiguousarray(kernel[::-1, ::-1], dtype=np.float64))[None, None]
    return torch.nn.functional.conv2d(xt, kt, padding=padding, dilation=dilation)[0, 0].numpy()


def tf_unflipped_route(
    x: np.ndarray, kernel: np.ndarray, dilation: int, padding: str
) -> np.ndarray:
    """``tf.nn.conv2d(dilations=d)`` with the kernel as given: cross-correlation."""
    return tf_conv2d_route(x, kernel[::-1, ::-1], dilation, padding)


PEER_ROUTES = (
    Route("tf.nn.conv2d(dilations=d, flipped)", tf_conv2d_route),
    Route("tf.nn.atrous_conv2d(rate=d, flipped)", tf_atrous_route),
    Route("torch F.conv2d(dilation=d, flipped)", torch_conv2d_route),
)


def flip_check(
    x: np.ndarray, kernel: np.ndarray, dilations: Sequence[int], padding: str = "valid"
) -> dict[int, float]:
    """``max |tf.nn.conv2d(unflipped kernel) - convolve2d(dilate_kernel)|`` per dilation.

    Non-zero for an asymmetric kernel: TensorFlow computes cross-correlation, so
    the kernel must be flipped by hand to get the tutorial's true convolution.
    Raises :class:`RouteUnavailable` when TensorFlow is not installed.
    """
    return {
        d: float(
            np.abs(
                tf_unflipped_route(x, kernel, d, padding) - tutorial_route(x, kernel, d, padding)
            ).max()
        )
        for d in dilations
    }


@dataclasses.dataclass(frozen=True)
class DilationResult:
    """Everything the experiment found at one dilation."""

    dilation: int
    dilated_kernel: np.ndarray
    results: dict[str, np.ndarray]
    unavailable: dict[str, str]
    differences: dict[tuple[str, str], float]

    @property
    def max_difference(self) -> float:
        """Largest absolute difference between any two routes."""
        return max(self.differences.values(), default=0.0)


def inputs(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The experiment's small integer matrix and asymmetric 3x3 integer kernel."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 10, size=(size, size))
    kernel = rng.integers(-3, 4, size=(3, 3))
    while np.array_equal(kernel, kernel[::-1, ::-1]):  # the flip must matter
        kernel = rng.integers(-3, 4, size=(3, 3))
    return x, kernel


def default_size(dilations: Sequence[int]) -> int:
    """A matrix size that every dilation fits in with ``valid`` padding."""
    return max(8, _shapes.effective_size(3, max(dilations)) + 2)


def run_experiment(
    x: np.ndarray,
    kernel: np.ndarray,
    dilations: Sequence[int],
    padding: str = "valid",
    routes: Sequence[Route] = NUMPY_ROUTES,
) -> list[DilationResult]:
    """Run every route at every dilation and compare them pairwise.

    Examples
    --------
    >>> x, k = inputs(8, seed=0)
    >>> [r.max_difference for r in run_experiment(x, k, [1, 2])]
    [0.0, 0.0]
    """
    found = []
    for d in dilations:
        results: dict[str, np.ndarray] = {}
        unavailable: dict[str, str] = {}
        for route in routes:
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
        found.append(DilationResult(d, dilate_kernel(kernel, d), results, unavailable, differences))
    return found

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

from dilconv._kernel import dilate_kernel, effective_kernel_size
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
    return max(8, int(effective_kernel_size(3, max(dilations))) + 2)


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

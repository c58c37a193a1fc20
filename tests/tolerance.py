"""The one tolerance table, by dtype, and the comparison every test uses.

Errors are measured against a magnitude bound rather than the answer itself: a
sum of products can cancel to nearly zero while each term rounds at the scale of
``sum |x| |w|``. So ``|actual - expected| <= atol + rtol * magnitude`` where
``magnitude`` is the same operation run on absolute values (default: ``|expected|``).
"""

from __future__ import annotations

import numpy as np

#: dtype -> (values rtol, values atol, gradients rtol, gradients atol)
TOLERANCE: dict[np.dtype, tuple[float, float, float, float]] = {
    np.dtype(np.float16): (4e-3, 1e-3, 8e-3, 2e-3),
    np.dtype(np.float32): (2e-6, 1e-6, 1e-5, 1e-6),
    np.dtype(np.float64): (1e-13, 1e-13, 1e-12, 1e-12),
    np.dtype(np.int64): (0.0, 0.0, 0.0, 0.0),
}


def tolerance(dtype: np.dtype, kind: str = "values") -> tuple[float, float]:
    """``(rtol, atol)`` for a dtype; ``kind`` is "values" or "gradients"."""
    rv, av, rg, ag = TOLERANCE[np.dtype(dtype)]
    return (rv, av) if kind == "values" else (rg, ag)


def assert_close(
    actual: np.ndarray,
    expected: np.ndarray,
    *,
    dtype: np.dtype | None = None,
    magnitude: np.ndarray | None = None,
    kind: str = "values",
    context: str = "",
) -> None:
    """Shape, then dtype, then values within the table's tolerance."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape} {context}"
    want = np.dtype(dtype) if dtype is not None else expected.dtype
    assert actual.dtype == want, f"dtype {actual.dtype} != {want} {context}"
    rtol, atol = tolerance(want, kind)
    scale = np.abs(expected) if magnitude is None else np.abs(magnitude)
    err = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    bound = atol + rtol * scale.astype(np.float64)
    worst = np.unravel_index(np.argmax(err - bound), err.shape) if err.size else ()
    assert np.all(err <= bound), (
        f"max error {err.max():.3g} exceeds tolerance (rtol={rtol}, atol={atol}) at {worst}: "
        f"actual {actual[worst]!r}, expected {expected[worst]!r} {context}"
    )

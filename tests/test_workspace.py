"""The workspace bound: chunked algorithms stay under it, whatever the input size."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import dilconv

LIMIT = 2**20  # 1 MiB, the smallest bound allowed


@pytest.mark.parametrize("method", ["im2col", "shift_add"])
def test_chunked_methods_stay_under_the_bound(method: str) -> None:
    rng = np.random.default_rng(0)
    # NHWC float64 input needs no layout copy, so all that is allocated is output + workspace
    x = rng.standard_normal((2, 96, 96, 16))
    w = rng.standard_normal((3, 3, 16, 16))
    out_bytes = 2 * 96 * 96 * 16 * 8
    gathered = 2 * 96 * 96 * 9 * 16 * 8  # what an unchunked im2col would gather: 21 MiB
    # A first call imports what the method uses (SciPy's BLAS, loaded on first use so
    # that ``import dilconv`` stays light): modules, not workspace, so not traced.
    dilconv.conv2d(x[:1, :8, :8], w, padding="same", data_format="NHWC", method=method)
    with dilconv.workspace_limit(LIMIT):
        tracemalloc.start()
        y = dilconv.conv2d(x, w, padding="same", dilation=3, data_format="NHWC", method=method)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    extra = peak - out_bytes
    assert extra <= LIMIT + 256 * 2**10, f"{method} used {extra / 2**20:.2f} MiB beyond its output"
    assert gathered > 10 * LIMIT  # the bound really was binding
    expected = dilconv.conv2d(
        x[:1, :20, :20], w, padding="same", dilation=3, data_format="NHWC", method="direct"
    )
    small = dilconv.conv2d(
        x[:1, :20, :20], w, padding="same", dilation=3, data_format="NHWC", method=method
    )
    np.testing.assert_allclose(small, expected, rtol=1e-12, atol=1e-12)
    assert y.shape == (2, 96, 96, 16)


def test_auto_skips_methods_over_the_bound() -> None:
    x, w = np.ones((1, 64, 64, 8)), np.ones((3, 3, 8, 8))
    with dilconv.workspace_limit(LIMIT):
        name = dilconv.choose_method(x, w, padding="same", data_format="NHWC")
        spec = dilconv._spec.make_spec(x.shape, w.shape, padding="same", data_format="NHWC")
        need = dilconv._methods.METHODS[name].workspace_bytes(spec.lowered())
        assert need <= LIMIT

"""Never unbounded: work independent of dilation, stride and padding values; memory
checked before allocating, with a message that names the sizes and the setting."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import dilconv
import dilconv.dask
from dilconv import _shapes, _spec

#: Every entry point with dilation or stride 10**9 and padding="same". Each answers
#: in well under a second; the child's timeout is generous (imports and a loaded
#: machine), and a hang (the old phase loop never finished) fails it.
HUGE = textwrap.dedent(
    """
    import sys
    import numpy as np, dask.array as da
    import dilconv, dilconv.dask
    B = 10**9
    x4, w4 = np.ones((1, 2, 16, 16)), np.ones((3, 2, 3, 3))
    OPTIONS = ({"dilation": B}, {"stride": B}, {"dilation": (B, 1)}, {"dilation": (1, B)},
               {"stride": B, "dilation": B})
    for opts in OPTIONS:
        y = dilconv.conv2d(x4, w4, padding="same", **opts)
        assert y.shape[:2] == (1, 3), y.shape
        for method in ("shift_add", "im2col", "space_to_batch", "tap_gemm", "blocked", "winograd"):
            try:  # each named method answers or refuses at once
                dilconv.conv2d(x4, w4, padding="same", method=method, **opts)
            except ValueError as refusal:
                assert "cannot compute" in str(refusal) or "workspace" in str(refusal)
        dilconv.choose_method(x4, w4, padding="same", **opts)
        try:  # "same" with stride 10**9: a 16e9-row output, refused before allocating
            dilconv.conv2d_transpose(x4, w4.transpose(1, 0, 2, 3), padding="same", **opts)
        except ValueError as refusal:
            assert "output limit" in str(refusal) and "stride" in opts
        g = np.ones(dilconv.output_shape(x4.shape, w4.shape, padding="same", **opts))
        dilconv.conv2d_grad_input(g, w4, x4.shape, padding="same", **opts)
        dilconv.conv2d_grad_weight(x4, g, w4.shape, padding="same", **opts)
    dilconv.conv2d(np.ones((5, 5)), np.ones((1, 3)), dilation=(10000, 1))
    dilconv.conv2d(np.ones((64, 64)), np.ones((3, 3)), dilation=B, padding="same")
    dilconv.atrous_conv2d(np.ones((1, 16, 16, 2)), np.ones((3, 3, 2, 2)), B, "SAME")
    xd = da.ones((64, 64), chunks=32)
    dilconv.dask.conv2d(xd, np.ones((3, 3)), dilation=B, padding="same").compute()
    np.save(sys.argv[1] + "/x.npy", np.ones((1, 2, 16, 16)))
    np.save(sys.argv[1] + "/k.npy", np.ones((3, 2, 3, 3)))
    """
)


def test_huge_dilation_and_stride_answer_at_once(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-c", HUGE, str(tmp_path)], check=True, timeout=120)
    cli = [sys.executable, "-m", "dilconv", "conv", str(tmp_path / "x.npy")]
    cli += [str(tmp_path / "k.npy"), str(tmp_path / "y.npy"), "--padding", "same"]
    subprocess.run([*cli, "--dilation", str(10**9)], check=True, timeout=60)
    assert np.load(tmp_path / "y.npy").shape == (1, 3, 16, 16)


@given(out=st.integers(0, 40), s=st.integers(1, 9), d=st.integers(1, 30))
def test_dilation_phases_are_the_residues_outputs_have(out: int, s: int, d: int) -> None:
    phases = _shapes.dilation_phases(out, s, d)
    seen = sorted(o for p in phases for o in range(p.out_first, out, p.out_step))
    assert seen == list(range(out))  # every output once
    assert [p.residue for p in phases] == sorted({(o * s) % d for o in range(out)})
    for p in phases:
        assert p.count == len(range(p.out_first, out, p.out_step))
        assert (p.out_first * s) % d == p.residue
        assert p.sub_first * d + p.residue == p.out_first * s
        assert p.inner_stride * d == p.out_step * s


def test_dilation_phases_never_loop_over_the_dilation() -> None:
    assert len(_shapes.dilation_phases(5, 1, 10**12)) == 5  # the old search never ended


def test_transposed_output_is_checked_before_allocating(monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's calls: stride 10**5 reached NumPy's 'Unable to allocate 1.96 TiB'."""
    with pytest.raises(ValueError, match=r"GiB for its output \(300003, 300003\), more than"):
        dilconv.conv2d_transpose(np.ones((4, 4)), np.ones((3, 3)), stride=10**5)
    monkeypatch.setattr(_spec, "OUTPUT_LIMIT_BYTES", 2**30)  # stride 10**4 needs 6.7 GiB
    said = r"6\.7 GiB .* \(30003, 30003\), more than the output limit of 1\.0 GiB \(dilconv"
    with pytest.raises(ValueError, match=said + r"._spec.OUTPUT_LIMIT_BYTES raises it"):
        dilconv.conv2d_transpose(np.ones((4, 4)), np.ones((3, 3)), stride=10**4)
    with pytest.raises(ValueError, match=r"input gradient \(1, 1, 30003, 30003\)"):
        dilconv.conv2d_grad_input(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)),
                                  (1, 1, 30003, 30003), stride=10**4)  # fmt: skip
    with pytest.raises(ValueError, match=r"weight gradient \(1, 1, 20000, 20000\)"):
        dilconv.conv2d_grad_weight(np.ones((1, 1, 4, 4)), np.ones((1, 1, 1, 1)),
                                   (1, 1, 20000, 20000), padding=9998)  # fmt: skip


def test_output_limit_covers_the_padded_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_spec, "OUTPUT_LIMIT_BYTES", 2**20)
    x = np.ones((300, 300))  # 0.7 MiB, padded copy in reflect mode 0.7 MiB more
    assert dilconv.conv2d(x, np.ones((3, 3)), padding=1).shape == (300, 300)
    with pytest.raises(ValueError, match=r"output \(padding .*\) \(300, 300\), more than the"):
        dilconv.conv2d(x, np.ones((3, 3)), padding=1, padding_mode="reflect")
    assert _spec.output_limit_bytes() == 2**20
    monkeypatch.setattr(_spec, "OUTPUT_LIMIT_BYTES", None)
    assert _spec.output_limit_bytes() == _spec.physical_memory_bytes() // 2


def test_dask_never_builds_the_zero_padding() -> None:
    """64x64, dilation 10000, "same": the padding was 20064x20064 (6.5 GB peak)."""
    x = np.random.default_rng(1).standard_normal((64, 64))
    w = np.random.default_rng(2).standard_normal((3, 3))
    y = dilconv.dask.conv2d(da.from_array(x, chunks=32), w, dilation=10000, padding="same")
    tracemalloc.start()
    try:
        result = y.compute(scheduler="sync")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    np.testing.assert_array_equal(result, x * w[1, 1])


def test_dask_windows_at_the_edges_read_padding_only() -> None:
    """Output chunks whose every tap reads padding get the bias alone."""
    x = np.arange(36.0).reshape(1, 1, 6, 6)
    w, b = np.ones((2, 1, 2, 2)), np.array([0.5, -2.0])
    options = {"dilation": 7, "padding": "full", "stride": 2}
    expected = dilconv.conv2d(x, w, b, **options)
    y = dilconv.dask.conv2d(da.from_array(x, chunks=(1, 1, 2, 3)), w, b, **options)
    np.testing.assert_array_equal(y.compute(scheduler="sync"), expected)


def test_dask_refuses_windows_larger_than_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_spec, "OUTPUT_LIMIT_BYTES", 2**20)
    x = da.ones((4, 1000, 1000), chunks=(4, 100, 100))
    with pytest.raises(ValueError, match=r"read a .* window of the input .* smaller input chunks"):
        dilconv.dask.conv2d(x, np.ones((2, 4, 3, 3)), dilation=200, padding="same")


def test_dask_window_limit_counts_one_chunk_of_the_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """64 images of 32 KiB in chunks of one: each window is 32 KiB, not the batch's 2 MiB."""
    monkeypatch.setattr(_spec, "OUTPUT_LIMIT_BYTES", 2**20)
    x = np.random.default_rng(4).standard_normal((64, 1, 64, 64))
    w = np.ones((1, 1, 3, 3))
    y = dilconv.dask.conv2d(da.from_array(x, chunks=(1, 1, 64, 64)), w, padding="same")
    np.testing.assert_allclose(y.blocks[5].compute(), dilconv.conv2d(x[5:6], w, padding="same"))

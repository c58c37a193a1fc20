"""The error table: every rule on bad input, one row each, with the message it must give."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import dilconv

X = np.ones((1, 4, 8, 8))
W = np.ones((6, 2, 3, 3))  # groups=2

# (id, x, w, options, exception, message pattern)
ROWS: list[tuple[str, Any, Any, dict[str, Any], type[Exception], str]] = [
    ("x 1-D", np.ones(5), np.ones(3), {}, ValueError, r"x must be 2-D .* got 1-D"),
    ("x 5-D", np.ones((1, 1, 1, 4, 4)), W, {}, ValueError, r"x must be 2-D .* got 5-D"),
    ("w 3-D", X, np.ones((6, 2, 3)), {"groups": 2}, ValueError, r"w must be 4-D \(O, C/groups"),
    ("w 4-D for 2-D x", np.ones((5, 5)), W, {}, ValueError, r"w must be 2-D \(kh, kw\)"),
    ("channels", X, np.ones((6, 3, 3, 3)), {}, ValueError, r"w shape \(6, 3, 3, 3\) .* expected 4"),
    ("channels/groups", X, W, {}, ValueError, r"expected 4"),
    ("groups vs C", X, W, {"groups": 3}, ValueError, r"groups=3 must divide the input channels"),
    ("groups vs O", X, np.ones((5, 2, 3, 3)), {"groups": 2}, ValueError, r"output channels"),
    (
        "groups 2-D",
        np.ones((5, 5)),
        np.ones((3, 3)),
        {"groups": 2},
        ValueError,
        r"groups must be 1",
    ),
    ("stride 0", X, W, {"groups": 2, "stride": 0}, ValueError, r"stride must be >= 1, got 0"),
    ("stride float", X, W, {"groups": 2, "stride": 1.5}, TypeError, r"stride must be an int"),
    ("stride bool", X, W, {"groups": 2, "stride": True}, TypeError, r"stride must be an int"),
    ("stride triple", X, W, {"groups": 2, "stride": (1, 1, 1)}, ValueError, r"stride must be"),
    ("stride pair", X, W, {"groups": 2, "stride": (1, 0)}, ValueError, r"stride\[1\] must be >= 1"),
    ("dilation 0", X, W, {"groups": 2, "dilation": 0}, ValueError, r"dilation must be >= 1"),
    ("dilation neg", X, W, {"groups": 2, "dilation": -2}, ValueError, r"dilation must be >= 1"),
    (
        "dilation bool",
        X,
        W,
        {"groups": 2, "dilation": False},
        TypeError,
        r"dilation must be an int",
    ),
    ("dilation str", X, W, {"groups": 2, "dilation": "2"}, TypeError, r"dilation must be an int"),
    ("groups 0", X, W, {"groups": 0}, ValueError, r"groups must be >= 1, got 0"),
    ("groups float", X, W, {"groups": 2.0}, TypeError, r"groups must be an int"),
    ("groups bool", X, W, {"groups": True}, TypeError, r"groups must be an int"),
    ("padding neg", X, W, {"groups": 2, "padding": -1}, ValueError, r"padding must be >= 0"),
    ("padding pair", X, W, {"groups": 2, "padding": (1, -1)}, ValueError, r"padding\[1\]"),
    ("padding 2x2", X, W, {"groups": 2, "padding": ((0, -1), (0, 0))}, ValueError, r"padding\[0\]"),
    ("padding str", X, W, {"groups": 2, "padding": "samee"}, ValueError, r"one of \['valid'"),
    ("padding len", X, W, {"groups": 2, "padding": (1, 2, 3)}, ValueError, r"padding must be"),
    ("padding bool", X, W, {"groups": 2, "padding": True}, TypeError, r"padding must be an int"),
    (
        "kernel too big",
        np.ones((4, 4)),
        np.ones((3, 3)),
        {"dilation": 2},
        ValueError,
        r"dilated kernel \(5x5.* larger than the padded input \(4x4\)",
    ),
    ("kernel too big", np.ones((4, 4)), np.ones((5, 1)), {}, ValueError, r"larger than the padded"),
    ("zero-size x", np.ones((1, 4, 0, 8)), W, {"groups": 2}, ValueError, r"x must have no zero"),
    ("zero-size w", X, np.ones((0, 2, 3, 3)), {"groups": 2}, ValueError, r"w must have no zero"),
    ("zero batch", np.ones((0, 4, 8, 8)), W, {"groups": 2}, ValueError, r"x must have no zero"),
    (
        "padding_mode",
        X,
        W,
        {"groups": 2, "padding_mode": "mirror"},
        ValueError,
        r"padding_mode must be one of .* got 'mirror'",
    ),
    ("padding_mode type", X, W, {"groups": 2, "padding_mode": 0}, TypeError, r"padding_mode"),
    (
        "method",
        X,
        W,
        {"groups": 2, "method": "strassen"},
        ValueError,
        r"method must be 'auto' or one of \['blocked', 'compiled', 'dilated_kernel'",
    ),
    ("method type", X, W, {"groups": 2, "method": None}, TypeError, r"method must be a str"),
    ("data_format", X, W, {"groups": 2, "data_format": "NWHC"}, ValueError, r"data_format"),
    ("flip", X, W, {"groups": 2, "flip": "yes"}, TypeError, r"flip must be a bool"),
    (
        "reflect too wide",
        np.ones((3, 3)),
        np.ones((2, 2)),
        {"padding": 3, "padding_mode": "reflect"},
        ValueError,
        r"too wide for padding_mode='reflect' .* at most 2",
    ),
    (
        "circular too wide",
        np.ones((3, 5)),
        np.ones((2, 2)),
        {"padding": ((4, 0), (0, 0)), "padding_mode": "circular"},
        ValueError,
        r"at most 3",
    ),
    ("object", np.array([[1, None]], dtype=object), np.ones((1, 1)), {}, TypeError, r"x has dtype"),
    ("strings", np.array([["a", "b"]]), np.ones((1, 1)), {}, TypeError, r"x has dtype <U1"),
    ("complex", np.ones((3, 3), complex), np.ones((1, 1)), {}, TypeError, r"complex"),
    ("bool", np.ones((3, 3), bool), np.ones((1, 1)), {}, TypeError, r"x has dtype bool"),
    ("float128", np.ones((3, 3), np.longdouble), np.ones((1, 1)), {}, TypeError, r"x has dtype"),
    ("None", None, np.ones((1, 1)), {}, TypeError, r"x must be an array, got None"),
    ("stride 2**63", X, W, {"groups": 2, "stride": 2**63}, ValueError, r"stride must be at most"),
    (
        "dilation huge pair",
        X,
        W,
        {"groups": 2, "dilation": (1, 2**40)},
        ValueError,
        r"dilation\[1\] must be at most 2\*\*31 - 1",
    ),
    ("padding 2**63", X, W, {"groups": 2, "padding": 2**63}, ValueError, r"padding must be at"),
    (
        "dilation bytes",
        X,
        W,
        {"groups": 2, "dilation": b"\x02\x02"},
        TypeError,
        r"dilation must be an int or a pair of ints, got b'\\x02\\x02' of type bytes",
    ),
    (
        "stride bytearray",
        X,
        W,
        {"groups": 2, "stride": bytearray(b"\x01\x01")},
        TypeError,
        r"stride",
    ),
    ("padding bytes", X, W, {"groups": 2, "padding": b"\x01\x01"}, TypeError, r"padding must be"),
    ("padding 0-d float", X, W, {"groups": 2, "padding": np.array(1.0)}, TypeError, r"padding"),
    (
        "masked x",
        np.ma.masked_array(np.ones((3, 3)), np.eye(3, dtype=bool)),
        np.ones((1, 1)),
        {},
        TypeError,
        r"x is a masked array, whose mask a convolution would lose; pass x.filled\(0\)",
    ),
    (
        "masked w",
        np.ones((3, 3)),
        np.ma.masked_array(np.ones((1, 1))),
        {},
        TypeError,
        r"w is a masked array",
    ),
]


@pytest.mark.parametrize(
    ("x", "w", "options", "error", "pattern"),
    [row[1:] for row in ROWS],
    ids=[row[0] for row in ROWS],
)
def test_conv2d_refuses(x: Any, w: Any, options: dict[str, Any], error: type, pattern: str) -> None:
    if x is not None and np.dtype(getattr(x, "dtype", float)) == np.longdouble == np.float64:
        pytest.skip("longdouble is float64 on this platform")
    with pytest.raises(error, match=pattern):
        dilconv.conv2d(x, w, **options)


SHAPE_ROWS = [
    row
    for row in ROWS
    if isinstance(row[1], np.ndarray)
    and not isinstance(row[1], np.ma.MaskedArray)
    and not isinstance(row[2], np.ma.MaskedArray)
    and row[1].dtype == float
    and row[2].dtype == float
    and "method" not in row[3]
    and "padding_mode" not in row[3]
    and "flip" not in row[3]
]


@pytest.mark.parametrize(
    ("x", "w", "options", "error", "pattern"),
    [row[1:] for row in SHAPE_ROWS],
    ids=[row[0] for row in SHAPE_ROWS],
)
def test_output_shape_raises_what_conv2d_raises(
    x: np.ndarray, w: np.ndarray, options: dict[str, Any], error: type, pattern: str
) -> None:
    with pytest.raises(error, match=pattern) as from_conv:
        dilconv.conv2d(x, w, **options)
    with pytest.raises(error, match=pattern) as from_shape:
        dilconv.output_shape(x.shape, w.shape, **options)
    assert str(from_shape.value) == str(from_conv.value)


def test_answers_that_were_refusals() -> None:
    """Big-endian arrays are converted (the result is native), 0-d integer arrays are ints."""
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((1, 2, 7, 6)), rng.standard_normal((3, 2, 2, 3))
    expected = dilconv.conv2d(x, w, dilation=2)
    y = dilconv.conv2d(x.astype(">f8"), w.astype(">f8"), dilation=2)
    assert y.dtype == np.float64
    assert y.dtype.isnative
    assert np.array_equal(y, expected)
    y32 = dilconv.conv2d(x.astype(">f4"), w.astype("<f4"), dilation=2)
    assert y32.dtype == np.float32
    assert y32.dtype.isnative
    ints = dilconv.conv2d(np.arange(16, dtype=">i4").reshape(4, 4), np.ones((2, 2), ">i2"))
    assert ints.dtype == np.int64
    assert ints[0, 0] == 0 + 1 + 4 + 5
    assert dilconv.conv2d(x, w, padding=np.array(1)).shape == (1, 3, 8, 6)
    assert dilconv.conv2d(x, w, stride=np.array(2), padding=(np.array(1), 0)).shape == (
        1,
        3,
        4,
        2,
    )
    t = dilconv.conv2d_transpose(x.astype(">f8"), w.transpose(1, 0, 2, 3).astype(">f8"))
    assert t.dtype.isnative


def test_bias_shape() -> None:
    with pytest.raises(ValueError, match=r"bias must have shape \(6,\), got \(3,\)"):
        dilconv.conv2d(X, W, np.ones(3), groups=2)


def test_workspace_bound_refuses_a_named_method_but_auto_fits() -> None:
    x, w = np.ones((1, 8, 256, 256)), np.ones((8, 8, 3, 3))
    with dilconv.workspace_limit(2**20):
        with pytest.raises(ValueError, match=r"method='fft' needs .* MiB of workspace, more than"):
            dilconv.conv2d(x, w, method="fft")
        y = dilconv.conv2d(x, w, padding="same")  # auto picks a chunked algorithm
    assert y.shape == (1, 8, 256, 256)


def test_output_larger_than_memory_is_refused_before_allocating() -> None:
    with pytest.raises(ValueError, match=r"GiB for its output .* use dilconv.dask"):
        dilconv.output_shape((1, 1, 10, 10), (1, 1, 1, 1), padding=10**6)
    with pytest.raises(ValueError, match=r"GiB for its output .* use dilconv.dask"):
        dilconv.conv2d(np.ones((1, 1, 10, 10)), np.ones((1, 1, 1, 1)), padding=10**6)


def test_set_workspace_limit_validates() -> None:
    with pytest.raises(TypeError, match="nbytes must be an int"):
        dilconv.set_workspace_limit(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 1 MiB"):
        dilconv.set_workspace_limit(10)


def test_remembered_specs_never_excuse_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation is remembered per argument values *and types*: a valid call does not
    let an equal-comparing value of the wrong type through, and the memory check
    runs on every call."""
    from dilconv import _spec

    x, w = np.ones((1, 2, 6, 6)), np.ones((2, 2, 3, 3))
    assert dilconv.conv2d(x, w, stride=1, flip=True).shape == (1, 2, 4, 4)
    assert dilconv.conv2d(x, w, stride=1, flip=True).shape == (1, 2, 4, 4)  # remembered
    with pytest.raises(TypeError, match="stride must be an int"):
        dilconv.conv2d(x, w, stride=1.0, flip=True)
    with pytest.raises(TypeError, match=r"stride\[1\] must be an int"):
        dilconv.conv2d(x, w, stride=(1, True), flip=True)
    with pytest.raises(TypeError, match="flip must be a bool"):
        dilconv.conv2d(x, w, stride=1, flip=1)
    with pytest.raises(TypeError, match="stride must be an int"):
        dilconv.conv2d(x, w, stride=True, flip=True)
    strides = np.array([1, 1])  # unhashable: validated every time, never remembered
    assert dilconv.conv2d(x, w, stride=strides).shape == (1, 2, 4, 4)
    monkeypatch.setattr(_spec, "physical_memory_bytes", lambda: 100)
    with pytest.raises(ValueError, match=r"MiB for its output"):
        dilconv.conv2d(x, w, stride=1, flip=True)


_SPEC_ELSEWHERE = (
    "import pickle, sys\n"
    "from dilconv._spec import make_spec\n"
    "spec = pickle.loads(bytes.fromhex(sys.argv[1]))\n"
    "same = make_spec((1, 2, 6, 6), (2, 2, 3, 3), padding='same', dilation=2)\n"
    "print(spec == same, hash(spec) == hash(same), {same: 1}.get(spec))\n"
)


def test_a_spec_hashes_anew_in_the_process_it_is_sent_to() -> None:
    """A spec remembers its hash, which covers strings ("same", "NCHW") that another
    process hashes differently: pickled (to a Dask worker), it leaves the hash behind."""
    import os
    import pickle
    import subprocess
    import sys
    from pathlib import Path

    from dilconv._spec import make_spec

    spec = make_spec((1, 2, 6, 6), (2, 2, 3, 3), padding="same", dilation=2)
    hash(spec)  # remembered here
    assert hash(pickle.loads(pickle.dumps(spec))) == hash(spec)
    src = str(Path(dilconv.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": src}
    out = subprocess.run(
        [sys.executable, "-c", _SPEC_ELSEWHERE, pickle.dumps(spec).hex()],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "1"]

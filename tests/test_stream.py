"""dilconv.stream.Conv1dStream: every cut of a signal into blocks gives the batch call."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import dilconv
from dilconv.stream import Conv1dStream
from tests.tolerance import assert_close


def causal_conv1d(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
    method: str = "auto",
) -> np.ndarray:
    """The batch reference: ``conv1d(padding="causal")`` (Keras's rule: ``dilation *
    (k - 1)`` zeros on the left only); ``x`` is ``(N, C, L)``, ``w`` ``(O, C/g, k)``."""
    return dilconv.conv1d(
        x, w, bias, stride=stride, dilation=dilation, groups=groups, padding="causal",
        method=method,
    )  # fmt: skip


def cut(length: int, sizes: list[int]) -> list[int]:
    """Block sizes that add up to ``length``: an empty block, then ``sizes`` cycled,
    the last block cut short."""
    out, done = [0], 0
    for size in sizes * (length + 1):
        if done >= length:
            break
        size = min(size, length - done)
        out.append(size)
        done += size
    return out


def stream_all(s: Conv1dStream, x: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Push ``x`` (``(N, C, L)``) in blocks of ``sizes``; the outputs concatenated."""
    outs, t = [], 0
    for n in sizes:
        outs.append(s.push(x[:, :, t : t + n]))
        t += n
    assert t == x.shape[2]
    return np.concatenate(outs, axis=2)


@st.composite
def stream_cases(draw: st.DrawFn, dtypes: tuple[Any, ...]) -> dict[str, Any]:
    groups = draw(st.integers(1, 3))
    c = groups * draw(st.integers(1, 3))
    o = groups * draw(st.integers(1, 3))
    k = draw(st.integers(1, 4))
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    length = draw(st.integers(1, 40))  # conv2d refuses an empty signal
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    if dtype.kind == "i":
        x = rng.integers(-9, 10, (draw(st.integers(1, 3)), c, length))
        w = rng.integers(-9, 10, (o, c // groups, k))
        bias = rng.integers(-9, 10, o) if draw(st.booleans()) else None
    else:
        x = rng.standard_normal((draw(st.integers(1, 3)), c, length)).astype(dtype)
        w = rng.standard_normal((o, c // groups, k)).astype(dtype)
        bias = rng.standard_normal(o).astype(dtype) if draw(st.booleans()) else None
    sizes = draw(
        st.one_of(
            st.just([1]),
            st.just([max(length, 1)]),
            st.lists(st.integers(0, 9), min_size=1, max_size=6).filter(any),
        )
    )
    return {
        "x": x,
        "w": w,
        "bias": bias,
        "stride": draw(st.integers(1, 4)),
        "dilation": draw(st.integers(1, 5)),
        "groups": groups,
        "sizes": cut(length, sizes),
        "seed": seed,
    }


def _options(case: dict[str, Any]) -> dict[str, Any]:
    return {key: case[key] for key in ("stride", "dilation", "groups")}


@given(stream_cases(dtypes=(np.int64, np.int32)))
def test_integers_bit_for_bit(case: dict[str, Any]) -> None:
    x, w = case["x"], case["w"]
    s = Conv1dStream(w, case["bias"], batch=x.shape[0], **_options(case))
    got = stream_all(s, x, case["sizes"])
    want = causal_conv1d(x, w, case["bias"], **_options(case))
    assert got.dtype == want.dtype == np.int64
    np.testing.assert_array_equal(got, want, err_msg=repr(case))


@given(stream_cases(dtypes=(np.float32, np.float64, np.float16)))
def test_floats_bit_for_bit_with_direct(case: dict[str, Any]) -> None:
    """``direct`` sums each output tap by tap in the same order whatever the length,
    so the stream and the whole call round identically."""
    x, w = case["x"], case["w"]
    s = Conv1dStream(w, case["bias"], batch=x.shape[0], method="direct", **_options(case))
    got = stream_all(s, x, case["sizes"])
    want = causal_conv1d(x, w, case["bias"], method="direct", **_options(case))
    assert got.dtype == want.dtype == x.dtype
    np.testing.assert_array_equal(got, want, err_msg=repr(case))


@given(stream_cases(dtypes=(np.float32, np.float64)))
def test_floats_within_tolerance_with_auto(case: dict[str, Any]) -> None:
    x, w = case["x"], case["w"]
    s = Conv1dStream(w, case["bias"], batch=x.shape[0], **_options(case))
    got = stream_all(s, x, case["sizes"])
    want = causal_conv1d(x, w, case["bias"], **_options(case))
    bias = None if case["bias"] is None else np.abs(case["bias"])
    magnitude = causal_conv1d(np.abs(x), np.abs(w), bias, **_options(case))
    assert_close(got, want, magnitude=magnitude, context=repr(case))


@given(stream_cases(dtypes=(np.int64,)), st.integers(0, 40), st.data())
def test_state_saved_and_restored_mid_stream(
    case: dict[str, Any], split: int, data: st.DataObject
) -> None:
    """The state, written with numpy.savez and read back into a new stream, continues it."""
    x, w = case["x"], case["w"]
    split = min(split, x.shape[2])
    first = Conv1dStream(w, case["bias"], batch=x.shape[0], **_options(case))
    head = stream_all(first, x[:, :, :split], cut(split, [3, 0, 5]))
    buffer = io.BytesIO()
    np.savez(buffer, **first.state)
    buffer.seek(0)
    second = Conv1dStream(w, case["bias"], batch=x.shape[0], **_options(case))
    with np.load(buffer) as saved:
        second.load_state(saved)
    tail = stream_all(second, x[:, :, split:], cut(x.shape[2] - split, case["sizes"] or [1]))
    want = causal_conv1d(x, w, case["bias"], **_options(case))
    np.testing.assert_array_equal(np.concatenate([head, tail], axis=2), want)
    # the state is a copy: pushing more leaves a saved state as it was
    state = second.state
    second.push(np.ones((x.shape[0], x.shape[1], 3), np.int64))
    assert not np.shares_memory(state["history"], second.state["history"])


@pytest.mark.parametrize("stride", [1, 3])
def test_reset_one_stream_among_several(stride: int) -> None:
    rng = np.random.default_rng(0)
    w = rng.integers(-5, 6, (2, 3, 3))
    x = rng.integers(-5, 6, (4, 3, 30))
    s = Conv1dStream(w, dilation=2, stride=stride, batch=4)
    head = stream_all(s, x[:, :, :12], [5, 7])  # 12 samples: a stride boundary
    s.reset(2)
    tail = stream_all(s, x[:, :, 12:], [1, 10, 7])
    got = np.concatenate([head, tail], axis=2)
    want = causal_conv1d(x, w, dilation=2, stride=stride)
    keep = [0, 1, 3]
    np.testing.assert_array_equal(got[keep], want[keep])
    np.testing.assert_array_equal(head[2], want[2, :, : head.shape[2]])
    # stream 2 starts afresh at sample 12, as if its signal began there
    fresh = causal_conv1d(x[2:3, :, 12:], w, dilation=2, stride=stride)[0]
    np.testing.assert_array_equal(tail[2], fresh)
    assert not np.array_equal(tail[2], want[2, :, head.shape[2] :])
    # negative indices count from the end, as in NumPy
    s.reset(-1)
    assert not s.state["history"][3].any()
    assert s.state["history"][2].any()
    s.reset()
    assert not s.state["history"].any()


def test_nwc_layout_matches_ncw() -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 3, 2))
    x = rng.standard_normal((2, 3, 17))
    ncw = Conv1dStream(w, batch=2, dilation=3, method="direct")
    nwc = Conv1dStream(w.transpose(2, 1, 0), batch=2, dilation=3, data_format="NWC")
    nwc.method = "direct"
    a = stream_all(ncw, x, [4, 0, 9, 4])
    outs = [nwc.push(x[:, :, t : t + 5].transpose(0, 2, 1)) for t in range(0, 17, 5)]
    b = np.concatenate(outs, axis=1).transpose(0, 2, 1)
    np.testing.assert_array_equal(a, b)
    assert outs[0].shape == (2, 5, 4)


def test_stride_returns_nothing_until_an_output_completes() -> None:
    s = Conv1dStream(np.ones((1, 1, 2)), stride=3, dtype=np.int64)
    shapes = [s.push(np.ones((1, 1, n), np.int64)).shape[2] for n in (1, 1, 1, 1, 0, 2, 3)]
    # outputs complete at samples 0, 3, 6: the 1st, the 4th, the 7th
    assert shapes == [1, 0, 0, 1, 0, 0, 1]


def test_properties_and_memory() -> None:
    w = np.zeros((8, 2, 3), np.float32)  # groups=2: 4 input channels
    s = Conv1dStream(w, dilation=4, groups=2, batch=5)
    assert (s.receptive_field, s.latency, s.history_size) == (9, 0, 8)
    assert s.channels == 4
    assert s.dtype == np.float32
    assert s.state["history"].shape == (5, 4, 8)  # (k - 1) * d values per channel
    assert s.state["history"].dtype == np.float32
    assert Conv1dStream(np.ones((1, 1, 2), np.int32)).dtype == np.int64
    assert Conv1dStream(w, groups=2, dtype=np.float64).push(np.ones((1, 4, 2))).dtype == (
        np.float64
    )
    assert "dilation=4" in repr(s)


def test_weights_are_shared_not_copied() -> None:
    w = np.ones((1, 1, 2))
    s = Conv1dStream(w)
    w *= 2  # in place, as nn.SGD updates a parameter
    np.testing.assert_array_equal(s.push(np.ones((1, 1, 2))), [[[2.0, 4.0]]])


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: Conv1dStream(np.ones((2, 2))), ValueError, r"w must have 3 dimensions"),
        (lambda: Conv1dStream(np.ones((2, 1, 0))), ValueError, r"w must have no empty axis"),
        (lambda: Conv1dStream(np.ones((3, 1, 2)), groups=2), ValueError, r"groups=2 must divide"),
        (lambda: Conv1dStream(np.ones((1, 1, 2)), stride=0), ValueError, r"stride must be >= 1"),
        (lambda: Conv1dStream(np.ones((1, 1, 2)), dilation=1.5), TypeError, r"dilation must be"),
        (lambda: Conv1dStream(np.ones((1, 1, 2)), batch=0), ValueError, r"batch must be >= 1"),
        (
            lambda: Conv1dStream(np.ones((1, 1, 2)), data_format="NCHW"),
            ValueError,
            r"data_format must be one of \['NCW', 'NWC'\], got 'NCHW'",
        ),
        (
            lambda: Conv1dStream(np.ones((2, 1, 2)), np.ones(3)),
            ValueError,
            r"bias must have shape \(2,\), got \(3,\)",
        ),
        (
            lambda: Conv1dStream(np.ones((1, 1, 2)), dtype=np.int8),
            ValueError,
            r"dtype must be one of float16, float32, float64, int64, got int8",
        ),
        (lambda: Conv1dStream(np.ones((1, 1, 2)), dtype="pixel"), TypeError, r"dtype must be"),
        (lambda: Conv1dStream(np.ones((1, 1, 2)), method="fast"), ValueError, r"method must be"),
        (
            lambda: Conv1dStream(np.ones((1, 2, 2))).push(np.ones((1, 2))),
            ValueError,
            r"block must have 3 dimensions \(batch, C, n\), got shape \(1, 2\)",
        ),
        (
            lambda: Conv1dStream(np.ones((1, 2, 2)), batch=2).push(np.ones((2, 3, 4))),
            ValueError,
            r"block must have batch=2 and C=2 \(NCW\), got shape \(2, 3, 4\)",
        ),
        (
            lambda: Conv1dStream(np.ones((1, 1, 2), np.int64)).push(np.ones((1, 1, 4))),
            TypeError,
            r"block has dtype float64, which the int64 stream refuses",
        ),
        (
            lambda: Conv1dStream(np.ones((1, 1, 2))).push(np.ones((1, 1, 1), bool)),
            TypeError,
            r"block has dtype bool",
        ),
        (lambda: Conv1dStream(np.ones((1, 1, 2))).reset(1), ValueError, r"index must be < batch"),
        (lambda: Conv1dStream(np.ones((1, 1, 2))).load_state(3), TypeError, r"state must be"),
        (
            lambda: Conv1dStream(np.ones((1, 1, 3))).load_state(
                {"history": np.zeros((1, 1, 3)), "phase": 0}
            ),
            ValueError,
            r"state\['history'\] must have shape \(1, 1, 2\), got \(1, 1, 3\)",
        ),
        (
            lambda: Conv1dStream(np.ones((1, 1, 3)), stride=2).load_state(
                {"history": np.zeros((1, 1, 2)), "phase": 2}
            ),
            ValueError,
            r"state\['phase'\] must be in \[0, 2\), got 2",
        ),
        (
            lambda: Conv1dStream(np.ones((1, 1, 3))).load_state(
                {"history": np.zeros((1, 1, 2)), "phase": 0.5}
            ),
            TypeError,
            r"state\['phase'\] must be an integer",
        ),
    ],
)
def test_bad_input(call: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()


def test_reset_of_one_stream_refused_between_stride_boundaries() -> None:
    s = Conv1dStream(np.ones((1, 1, 2)), stride=2, batch=2)
    s.push(np.ones((2, 1, 3)))
    with pytest.raises(ValueError, match=r"index=0: one stream can be reset only at a stride"):
        s.reset(0)
    s.push(np.ones((2, 1, 1)))
    s.reset(0)  # 4 samples: a boundary


@given(
    st.lists(
        st.tuples(st.integers(1, 3), st.integers(1, 2), st.integers(1, 4)), min_size=1, max_size=3
    )  # fmt: skip
)
def test_causal_dependencies_are_the_inputs_that_reach_an_output(
    layers: list[tuple[int, int, int]],
) -> None:
    """An impulse at input ``i`` reaches output ``t`` exactly when ``i`` is listed."""
    from dilconv.stream import causal_dependencies

    length = 24
    reached = []
    for i in range(length):
        y = np.zeros((1, 1, length), np.int64)
        y[0, 0, i] = 1
        for k, s, d in layers:  # all-ones weights: nothing cancels
            y = causal_conv1d(y, np.ones((1, 1, k), np.int64), stride=s, dilation=d)
        reached.append(y[0, 0] != 0)
    for t in range(len(reached[0])):
        deps = causal_dependencies(t, layers)
        assert deps[0] == [i for i in range(length) if reached[i][t]], (layers, t)
        assert deps[-1] == [t]
        assert len(deps) == len(layers) + 1

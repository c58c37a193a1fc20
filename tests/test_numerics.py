"""Never wrong: NaN, Inf and huge values land where the oracle puts them.

Every method ``"auto"`` may choose is compared with ``"direct"`` element by
element: NaN exactly where ``direct`` has NaN, the same Inf where it has Inf, and
the finite values within the tolerance table, measured against the same call on
absolute values (so a huge value may only disturb the outputs that read it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dilconv
from dilconv import _select
from dilconv._methods import METHODS
from tests.strategies import Case, conv_cases
from tests.tolerance import assert_close

#: Every method "auto" may choose for some call (never the oracle, never the FFT).
AUTO_METHODS = [m for m in METHODS if m != "direct" and m not in _select.NONLOCAL]
#: Those "auto" may choose when the arrays hold NaN or Inf.
NONFINITE_METHODS = [m for m in AUTO_METHODS if m not in _select.FINITE_ONLY]


def assert_matches_direct(
    actual: np.ndarray,
    expected: np.ndarray,
    magnitude: np.ndarray,
    method: str,
    padding_nan: bool = False,
) -> None:
    """NaN where ``expected`` has NaN, the same Inf where it has Inf, close elsewhere.

    ``padding_nan``: the weights hold NaN or Inf, and a method that multiplies the
    zero padding by them may give NaN (``0 * inf``) where ``direct``, which skips
    taps in the padding, does not; NaN is then allowed anywhere.
    """
    assert actual.shape == expected.shape, method
    assert actual.dtype == expected.dtype, method
    nan = np.isnan(expected)
    if padding_nan:
        assert np.isnan(actual[nan]).all(), f"{method}: a NaN of direct is missing"
        nan = nan | np.isnan(actual)
    where = np.argwhere(np.isnan(actual) != nan)
    assert where.size == 0, f"{method}: {len(where)} outputs differ in NaN, first at {where[0]}"
    inf = np.isinf(expected) & ~nan
    assert np.array_equal(actual[inf], expected[inf]), f"{method}: Inf outputs differ"
    finite = ~(nan | inf)
    assert_close(actual[finite], expected[finite], magnitude=magnitude[finite], context=method)


def compare(x: np.ndarray, w: np.ndarray, bias: Any, methods: list[str], **options: Any) -> int:
    """Check each method against ``direct``; returns how many took the call.

    NumPy's warnings on NaN and Inf arithmetic are silenced: the values are the point.
    """
    with np.errstate(all="ignore"):
        return _compare(x, w, bias, methods, **options)


def _compare(x: np.ndarray, w: np.ndarray, bias: Any, methods: list[str], **options: Any) -> int:
    expected = dilconv.conv2d(x, w, bias, method="direct", **options)
    big = np.float64
    magnitude = dilconv.conv2d(
        np.abs(x).astype(big),
        np.abs(w).astype(big),
        None if bias is None else np.abs(bias).astype(big),
        method="direct",
        **options,
    )
    ran = 0
    for method in methods:
        try:
            actual = dilconv.conv2d(x, w, bias, method=method, **options)
        except ValueError:  # a method that does not take this call
            continue
        scale = magnitude
        if method in ("winograd", "auto") and np.isfinite(w).all():
            scale = np.maximum(magnitude, winograd_magnitude(x, w, bias, **options))
        assert_matches_direct(actual, expected, scale, method, not np.isfinite(w).all())
        ran += 1
    return ran


def winograd_magnitude(x: np.ndarray, w: np.ndarray, bias: Any, **options: Any) -> np.ndarray:
    """Winograd's error scale: the ``|x|`` each output reads times its channel's largest ``|w|``.

    Its transforms mix the taps of one output (``G w G^T``) and the inputs of one
    tile, so one output's rounding is at the scale of every value it reads times
    the largest weight, not of each value times its own weight: a huge value read
    through a small weight disturbs that output by ``eps * huge * max |w|``. Still
    local: values the output does not read play no part.
    """
    big = np.float64
    flat = np.abs(w).astype(big)
    per_out = flat.reshape(flat.shape[0], -1).max(axis=1) if w.ndim == 4 else flat.max()
    if w.ndim == 4 and options.get("data_format", "NCHW") == "NHWC":
        per_out = flat.reshape(-1, flat.shape[-1]).max(axis=0)
    if w.ndim == 4:
        shape = (-1, 1, 1, 1) if options.get("data_format", "NCHW") == "NCHW" else (1, 1, 1, -1)
        tied = np.broadcast_to(np.reshape(per_out, shape), w.shape)
    else:
        tied = np.full(w.shape, per_out)
    with np.errstate(all="ignore"):
        return 4 * dilconv.conv2d(
            np.abs(x).astype(big),
            np.ascontiguousarray(tied),
            None if bias is None else np.abs(bias).astype(big),
            method="direct",
            **options,
        )


SPECIALS = [
    ("nan", np.float64, np.nan),
    ("inf", np.float64, np.inf),
    ("-inf", np.float64, -np.inf),
    ("1e300", np.float64, 1e300),
    ("inf32", np.float32, np.inf),
    ("1e6_32", np.float32, 1e6),
]

#: (x shape, w shape, options): many channels (the tile methods), one channel (compiled).
CALLS = [
    ((1, 4, 20, 20), (4, 4, 3, 3), {"dilation": 2, "padding": "same"}),
    ((19, 21), (3, 3), {"dilation": (3, 2), "padding": 2}),
    ((1, 3, 17, 15), (6, 1, 2, 3), {"groups": 3, "stride": 2, "dilation": 3, "padding": "full"}),
]


@pytest.mark.parametrize(
    ("method", "dtype", "value"),
    [
        pytest.param(m, dtype, value, id=f"{m}-{label}")
        for label, dtype, value in SPECIALS
        for m in (AUTO_METHODS if np.isfinite(value) else NONFINITE_METHODS)
    ],
)
def test_special_values_match_direct(method: str, dtype: Any, value: float) -> None:
    rng = np.random.default_rng(17)
    ran = 0
    for x_shape, w_shape, options in CALLS:
        x = rng.uniform(-1, 1, x_shape).astype(dtype)
        w = rng.uniform(-1, 1, w_shape).astype(dtype)
        x.reshape(-1)[x.size // 3] = value
        ran += compare(x, w, None, [method], **options)
    assert ran, f"{method} took none of the calls"


def test_auto_never_picks_fft_by_default() -> None:
    """The issue's call: the cost model would pick the FFT; one NaN gave 2500 NaN."""
    rng = np.random.default_rng(0)
    x, w = rng.random((1, 3, 64, 64)), rng.random((1, 3, 15, 15))
    x[0, 0, 0, 0] = np.nan
    spec = dilconv.conv.make_spec(x.shape, w.shape).lowered()
    assert "fft" not in _select.candidates(spec)
    assert dilconv.choose_method(x, w) != "fft"
    y = dilconv.conv2d(x, w)
    assert np.isnan(y).sum() == np.isnan(dilconv.conv2d(x, w, method="direct")).sum() == 1


def test_allow_fft_lets_auto_consider_it(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = dilconv.conv.make_spec((1, 3, 61, 64), (1, 3, 15, 15)).lowered()
    for rate in ("fft", "einsum"):  # a machine where the FFT is by far the fastest
        monkeypatch.setitem(_select.COST, rate, 1e30)
    assert _select.cheapest(spec) != "fft"
    monkeypatch.setattr(_select, "ALLOW_FFT", True)
    assert _select.allow_fft()
    assert "fft" in _select.candidates(spec)
    assert _select.cheapest(spec) == "fft"
    assert dilconv.conv2d(np.ones((1, 3, 64, 64)), np.ones((1, 3, 15, 15)), method="fft").shape


def test_fft_by_name_still_runs() -> None:
    x = np.ones((1, 1, 16, 16))
    x[0, 0, 0, 0] = np.inf
    y = dilconv.conv2d(x, np.ones((1, 1, 3, 3)), method="fft")
    assert np.isnan(y).all()  # its documented error model, asked for by name


def test_auto_leaves_winograd_out_for_nonfinite_input() -> None:
    rng = np.random.default_rng(3)
    # NHWC: in NCHW auto takes blocked's in-place route for 64 channels anyway
    x = rng.uniform(-1, 1, (1, 32, 32, 64)).astype(np.float32)
    w = rng.uniform(-1, 1, (3, 3, 64, 64)).astype(np.float32)
    options = {"dilation": 2, "padding": "same", "data_format": "NHWC"}
    assert dilconv.choose_method(x, w, **options) == "winograd"
    x[0, 10, 10, 5] = np.inf
    assert dilconv.choose_method(x, w, **options) not in _select.FINITE_ONLY
    assert compare(x, w, None, ["auto"], **options) == 1
    w[0, 0, 0, 0] = np.nan  # in the weights too
    assert dilconv.choose_method(np.ones_like(x), w, **options) not in _select.FINITE_ONLY


def test_all_finite() -> None:
    assert _select.all_finite((np.ones(3), np.arange(3)))
    assert not _select.all_finite((np.ones(3), np.array([1.0, np.nan])))
    assert not _select.all_finite((np.array([np.inf, -np.inf]),))


specials = st.sampled_from([np.nan, np.inf, -np.inf, "huge", 0.0])


@settings(max_examples=40)
@given(
    case=conv_cases(dtypes=(np.float32, np.float64)),
    values=st.lists(st.tuples(st.integers(0, 10**6), specials), min_size=1, max_size=3),
    in_weights=st.booleans(),
)
def test_special_values_property(
    case: Case, values: list[tuple[int, Any]], in_weights: bool
) -> None:
    """Random calls with NaN, Inf and huge values: auto and every method it may pick."""
    x, w = case.x.copy(), case.w.copy()
    target = w if in_weights else x
    huge = 1e300 if target.dtype == np.float64 else 1e6
    for where, value in values:
        target.reshape(-1)[where % target.size] = huge if value == "huge" else value
    finite = bool(np.isfinite(x).all() and np.isfinite(w).all())
    methods = AUTO_METHODS if finite else NONFINITE_METHODS
    spec = dilconv.conv.make_spec(
        x.shape, w.shape, dtypes=[x.dtype, w.dtype], **case.options
    ).lowered()
    assert set(_select.candidates(spec, finite=finite)) <= set(methods)
    assert compare(x, w, case.bias, ["auto", *methods], **case.options) >= 1


#: A layer where auto picks Winograd (NHWC; in NCHW it takes blocked's in-place route).
WINOGRAD_LAYER = {"dilation": 2, "padding": "same", "data_format": "NHWC"}


def _winograd_arrays(dtype: Any = np.float32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (2, 24, 26, 64)).astype(dtype)
    w = rng.uniform(-1, 1, (3, 3, 64, 64)).astype(dtype)
    assert dilconv.choose_method(x, w, **WINOGRAD_LAYER) == "winograd"
    return x, w


def test_auto_runs_winograd_without_scanning_its_input(monkeypatch: pytest.MonkeyPatch) -> None:
    """The input is not summed before Winograd runs (it notes a NaN or Inf itself);
    the weights still are, and the answer is Winograd's own."""
    x, w = _winograd_arrays()
    scanned: list[tuple[int, ...]] = []
    scan = _select.all_finite

    def recording(arrays: tuple[np.ndarray, ...]) -> bool:
        scanned.extend(a.shape for a in arrays)
        return scan(arrays)

    monkeypatch.setattr(_select, "all_finite", recording)
    y = dilconv.conv2d(x, w, **WINOGRAD_LAYER)
    assert x.shape not in scanned
    assert w.shape in scanned
    expected = dilconv.conv2d(x, w, method="winograd", **WINOGRAD_LAYER)
    assert np.array_equal(y, expected)


@settings(max_examples=30)
@given(
    where=st.lists(st.tuples(st.integers(0, 10**6), specials), min_size=1, max_size=3),
    dtype=st.sampled_from([np.float32, np.float64]),
    layout=st.sampled_from(["NHWC", "NCHW"]),
)
def test_auto_winograd_finds_nonfinite_input_itself(
    where: list[tuple[int, Any]], dtype: Any, layout: str
) -> None:
    """Wherever NaN, Inf or a huge value lands (tiles, the outputs computed directly,
    pixels no output reads), auto's answer is ``direct``'s: Winograd under the guard
    raises on what it reads and the call runs again on a NaN-exact method."""
    x, w = _winograd_arrays(dtype)
    huge = np.finfo(dtype).max / 2  # Winograd's transforms overflow, direct's sum need not
    for at, value in where:
        x.reshape(-1)[at % x.size] = huge if value == "huge" else value
    options = dict(WINOGRAD_LAYER)
    if layout == "NCHW":
        x, w = np.ascontiguousarray(x.transpose(0, 3, 1, 2)), w.transpose(3, 2, 0, 1).copy()
        options.pop("data_format")
        x = x[:, :4]  # few channels: NCHW moves the layout and runs Winograd too
        w = np.ascontiguousarray(w[:, :4])
    assert compare(x, w, None, ["auto"], **options) == 1


def test_winograd_guard_raises_only_on_what_it_reads() -> None:
    from dilconv._methods import winograd

    x, w = _winograd_arrays()
    spec = dilconv.conv.make_spec(x.shape, w.shape, **WINOGRAD_LAYER).lowered()
    with winograd.finite_guard():
        clean = winograd.conv(x, w, spec)  # finite: no raise
    assert np.array_equal(clean, winograd.conv(x, w, spec))
    for value in (np.nan, np.inf, -np.inf):
        bad = x.copy()
        bad[1, 12, 13, 40] = value
        with winograd.finite_guard(), pytest.raises(winograd.NonFiniteInput):
            winograd.conv(bad, w, spec)
        with np.errstate(all="ignore"):
            assert not np.isfinite(winograd.conv(bad, w, spec)).all()  # by name: no guard


def test_auto_near_the_top_of_the_float_range_is_direct_s_answer() -> None:
    """Found by the property above: finite values near float32's largest overflow in
    Winograd's transforms (Inf where direct's sum is -1.66e38, NaN where two meet);
    auto's guard sees the non-finite outputs and computes the call again."""
    x, w = _winograd_arrays()
    x.reshape(-1)[:2] = np.finfo(np.float32).max / 2
    with np.errstate(all="ignore"):
        by_name = dilconv.conv2d(x, w, method="winograd", **WINOGRAD_LAYER)
        expected = dilconv.conv2d(x, w, method="direct", **WINOGRAD_LAYER)
    assert np.isfinite(expected).all()
    assert not np.isfinite(by_name).all()  # Winograd's documented limit, asked for by name
    assert compare(x, w, None, ["auto"], **WINOGRAD_LAYER) == 1


def test_transposed_auto_matches_direct_with_nonfinite_input() -> None:
    rng = np.random.default_rng(8)
    g = rng.uniform(-1, 1, (1, 33, 33, 64)).astype(np.float32)
    w = rng.uniform(-1, 1, (3, 3, 32, 64)).astype(np.float32)
    options = {"stride": 2, "dilation": 2, "padding": "same", "data_format": "NHWC"}
    g[0, 7, 9, 3] = np.inf
    with np.errstate(all="ignore"):
        y = dilconv.conv2d_transpose(g, w, **options)
        expected = dilconv.conv2d_transpose(g, w, method="direct", **options)
    assert np.array_equal(np.isnan(y), np.isnan(expected))
    assert np.array_equal(np.isinf(y), np.isinf(expected))
    finite = np.isfinite(expected)
    absolute = np.abs(np.where(np.isfinite(g), g, 0)).astype(np.float64)
    magnitude = dilconv.conv2d_transpose(absolute, np.abs(w).astype(np.float64), **options)
    assert_close(y[finite], expected[finite], magnitude=magnitude[finite])


# --- exact integers -----------------------------------------------------------------

INTEGER_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]


def loop_correlate(x: list[list[int]], w: list[list[int]]) -> list[list[int]]:
    """A valid 2-D correlation in Python integers: the independent exact answer."""
    kh, kw = len(w), len(w[0])
    return [
        [
            sum(x[r + i][c + j] * w[i][j] for i in range(kh) for j in range(kw))
            for c in range(len(x[0]) - kw + 1)
        ]
        for r in range(len(x) - kh + 1)
    ]


def exact_or_overflow(call: Any, expected: list[Any]) -> None:
    """``call()`` equals ``expected`` as int64 where every value fits, else OverflowError."""
    flat = np.asarray(expected, dtype=object).ravel().tolist()
    if all(-(2**63) <= v < 2**63 for v in flat):
        y = call()
        assert y.dtype == np.int64
        assert y.ravel().tolist() == flat
    else:
        with pytest.raises(OverflowError, match=r"outside int64's range"):
            call()


@pytest.mark.parametrize("dtype", INTEGER_DTYPES)
@pytest.mark.parametrize("end", ["max", "min"])
def test_integers_exact_at_the_limits(dtype: Any, end: str) -> None:
    info = np.iinfo(dtype)
    value = int(info.max if end == "max" else info.min)
    rng = np.random.default_rng(int(info.bits))
    x = rng.integers(info.min, info.max, (5, 6), dtype=dtype, endpoint=True)
    x[1:4, 2:5] = value
    w = np.full((3, 3), value, dtype=dtype)
    w[0, 0] = 1
    xs, ws = x.astype(object).tolist(), w.astype(object).tolist()
    exact_or_overflow(lambda: dilconv.conv2d(x, w), loop_correlate(xs, ws))
    ones = np.ones((3, 3), dtype=dtype)
    exact_or_overflow(lambda: dilconv.conv2d(x, ones), loop_correlate(xs, ones.tolist()))
    # the adjoint identity in Python integers: <conv(z, w), g> == <z, conv_t(g, w)>
    g = np.full((3, 4), value, dtype=dtype)
    expected_t = [[0] * 6 for _ in range(5)]
    for r in range(3):
        for c in range(4):
            for i in range(3):
                for j in range(3):
                    expected_t[r + i][c + j] += int(g[r, c]) * ws[i][j]
    exact_or_overflow(lambda: dilconv.conv2d_transpose(g, w), expected_t)
    exact_or_overflow(lambda: dilconv.conv2d_grad_input(g, w, (5, 6)), expected_t)
    expected_w = loop_correlate(xs, g.astype(object).tolist())
    exact_or_overflow(lambda: dilconv.conv2d_grad_weight(x, g, (3, 3)), expected_w)
    exact_or_overflow(lambda: dilconv.conv2d_grad_bias(g), [int(g.astype(object).sum())])


def test_issue_integer_examples() -> None:
    with pytest.raises(OverflowError, match=r"holds 20752587082923245568, outside int64"):
        dilconv.conv2d(np.full((3, 3), 2**61), np.ones((3, 3), int))
    assert dilconv.conv2d(np.full((3, 3), 2**59), np.ones((3, 3), int))[0, 0] == 9 * 2**59
    near = np.full((4, 4), 2**32 - 1, dtype=np.uint32)
    y = dilconv.conv2d(near, np.ones((2, 2), np.uint32))
    assert y.dtype == np.int64
    assert (y == 4 * (2**32 - 1)).all()
    # sums beyond int64 on the way that cancel: exact, not refused
    x = np.array([[2**62, 2**62, -(2**62), -(2**62)]] * 2)
    assert dilconv.conv2d(x, np.array([[3, 3, 3, 3]])).tolist() == [[0], [0]]
    # uint64 beyond int64, whose difference fits: exact
    big = np.array([[2**63 + 5, 2**63]], dtype=np.uint64)
    assert dilconv.conv2d(big, np.array([[1, -1]], np.int8)).tolist() == [[5]]
    with pytest.raises(OverflowError, match=r"holds 18446744073709551615,"):
        dilconv.conv2d(np.array([[2**64 - 1]], np.uint64), np.ones((1, 1), np.uint8))


def test_mixed_integer_dtypes_stay_exact() -> None:
    """``result_type(uint64, int64)`` is float64; integers are exact int64 all the same."""
    x = np.array([[2**53 + 1, 0]], dtype=np.uint64)
    y = dilconv.conv2d(x, np.array([[1, 1]], dtype=np.int64))
    assert y.dtype == np.int64
    assert y.tolist() == [[2**53 + 1]]
    reflected = dilconv.conv2d(
        x, np.array([[1, 1]], dtype=np.int8), padding_mode="reflect", padding=(0, 1)
    )
    assert reflected.tolist() == [[2**53 + 1] * 3]


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular", "symmetric"])
def test_exact_path_in_every_padding_mode(mode: str) -> None:
    """Values of +-2**29: every sum's bound leaves int64, so the Python-integer path
    runs; the answers are the small ones times 2**58, or an OverflowError."""
    rng = np.random.default_rng(11)
    options: dict[str, Any] = {"padding": 1, "padding_mode": mode, "dilation": 2}
    x, w = rng.choice([-1, 1], (1, 2, 5, 5)), rng.choice([-1, 1], (3, 2, 3, 3))
    g = rng.choice([-1, 1], dilconv.output_shape(x.shape, w.shape, padding=1, dilation=2))
    scale, big = 2**58, 2**29
    calls = [
        (lambda a, b: dilconv.conv2d(a, b, **options), x, w),
        (lambda a, b: dilconv.conv2d_grad_input(a, b, x.shape, **options), g, w),
        (lambda a, b: dilconv.conv2d_grad_weight(a, b, w.shape, **options), x, g),
    ]
    for call, a, b in calls:
        small = call(a, b)
        expected = [int(v) * scale for v in small.ravel()]
        exact_or_overflow(lambda call=call, a=a, b=b: call(a * big, b * big), expected)

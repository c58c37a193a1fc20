"""``dilconv demo``: the tutorial's experiment, every route side by side, with a verdict."""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

#: Largest difference still called agreement (the integer routes are exact; the
#: float32 frameworks round).
AGREE_TOLERANCE = 1e-3


def dilation_range(text: str) -> list[int]:
    """``"1..4"`` or ``"1,2,4"`` -> a list of dilations."""
    try:
        if ".." in text:
            lo, hi = (int(v) for v in text.split(".."))
            values = list(range(lo, hi + 1))
        else:
            values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A..B or A,B,C; got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"dilations must be >= 1, got {text!r}")
    return values


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the tutorial's experiment: NumPy against the frameworks")
    p.add_argument("--dilations", type=dilation_range, default=[1, 2, 3, 4], help="e.g. 1..4")
    p.add_argument("--size", type=int, default=None, help="matrix size (default: fits them all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--padding", choices=("valid", "same"), default="valid")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument(
        "--rank",
        type=int,
        choices=(1, 2, 3),
        default=2,
        help="1: a signal and conv1d; 2: the tutorial's matrix (default); 3: a volume and conv3d",
    )
    p.set_defaults(run=run)


def routes() -> list[Any]:
    """The routes the demo compares: the NumPy ones, then TensorFlow's and PyTorch's.

    A peer that is not installed is reported by the experiment with its install command.
    """
    from dilconv.tutorial import NUMPY_ROUTES, PEER_ROUTES

    return [*NUMPY_ROUTES, *PEER_ROUTES]


def flip_line(x: np.ndarray, kernel: np.ndarray, dilations: list[int], padding: str) -> str:
    """The tutorial's point 6 in one line: without the flip TensorFlow disagrees."""
    from dilconv.tutorial import RouteUnavailable, flip_check

    try:
        found = flip_check(x, kernel, dilations, padding)
    except RouteUnavailable as missing:
        return f"Flip check skipped: {missing}"
    diffs = ", ".join(f"{v:g} at d={d}" for d, v in found.items())
    verdict = "disagrees" if all(v > AGREE_TOLERANCE for v in found.values()) else "AGREES (?)"
    return (
        f"Without the flip, tf.nn.conv2d {verdict} with convolve2d on this asymmetric kernel "
        f"(it computes cross-correlation): largest difference {diffs}"
    )


def _grid(a: np.ndarray) -> str:
    return "\n".join("  " + " ".join(f"{v:>5g}" for v in row) for row in np.asarray(a))


def _show(a: np.ndarray) -> str:
    """A signal as one row; a volume as its shape, sum and middle plane."""
    a = np.asarray(a)
    if a.ndim == 1:
        return _grid(a[None])
    if a.ndim == 2:
        return _grid(a)
    mid = a.shape[0] // 2
    return f"  shape {a.shape}, sum {a.sum():g}; plane {mid} of {a.shape[0]}:\n{_grid(a[mid])}"


def run_rank(args: argparse.Namespace) -> int:
    """The experiment in 1-D or 3-D (:mod:`dilconv.tutorial_nd`)."""
    from dilconv.tutorial_nd import default_size, inputs, run_experiment

    size = args.size if args.size is not None else default_size(args.rank, args.dilations)
    if size < 1:
        raise ValueError(f"--size must be >= 1, got {size}")
    x, kernel = inputs(args.rank, size, args.seed)
    found = run_experiment(x, kernel, args.dilations, args.padding)
    agree = all(r.max_difference <= AGREE_TOLERANCE for r in found)
    if args.json:
        print(
            json.dumps(
                {
                    "rank": args.rank,
                    "input": x.tolist(),
                    "kernel": kernel.tolist(),
                    "padding": args.padding,
                    "dilations": [
                        {
                            "dilation": r.dilation,
                            "dilated_kernel": r.dilated_kernel.tolist(),
                            "results": {k: v.tolist() for k, v in r.results.items()},
                            "unavailable": r.unavailable,
                            "differences": {
                                f"{a} vs {b}": v for (a, b), v in r.differences.items()
                            },
                            "max_difference": r.max_difference,
                        }
                        for r in found
                    ],
                    "agree": agree,
                },
                indent=1,
            )
        )
        return 0 if agree else 1
    what = "signal" if args.rank == 1 else "volume"
    print(f"The {what} ({'x'.join([str(size)] * args.rank)}, seed {args.seed}):\n{_show(x)}")
    print(f"The kernel:\n{_show(kernel)}")
    for r in found:
        print(f"\n=== dilation {r.dilation}: dilated kernel {r.dilated_kernel.shape} ===")
        for label, value in r.results.items():
            print(f"{label}  ->  {value.shape}\n{_show(value)}")
        for label, why in r.unavailable.items():
            print(f"{label}: {why}")
        for (a, b), diff in r.differences.items():
            print(f"  max |{a} - {b}| = {diff:.3g}")
        verdict = "agree" if r.max_difference <= AGREE_TOLERANCE else "DISAGREE"
        print(f"  verdict: {verdict} (largest difference {r.max_difference:.3g})")
    print(f"\nOverall: {'every route agrees at every dilation' if agree else 'routes DISAGREE'}")
    return 0 if agree else 1


def run(args: argparse.Namespace) -> int:
    from dilconv.tutorial import default_size, inputs, run_experiment

    if getattr(args, "rank", 2) != 2:
        return run_rank(args)

    size = args.size if args.size is not None else default_size(args.dilations)
    if size < 1:
        raise ValueError(f"--size must be >= 1, got {size}")
    x, kernel = inputs(size, args.seed)
    found = run_experiment(x, kernel, args.dilations, args.padding, routes())
    agree = all(r.max_difference <= AGREE_TOLERANCE for r in found)
    flip = flip_line(x, kernel, args.dilations, args.padding)
    if args.json:
        print(
            json.dumps(
                {
                    "matrix": x.tolist(),
                    "kernel": kernel.tolist(),
                    "padding": args.padding,
                    "dilations": [
                        {
                            "dilation": r.dilation,
                            "dilated_kernel": r.dilated_kernel.tolist(),
                            "results": {k: v.tolist() for k, v in r.results.items()},
                            "unavailable": r.unavailable,
                            "differences": {
                                f"{a} vs {b}": v for (a, b), v in r.differences.items()
                            },
                            "max_difference": r.max_difference,
                        }
                        for r in found
                    ],
                    "flip_check": flip,
                    "agree": agree,
                },
                indent=1,
            )
        )
        return 0 if agree else 1
    print(f"The matrix ({size}x{size}, seed {args.seed}):\n{_grid(x)}")
    print(f"The kernel:\n{_grid(kernel)}")
    for r in found:
        print(f"\n=== dilation {r.dilation}: dilated kernel {r.dilated_kernel.shape} ===")
        print(_grid(r.dilated_kernel))
        for label, value in r.results.items():
            print(f"{label}  ->  {value.shape}\n{_grid(value)}")
        for label, why in r.unavailable.items():
            print(f"{label}: not installed ({why})")
        for (a, b), diff in r.differences.items():
            print(f"  max |{a} - {b}| = {diff:.3g}")
        ok = r.max_difference <= AGREE_TOLERANCE
        verdict = "agree" if ok else "DISAGREE"
        print(f"  verdict: {verdict} (largest difference {r.max_difference:.3g})")
    print(f"\n{flip}")
    print(f"\nOverall: {'every route agrees at every dilation' if agree else 'routes DISAGREE'}")
    return 0 if agree else 1

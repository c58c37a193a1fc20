"""``dilconv bench``: time dilconv against PyTorch, TensorFlow and SciPy on named cases."""

from __future__ import annotations

import argparse

from dilconv.bench.runner import SETTLE_SECONDS
from dilconv.cli._options import STDOUT, add_report_options, write_report

#: The case names, in the order a full run takes them (kept in step with
#: ``dilconv.bench.cases.all_cases``, checked by the tests).
CASE_NAMES = (
    "seed", "context", "aspp", "wave", "backward", "transpose",
    "signal1d", "tcn1d", "volume3d", "back1d3d", "stream", "cold",
)  # fmt: skip


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="time dilconv against the peers",
        description="Time every case side by side (alternating, warm-up first, medians) "
        "and print a table; --json gives the full record.",
    )
    p.add_argument(
        "--cases",
        type=_names,
        default=None,
        help=f"comma-separated, among: {','.join(CASE_NAMES)} (default: all)",
    )
    p.add_argument(
        "--methods",
        type=_names,
        default=None,
        help="comma-separated dilconv algorithms to time besides auto (default: all but direct)",
    )
    p.add_argument(
        "--peers",
        type=_names,
        default=["torch", "tensorflow", "scipy"],
        help="comma-separated peers (default: torch,tensorflow,scipy)",
    )
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run, not a result")
    p.add_argument("--repeats", type=int, default=7, help="timed runs per contender (default 7)")
    p.add_argument(
        "--settle",
        type=float,
        default=SETTLE_SECONDS,
        help="seconds of pause before each timed call, spent spinning on every core, so no "
        "contender runs while another library's idle threads still spin and none starts "
        f"on halted cores (default {SETTLE_SECONDS})",
    )
    add_report_options(p, "the full record")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from dilconv.bench import render
    from dilconv.bench import run as run_bench

    peers = tuple(args.peers)
    unknown = [p for p in peers if p not in ("torch", "tensorflow", "scipy")]
    if unknown:
        raise ValueError(f"--peers must be among torch, tensorflow, scipy; got {unknown}")
    result = run_bench(
        args.cases,
        methods=None if args.methods is None else tuple(args.methods),
        peers=peers,
        quick=args.quick,
        repeats=args.repeats,
        progress=not args.no_progress,
        settle=args.settle,
    )
    if args.json != STDOUT:
        print(render(result))
    if args.json is not None:
        write_report(args.json, result)
    return 0

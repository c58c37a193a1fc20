"""``dilconv verify``: a randomized parity sweep against PyTorch, TensorFlow, JAX and SciPy."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from dilconv.cli._options import STDOUT, add_report_options, write_report


def _names(choices: tuple[str, ...], what: str) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [part.strip() for part in text.split(",") if part.strip()]
        unknown = [n for n in names if n not in choices]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"{what} must be a comma-separated list from {', '.join(choices)}; got {text!r}"
            )
        return names

    return parse


def add_parser(sub: argparse._SubParsersAction) -> None:
    from dilconv.peers import ALL_OPS, OPS, PEERS

    p = sub.add_parser(
        "verify",
        help="randomized parity sweep against PyTorch, TensorFlow, JAX and SciPy",
        description=(
            "Run random calls of conv2d, conv2d_transpose, conv2d_grad_input and "
            "conv2d_grad_weight (with --ops, also conv1d, conv3d, their transposes and "
            "gradients) on dilconv and on every installed peer, print one table "
            "and exit 1 on any mismatch. A case a peer refuses is counted as refused by "
            "peer, with its message."
        ),
    )
    p.add_argument("--count", type=int, default=200, help="number of cases (default 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the case generator")
    p.add_argument(
        "--ops",
        type=_names(ALL_OPS, "--ops"),
        default=list(OPS),
        help=f"from {','.join(ALL_OPS)} (default: the 2-D ones)",
    )
    p.add_argument(
        "--peers",
        type=_names(PEERS, "--peers"),
        default=None,
        help=f"from {','.join(PEERS)} (default: all)",
    )
    add_report_options(p, "the report")
    p.set_defaults(run=run)


#: XLA's algebraic simplifier aborts the whole process (``Check failed: ... Window
#: dimensions do not match RHS shape``) on some small transposed convolutions with
#: ``lhs_dilation`` (for example input 3x2, kernel 2x4, stride 2, padding 1, in JAX
#: 0.10). A crash cannot be reported as a refusal, so this command, whose process is
#: its own, runs XLA without that pass; JAX then computes those cases correctly.
XLA_WORKAROUND = "--xla_disable_hlo_passes=algsimp"


def _avoid_xla_abort() -> None:
    if "jax" in sys.modules:  # too late: XLA reads its flags once
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_disable_hlo_passes" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {XLA_WORKAROUND}".strip()


def run(args: argparse.Namespace) -> int:
    from dilconv.peers import PEERS

    if "jax" in (args.peers or PEERS):
        _avoid_xla_abort()
    from dilconv.verify import as_json, format_table, generate_cases, run_sweep

    if args.count < 1:
        raise ValueError(f"--count must be >= 1, got {args.count}")
    peers = args.peers or list(PEERS)
    cases = generate_cases(args.count, args.seed, args.ops)
    rows, missing = run_sweep(cases, peers, progress=False if args.no_progress else None)
    if args.json != STDOUT:
        print(f"dilconv verify: {len(cases)} cases, seed {args.seed}, ops {', '.join(args.ops)}")
        print(format_table(rows, missing))
    if args.json is not None:
        write_report(args.json, as_json(rows, missing, count=args.count, seed=args.seed))
    if any(r.failures for r in rows):
        return 1
    if args.peers and missing:  # a peer asked for by name must be there
        return 2
    if not rows:
        print("dilconv verify: no peer is installed; nothing was compared", flush=True)
        return 2
    return 0

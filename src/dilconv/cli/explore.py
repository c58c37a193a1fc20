"""``dilconv explore``: serve the interactive explorer on this machine."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explore", help="serve a local web page that shows what a dilated convolution reads"
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to listen on (default 127.0.0.1, this machine only)",
    )
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any free port)")
    p.add_argument("--quiet", action="store_true", help="do not log each request")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from dilconv.explore.server import LOOPBACK, serve

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be between 0 and 65535, got {args.port}")
    if args.host not in LOOPBACK:
        print(
            f"dilconv explore: warning: listening on {args.host}, so other machines can reach "
            "this server; it has no authentication. Use the default 127.0.0.1 unless you "
            "mean to share it.",
            file=sys.stderr,
        )
    serve(args.host, args.port, quiet=args.quiet)
    return 0

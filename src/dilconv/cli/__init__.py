"""The ``dilconv`` command: one subcommand per module of this package.

Each subcommand module defines ``add_parser(subparsers)``, which registers its
parser and sets ``run`` (a function of the parsed arguments returning the exit
status). Modules import their heavy dependencies inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import signal
import sys
from collections.abc import Sequence

from dilconv._version import __version__

#: Subcommands in the order ``dilconv --help`` lists them.
SUBCOMMANDS = ("demo", "conv", "verify", "bench", "figures", "explore", "apply")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every installed subcommand."""
    parser = argparse.ArgumentParser(
        prog="dilconv",
        description="Exact, fast and visible dilated (atrous) 2-D convolution.",
    )
    parser.add_argument("--version", action="version", version=f"dilconv {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        module_name = f"{__name__}.{name}"
        if importlib.util.find_spec(module_name) is not None:
            importlib.import_module(module_name).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from dilconv.cli._replace import Terminated

    try:
        return int(args.run(args))
    except (ValueError, TypeError, OverflowError, FileNotFoundError) as err:
        print(f"dilconv {args.command}: error: {err}", file=sys.stderr)
        return 2
    except MemoryError as err:
        detail = f": {err}" if str(err) else ""
        print(f"dilconv {args.command}: error: out of memory{detail}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dilconv {args.command}: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except Terminated:
        print(f"dilconv {args.command}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

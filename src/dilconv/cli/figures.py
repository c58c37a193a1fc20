"""``dilconv figures --out DIR``: write the tutorial's figures as PNG and SVG."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("figures", help="write the tutorial's figures (PNG and SVG) into a folder")
    p.add_argument("--out", type=Path, help="folder to write into (created; needed unless --list)")
    p.add_argument(
        "--format",
        dest="formats",
        default="png,svg",
        help="comma-separated formats among png, svg (default png,svg)",
    )
    p.add_argument("--only", nargs="+", metavar="NAME", help="write only these figures")
    p.add_argument("--list", action="store_true", help="list the figure names and exit")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from dilconv.viz import FIGURES, write_figures

    if args.list:
        for name, build in FIGURES.items():
            print(f"{name}: {(build.__doc__ or '').strip().splitlines()[0]}")
        return 0
    if args.out is None:
        raise ValueError("--out FOLDER is needed to write figures (only --list works without)")
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out must be a folder, got the file {args.out}")
    for path in write_figures(args.out, formats=formats, only=args.only):
        print(f"{path}  ({path.stat().st_size / 1024:.0f} KiB)")
    return 0

"""Command-line flags for the ``conv2d`` options, shared by every subcommand that convolves."""

from __future__ import annotations

import argparse
from typing import Any

from dilconv._methods import METHODS
from dilconv._spec import DATA_FORMATS, PADDING_MODES, PADDING_STRINGS


def int_list(text: str) -> tuple[int, ...]:
    """``"2"`` -> ``(2,)``, ``"2,3"`` -> ``(2, 3)``."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers separated by commas, got {text!r}"
        ) from None


def pair(text: str) -> int | tuple[int, int]:
    """An int or ``H,W``."""
    values = int_list(text)
    if len(values) == 1:
        return values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise argparse.ArgumentTypeError(f"expected N or H,W, got {text!r}")


def padding(text: str) -> Any:
    """``same``/``valid``/``full``, ``P``, ``PH,PW`` or ``TOP,BOTTOM,LEFT,RIGHT``."""
    if text.lower() in PADDING_STRINGS:
        return text.lower()
    values = int_list(text)
    if len(values) == 4:
        return (values[0], values[1]), (values[2], values[3])
    if len(values) in (1, 2):
        return pair(text)
    raise argparse.ArgumentTypeError(
        f"padding must be same, valid, full, P, PH,PW or TOP,BOTTOM,LEFT,RIGHT; got {text!r}"
    )


def add_conv_options(parser: argparse.ArgumentParser, *, methods: bool = True) -> None:
    """Add ``--stride --padding --dilation --groups --padding-mode --data-format --flip``."""
    parser.add_argument("--stride", type=pair, default=1, help="N or H,W (default 1)")
    parser.add_argument(
        "--padding", type=padding, default=0, help="same, valid, full, P, PH,PW or T,B,L,R"
    )
    parser.add_argument("--dilation", type=pair, default=1, help="N or H,W (default 1)")
    parser.add_argument("--groups", type=int, default=1)
    parser.add_argument("--padding-mode", choices=PADDING_MODES, default="zeros")
    parser.add_argument("--data-format", choices=DATA_FORMATS, default="NCHW")
    parser.add_argument(
        "--flip", action="store_true", help="true convolution (default: cross-correlation)"
    )
    if methods:
        parser.add_argument("--method", choices=("auto", *METHODS), default="auto")


def conv_options(args: argparse.Namespace, *, methods: bool = True) -> dict[str, Any]:
    """The ``conv2d`` keyword arguments from parsed flags."""
    options = {
        "stride": args.stride,
        "padding": args.padding,
        "dilation": args.dilation,
        "groups": args.groups,
        "padding_mode": args.padding_mode,
        "data_format": args.data_format,
        "flip": args.flip,
    }
    if methods:
        options["method"] = args.method
    return options

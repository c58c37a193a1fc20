"""Command-line flags for the ``conv2d`` options, shared by every subcommand that convolves."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

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


#: ``--json`` without a file (or ``--json -``): the record on stdout instead of the text.
STDOUT = "-"


def add_report_options(parser: argparse.ArgumentParser, what: str) -> None:
    """Add ``--json [FILE]`` and ``--no-progress``, the same on every long-running command."""
    parser.add_argument(
        "--json",
        nargs="?",
        const=STDOUT,
        default=None,
        metavar="FILE",
        help=f"{what} as JSON: on stdout instead of the text (no FILE, or -), or into FILE",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def write_report(target: str | Path, record: Any) -> None:
    """The JSON record on stdout (``-``) or into a file (its folder created, its path said)."""
    text = json.dumps(record, indent=1)
    if str(target) == STDOUT:
        print(text, flush=True)
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {path}")


def load_npy(path: Path, what: str) -> np.ndarray:
    """The array in an ``.npy`` file, its header checked against the file's size first.

    A header that promises more data than the file holds (a huge shape in a small
    file) is refused with a ValueError naming ``what``, instead of an attempt to
    allocate it.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    try:
        with path.open("rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            offset = f.tell()
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{what} {str(path)!r} is not a readable .npy file: {err}") from None
    count = 1
    for n in shape:
        count *= int(n)
    need = count * dtype.itemsize
    have = os.path.getsize(path) - offset
    if dtype.hasobject:
        raise ValueError(f"{what} {str(path)!r} holds Python objects; expected numbers")
    if need != have:
        raise ValueError(
            f"{what} {str(path)!r} is damaged: its header says {dtype} {tuple(shape)} "
            f"({need} bytes), but the file holds {have} bytes of data"
        )
    return np.load(path, allow_pickle=False)

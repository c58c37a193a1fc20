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
from dilconv._spec_nd import FORMATS, rank_of_format


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


def per_axis(text: str) -> int | tuple[int, ...]:
    """An int, or one per spatial axis: ``N``, ``W``, ``H,W`` or ``D,H,W``."""
    values = int_list(text)
    if len(values) == 1:
        return values[0]
    if len(values) <= 3:
        return values
    raise argparse.ArgumentTypeError(f"expected N, H,W or D,H,W, got {text!r}")


def padding_any_rank(text: str) -> Any:
    """A keyword (``causal`` included) or integers that :func:`padding_of` reads per rank."""
    if text.lower() in (*PADDING_STRINGS, "causal"):
        return text.lower()
    values = int_list(text)
    if len(values) in (1, 2, 3, 4, 6):
        return values[0] if len(values) == 1 else values
    raise argparse.ArgumentTypeError(
        f"padding must be same, valid, full, causal, P, one value per spatial axis or a "
        f"before,after pair per axis; got {text!r}"
    )


def padding_of(value: Any, rank: int) -> Any:
    """``--padding`` for a ``rank``-D input: ``rank`` values, one per axis, or ``2 * rank``,
    a before,after pair per axis (``PH,PW`` and ``T,B,L,R`` in 2-D).

    >>> padding_of((1, 2, 3, 4), 2), padding_of((1, 2), 1), padding_of((1, 2, 3), 3)
    (((1, 2), (3, 4)), ((1, 2),), (1, 2, 3))
    """
    if not isinstance(value, tuple) or len(value) == rank:
        return value
    if len(value) == 2 * rank:
        return tuple(zip(value[::2], value[1::2], strict=True))
    raise ValueError(
        f"--padding {','.join(map(str, value))} has {len(value)} values; a {rank}-D input "
        f"takes P, {rank} (one per axis) or {2 * rank} (before,after per axis)"
    )


#: The kernel's ndim -> the input's rank, when ``--data-format`` does not say it.
#: A 3-D kernel is a volume's; a 1-D signal with channels needs ``--data-format NCW``.
RANK_OF_KERNEL = {1: 1, 2: 2, 3: 3, 4: 2, 5: 3}


def add_conv_options(
    parser: argparse.ArgumentParser, *, methods: bool = True, ranks: bool = False
) -> None:
    """Add ``--stride --padding --dilation --groups --padding-mode --data-format --flip``.

    ``ranks``: 1-D and 3-D too (``apply``): a value per spatial axis and every layout.
    """
    axis_type, padding_type = (per_axis, padding_any_rank) if ranks else (pair, padding)
    per = "N, W, H,W or D,H,W" if ranks else "N or H,W"
    pads = (
        "same, valid, full, causal (1-D), P, one per axis or BEFORE,AFTER per axis"
        if ranks
        else "same, valid, full, P, PH,PW or T,B,L,R"
    )
    parser.add_argument("--stride", type=axis_type, default=1, help=f"{per} (default 1)")
    parser.add_argument("--padding", type=padding_type, default=0, help=pads)
    parser.add_argument("--dilation", type=axis_type, default=1, help=f"{per} (default 1)")
    parser.add_argument("--groups", type=int, default=1)
    parser.add_argument("--padding-mode", choices=PADDING_MODES, default="zeros")
    if ranks:
        parser.add_argument(
            "--data-format",
            choices=[f for rank in (1, 2, 3) for f in FORMATS[rank]],
            default=None,
            help="the input's layout (default: channels first, the rank from the kernel's "
            "ndim: 1 a signal, 2 or 4 an image, 3 or 5 a volume; a signal with channels "
            "needs NCW or NWC)",
        )
    else:
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


def rank_options(args: argparse.Namespace, kernel_ndim: int) -> tuple[int, dict[str, Any]]:
    """``(rank, options)`` of a command with ``ranks=True`` flags, for a kernel of this ndim."""
    rank = rank_of_format(args.data_format) or RANK_OF_KERNEL.get(kernel_ndim, 2)
    options = conv_options(args)
    options["data_format"] = args.data_format or FORMATS[rank][0]
    options["padding"] = padding_of(args.padding, rank)
    return rank, options


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

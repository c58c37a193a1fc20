"""``dilconv conv IN.npy KERNEL.npy OUT.npy``: one convolution of arrays on disk."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from dilconv.cli._options import add_conv_options, conv_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("conv", help="convolve an .npy array with an .npy kernel")
    p.add_argument("input", type=Path, help="input array (.npy)")
    p.add_argument("kernel", type=Path, help="kernel array (.npy)")
    p.add_argument("output", type=Path, help="where to write the result (.npy)")
    p.add_argument("--bias", type=Path, help="bias vector (.npy)")
    add_conv_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from dilconv import conv2d

    for path in (args.input, args.kernel, args.bias):
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
    x = np.load(args.input, allow_pickle=False)
    w = np.load(args.kernel, allow_pickle=False)
    bias = None if args.bias is None else np.load(args.bias, allow_pickle=False)
    y = conv2d(x, w, bias, **conv_options(args))
    np.save(args.output, y)
    print(f"{args.output}: {y.dtype} {y.shape}")
    return 0

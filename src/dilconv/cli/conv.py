"""``dilconv conv IN.npy KERNEL.npy OUT.npy``: one convolution of arrays on disk."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from dilconv.cli._options import add_conv_options, conv_options, load_npy


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("conv", help="convolve an .npy array with an .npy kernel")
    p.add_argument("input", type=Path, help="input array (.npy)")
    p.add_argument("kernel", type=Path, help="kernel array (.npy)")
    p.add_argument("output", type=Path, help="where to write the result (.npy, added if missing)")
    p.add_argument("--bias", type=Path, help="bias vector (.npy)")
    add_conv_options(p)
    p.set_defaults(run=run)


def npy_path(path: Path) -> Path:
    """Where ``np.save`` writes: the path itself if it ends in ``.npy``, else with it added."""
    return path if path.name.endswith(".npy") else path.with_name(path.name + ".npy")


def run(args: argparse.Namespace) -> int:
    from dilconv import conv2d

    x = load_npy(args.input, "input")
    w = load_npy(args.kernel, "kernel")
    bias = None if args.bias is None else load_npy(args.bias, "bias")
    y = conv2d(x, w, bias, **conv_options(args))
    output = npy_path(args.output)
    np.save(output, y)
    print(f"{output}: {y.dtype} {y.shape}")
    return 0

"""The cost model's constants and the terms every algorithm's estimate shares.

The constants (rates and fixed costs of this kind of machine) live in the data file
``cost_model.json`` beside this module, written by
``benchmarks/fit_cost_model.py --write``; nothing is pasted by hand. Each algorithm
declares its own ``estimate_seconds(spec, costs)`` beside its code, from these
constants and the helpers below.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

from dilconv._spec import ConvSpec

#: The data file of the constants, shipped in the wheel.
COST_FILE = Path(__file__).with_name("cost_model.json")


def load(path: Path = COST_FILE) -> dict[str, float]:
    """The constants of the file at ``path``, ``{name: value}``.

    Raises ValueError when a value is not a positive finite number.
    """
    data = json.loads(path.read_text(encoding="utf-8"))
    values = {}
    for name, entry in data["constants"].items():
        value = entry["value"]
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{path}: constant {name!r} must be a positive number, got {value!r}")
        values[name] = float(value)
    return values


#: The constants in use (``cost_model.json``); a test may set one for a call.
COST: dict[str, float] = load()


def gemm_seconds(
    spec: ConvSpec, m: float, k: float, n: float, costs: Mapping[str, float], shared: bool = False
) -> float:
    """Modelled time of an ``(m, k) @ (k, n)`` product.

    ``shared``: one of many small products spread over our own threads (BLAS on one
    thread each); otherwise BLAS threads the product itself, which is slow for a
    small ``k * n`` (measured on the ``context`` case).
    """
    if min(m, k, n) <= 0:
        return costs["tap"]
    rate = costs["gemm"] / (1 + costs["gemm_k"] / k + costs["gemm_n"] / n + costs["gemm_m"] / m)
    rate = rate / 2 if spec.dtype.itemsize >= 8 else rate
    if not shared and k * n < costs["small_kn"]:
        rate /= costs["small_penalty"]
    return 2 * m * k * n / rate + costs["tap"]


def gather_rate(run_bytes: float, costs: Mapping[str, float]) -> float:
    """Bytes per second of a gather whose contiguous runs are ``run_bytes`` long."""
    return costs["copy"] * run_bytes / (run_bytes + costs["run"])

"""The receptive-field panel: a stack typed as ``3:1,3:2,3:4``, its sizes and coverage."""

from __future__ import annotations

import re
from typing import Any

from dilconv.explore import _schema
from dilconv.explore._schema import ApiError
from dilconv.receptive import coverage, receptive_field

#: Most layers, and widest field, the panel draws.
MAX_LAYERS, MAX_FIELD = 10, 255
#: One number of a layer: ASCII digits only (``str.isdigit`` also accepts "³", which
#: ``int`` refuses).
_NUMBER = re.compile(r"[0-9]{1,6}")


def parse_stack(spec: str) -> list[tuple[int, int, int]]:
    """``"3:1,3:2,3:4"`` -> ``[(3, 1, 1), (3, 1, 2), (3, 1, 4)]``; ``k:d`` or ``k:d:s``.

    Examples
    --------
    >>> parse_stack("3:1, 3:2:2")
    [(3, 1, 1), (3, 2, 2)]
    """
    layers = []
    parts = [part.strip() for part in spec.split(",")]
    if len(parts) > MAX_LAYERS:
        raise ApiError(422, f"stack has {len(parts)} layers; at most {MAX_LAYERS}", field="stack")
    for n, part in enumerate(parts):
        pieces = part.split(":")
        if not 2 <= len(pieces) <= 3 or not all(_NUMBER.fullmatch(s.strip()) for s in pieces):
            raise ApiError(
                422,
                f"layer {n + 1} is {part!r}; write kernel:dilation or kernel:dilation:stride, "
                "for example 3:2",
                field="stack",
            )
        k, d, s = (int(v) for v in (*pieces, "1")[:3])
        for name, v, hi in (("kernel", k, 9), ("dilation", d, 64), ("stride", s, 4)):
            if not 1 <= v <= hi:
                raise ApiError(
                    422,
                    f"layer {n + 1}: {name} {v} must be between 1 and {hi}",
                    field="stack",
                    nearest=min(max(v, 1), hi),
                )
        layers.append((k, s, d))
    return layers


def receptive_view(obj: dict[str, Any]) -> dict[str, Any]:
    """Answer ``POST /api/receptive``: per-layer field sizes and the coverage map."""
    _schema.check_keys(obj, ("stack",))
    layers = parse_stack(_schema.text(obj, "stack", "3:1,3:2,3:4", 200))
    rows = receptive_field(layers)
    if rows[-1].size > MAX_FIELD:
        raise ApiError(
            422,
            f"the receptive field is {rows[-1].size} pixels wide; the panel draws at most "
            f"{MAX_FIELD}; use fewer or less dilated layers",
            field="stack",
        )
    cover = coverage(layers)
    return {
        "layers": [
            {"kernel": k, "stride": s, "dilation": d, "size": r.size, "jump": r.jump}
            for (k, s, d), r in zip(layers, rows, strict=True)
        ],
        "coverage": cover.tolist(),
        "holes": int((cover == 0).sum()),
    }

"""The 1-D causal view: a stack of causal layers drawn as in the WaveNet paper.

``POST /api/causal`` takes ``layers`` typed as ``1,2,4,8`` (dilations) or
``1,2:2,4`` (``dilation:stride``), a ``kernel`` size and the input ``steps``, and
answers, for every level of the stack, how many positions it has and which
positions of the level below each one reads (:func:`dilconv.stream.causal_taps`),
and for every output the positions of every level it depends on
(:func:`dilconv.stream.causal_dependencies`). The page computes no index.
"""

from __future__ import annotations

from typing import Any

from dilconv.explore import _schema
from dilconv.explore._schema import ApiError
from dilconv.receptive import receptive_field
from dilconv.stream import causal_dependencies, causal_outputs, causal_taps

#: Caps: layers, dilation, stride, kernel, input steps.
MAX_LAYERS, MAX_DILATION, MAX_STRIDE, MAX_KERNEL, MAX_STEPS = 8, 32, 3, 4, 48


def parse_layers(spec: str, kernel: int) -> list[tuple[int, int, int]]:
    """``"1,2:2,4"`` -> ``[(k, 1, 1), (k, 2, 2), (k, 1, 4)]``: ``(kernel, stride, dilation)``.

    >>> parse_layers("1, 2:2", 3)
    [(3, 1, 1), (3, 2, 2)]
    """
    parts = [part.strip() for part in spec.split(",")]
    if len(parts) > MAX_LAYERS:
        raise ApiError(422, f"layers has {len(parts)} layers; at most {MAX_LAYERS}", field="layers")
    layers = []
    for n, part in enumerate(parts):
        pieces = part.split(":")
        if not 1 <= len(pieces) <= 2 or not all(p.strip().isdigit() for p in pieces):
            raise ApiError(422, f"layer {n + 1} is {part!r}; write dilation or dilation:stride, "
                           "for example 4 or 2:2", field="layers")  # fmt: skip
        d, s = (int(v) for v in (*pieces, "1")[:2])
        for name, v, hi in (("dilation", d, MAX_DILATION), ("stride", s, MAX_STRIDE)):
            if not 1 <= v <= hi:
                raise ApiError(422, f"layer {n + 1}: {name} {v} must be between 1 and {hi}",
                               field="layers", nearest=min(max(v, 1), hi))  # fmt: skip
        layers.append((kernel, s, d))
    return layers


def causal_view(obj: dict[str, Any]) -> dict[str, Any]:
    """Answer ``POST /api/causal``."""
    _schema.check_keys(obj, ("layers", "kernel", "steps"))
    kernel = _schema.integer(obj, "kernel", 2, 1, MAX_KERNEL)
    steps = _schema.integer(obj, "steps", 32, 4, MAX_STEPS)
    layers = parse_layers(_schema.text(obj, "layers", "1,2,4,8", 200), kernel)
    sizes = [steps]
    for _, s, _ in layers:
        sizes.append(causal_outputs(0, sizes[-1], s))
    reads = [
        [causal_taps(o, kernel_size=k, stride=s, dilation=d) for o in range(sizes[n + 1])]
        for n, (k, s, d) in enumerate(layers)
    ]
    deps = [causal_dependencies(t, layers) for t in range(sizes[-1])]
    return {
        "layers": [{"kernel": k, "stride": s, "dilation": d} for k, s, d in layers],
        "sizes": sizes,
        "reads": reads,
        "depends": deps,
        "receptive_field": receptive_field(layers)[-1].size,
    }

"""The algorithms: one module each, one signature, registered in one table.

Every algorithm is ``conv(x, w, spec) -> y``: the zero-padded cross-correlation of
``x`` ``(N, H, W, C)`` with ``w`` ``(kh, kw, C/groups, O)`` described by the lowered
:class:`~dilconv._spec.ConvSpec`, computed in ``spec.dtype``, returning
``(N, Ho, Wo, O)``. Each module also says how much scratch memory it needs
(``workspace_bytes``), which specs it cannot do (``refusal``) and how long it
expects to take (``estimate_seconds(spec, costs)``, from the constants of
:mod:`dilconv._cost`); :mod:`dilconv._select` only asks each of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from types import ModuleType

import numpy as np

from dilconv._methods import (
    blocked,
    compiled,
    dilated_kernel,
    direct,
    fft,
    im2col,
    shift_add,
    space_to_batch,
    tap_gemm,
    winograd,
)
from dilconv._spec import ConvSpec


@dataclasses.dataclass(frozen=True)
class Method:
    """A registered algorithm."""

    name: str
    conv: Callable[[np.ndarray, np.ndarray, ConvSpec], np.ndarray]
    workspace_bytes: Callable[[ConvSpec], int]
    refusal: Callable[[ConvSpec], str | None]
    estimate_seconds: Callable[[ConvSpec, Mapping[str, float]], float]
    summary: str
    auto: bool = True  # whether "auto" may choose it (the loop oracle: never)


def _register(name: str, module: ModuleType, auto: bool = True) -> Method:
    doc = (module.__doc__ or name).strip().splitlines()[0]
    return Method(
        name,
        module.conv,
        module.workspace_bytes,
        module.refusal,
        module.estimate_seconds,
        doc,
        auto,
    )


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        _register("direct", direct, auto=False),
        _register("dilated_kernel", dilated_kernel),
        _register("shift_add", shift_add),
        _register("compiled", compiled),
        _register("blocked", blocked),
        _register("winograd", winograd),
        _register("tap_gemm", tap_gemm),
        _register("im2col", im2col),
        _register("space_to_batch", space_to_batch),
        _register("fft", fft),
    )
}

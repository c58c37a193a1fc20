"""The algorithms: one module each, one signature, registered in one table.

Every algorithm is ``conv(x, w, spec) -> y``: the zero-padded cross-correlation of
``x`` ``(N, H, W, C)`` with ``w`` ``(kh, kw, C/groups, O)`` described by the lowered
:class:`~dilconv._spec.ConvSpec`, computed in ``spec.dtype``, returning
``(N, Ho, Wo, O)``. Each module also says how much scratch memory it needs
(``workspace_bytes``) and which specs it cannot do (``refusal``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
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
    summary: str


def _register(name: str, module: ModuleType) -> Method:
    doc = (module.__doc__ or name).strip().splitlines()[0]
    return Method(name, module.conv, module.workspace_bytes, module.refusal, doc)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        _register("direct", direct),
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

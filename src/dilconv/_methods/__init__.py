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
import functools
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


#: An algorithm's run: two arrays and the spec they follow.
Run = Callable[[np.ndarray, np.ndarray, ConvSpec], np.ndarray]


def shapes(
    spec: ConvSpec, *names: str, channels_first: bool = False
) -> tuple[tuple[int, ...], ...]:
    """The shapes the lowered ``spec`` gives arrays ``names``: ``"x"`` the input
    ``(N, H, W, C)`` (``(N, C, H, W)`` where ``channels_first``), ``"w"`` the weights
    ``(kh, kw, C/groups, O)``, ``"g"`` the output (or its gradient) ``(N, Ho, Wo, O)``.

    Examples
    --------
    >>> from dilconv._spec import make_spec
    >>> spec = make_spec((1, 8, 8, 2), (3, 3, 2, 4), stride=2, data_format="NHWC")
    >>> shapes(spec, "x", "w", "g")
    ((1, 8, 8, 2), (3, 3, 2, 4), (1, 3, 3, 4))
    """
    (h, w), c = spec.in_hw, spec.in_channels
    known = {
        "x": (spec.batch, c, h, w) if channels_first else (spec.batch, h, w, c),
        "w": (*spec.kernel_hw, spec.in_per_group, spec.out_channels),
        "g": (spec.batch, *spec.out_hw, spec.out_channels),
    }
    return tuple(map(known.__getitem__, names))


def agree(
    first: np.ndarray,
    second: np.ndarray,
    spec: ConvSpec,
    *,
    names: tuple[str, str] = ("x", "w"),
    channels_first: bool = False,
) -> None:
    """Raise ``ValueError`` unless the two arrays have the shapes the lowered ``spec``
    gives ``names`` (see :func:`shapes`).

    Every algorithm reads and writes where its spec says; compiled ones hand
    addresses to machine code. Checked once, at the registries (forward, transposed,
    weight gradient), for each of them (about a microsecond), so arrays smaller than
    their spec never reach that code.

    Examples
    --------
    >>> from dilconv._spec import make_spec
    >>> spec = make_spec((1, 8, 8, 2), (3, 3, 2, 4), data_format="NHWC")
    >>> agree(np.ones((1, 8, 8, 2)), np.ones((3, 3, 2, 4)), spec)
    >>> agree(np.ones((1, 4, 4, 2)), np.ones((3, 3, 2, 4)), spec)
    Traceback (most recent call last):
    ...
    ValueError: x: shape (1, 4, 4, 2), expected the spec's (1, 8, 8, 2)
    """
    expected = shapes(spec, *names, channels_first=channels_first)
    for name, array, shape in zip(names, (first, second), expected, strict=True):
        if array.shape != shape:
            raise ValueError(f"{name}: shape {array.shape}, expected the spec's {shape}")


def guarded(run: Run, names: tuple[str, str] = ("x", "w")) -> Run:
    """``run`` preceded by :func:`agree` of its two arrays, called ``names``."""

    @functools.wraps(run)
    def checked(first: np.ndarray, second: np.ndarray, spec: ConvSpec) -> np.ndarray:
        agree(first, second, spec, names=names)
        return run(first, second, spec)

    return checked


def _register(name: str, module: ModuleType, auto: bool = True) -> Method:
    doc = (module.__doc__ or name).strip().splitlines()[0]
    return Method(
        name,
        guarded(module.conv),
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

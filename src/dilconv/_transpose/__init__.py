"""Transposed-convolution algorithms: one module each, one signature, one registry.

Every algorithm is ``conv_transpose(g, w, spec) -> x``: the exact adjoint of the
zero-padded cross-correlation that the lowered forward
:class:`~dilconv._spec.ConvSpec` describes. ``g`` has the forward output's shape
``(N, Ho, Wo, O)``, ``w`` is the forward weight ``(kh, kw, C/groups, O)``, and the
result has the forward input's shape ``(N, H, W, C)``, in ``spec.dtype``.

``"direct"`` is the loop oracle (never optimised, never chosen by ``"auto"``);
``"scatter"`` is the per-tap scatter-add (any stride, no zero ever inserted);
``"correlate"`` runs a stride-1 transposed convolution as the forward correlation
with the reversed kernel, on the forward engine; ``"phase"`` does the same for the
one phase of the result that a stride dividing the dilation reaches.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

import numpy as np

from dilconv import _exact, _select
from dilconv._config import get_workspace_limit
from dilconv._layout import from_canonical, to_canonical, weight_to_canonical
from dilconv._methods import guarded
from dilconv._native import pool
from dilconv._padding import pad_spatial_adjoint
from dilconv._spec import ConvSpec
from dilconv._transpose import correlate, direct, phase, scatter


@dataclasses.dataclass(frozen=True)
class TransposeMethod:
    """A registered transposed-convolution algorithm."""

    name: str
    conv_transpose: Callable[[np.ndarray, np.ndarray, ConvSpec], np.ndarray]
    workspace_bytes: Callable[[ConvSpec], int]
    refusal: Callable[[ConvSpec], str | None]
    estimate_seconds: Callable[[ConvSpec, Mapping[str, float]], float]
    summary: str
    auto: bool = True  # whether "auto" may choose it (the loop oracle: never)


def _register(name: str, module: ModuleType, auto: bool = True) -> TransposeMethod:
    doc = (module.__doc__ or name).strip().splitlines()[0]
    return TransposeMethod(
        name,
        guarded(module.conv_transpose, ("g", "w")),
        module.workspace_bytes,
        module.refusal,
        module.estimate_seconds,
        doc,
        auto,
    )


TRANSPOSE_METHODS: dict[str, TransposeMethod] = {
    m.name: m
    for m in (
        _register("direct", direct, auto=False),
        _register("scatter", scatter),
        _register("correlate", correlate),
        _register("phase", phase),
    )
}


@functools.lru_cache(maxsize=256)
def _auto_choice(lowered: ConvSpec, limit: int, threads: int, fft: bool) -> str:
    """``"auto"``'s pick for a lowered spec under the settings it depends on (the
    estimates ask the forward engine's choice for each candidate's inner correlation:
    worth remembering, a fifth of a millisecond per call)."""
    if not _select.eligible(TRANSPOSE_METHODS, lowered):
        raise ValueError(
            f"no transposed-convolution method fits the workspace limit of "
            f"{get_workspace_limit() / 2**20:.1f} MiB (dilconv.set_workspace_limit): "
            + ", ".join(
                f"{name!r} needs {m.workspace_bytes(lowered) / 2**20:.1f} MiB"
                for name, m in TRANSPOSE_METHODS.items()
                if m.auto and m.refusal(lowered) is None
            )
        )
    return _select.best(TRANSPOSE_METHODS, lowered, "transposed algorithm")


def resolve_transpose_method(method: Any, spec: ConvSpec) -> str:
    """Check ``method`` against the registry, the spec and the workspace limit.

    ``"auto"`` asks each algorithm through :func:`dilconv._select.best`: at stride 1
    ``"correlate"`` (the forward engine's fastest method for the equivalent
    correlation); where the stride divides the dilation, ``"phase"`` (the same, on
    the one phase of the result the taps reach); ``"scatter"`` (one product per tap
    on the region that tap reaches, nothing for the zeros between sources) wherever
    it is modelled faster or the others refuse.
    A method whose workspace exceeds :func:`dilconv.get_workspace_limit` is skipped
    by ``"auto"`` and refused by name with a ValueError naming both sizes and the
    setting, as in ``conv2d``.
    """
    if not isinstance(method, str):
        raise TypeError(f"method must be a str, got {method!r}")
    lowered = spec.lowered()
    if method == "auto":
        return _auto_choice(lowered, get_workspace_limit(), pool.num_threads(), _select.allow_fft())
    if method not in TRANSPOSE_METHODS:
        raise ValueError(
            f"method must be 'auto' or one of {sorted(TRANSPOSE_METHODS)}, got {method!r}"
        )
    reason = TRANSPOSE_METHODS[method].refusal(lowered)
    if reason is not None:
        raise ValueError(f"method={method!r} cannot compute this call: {reason}; use 'scatter'")
    need, limit = TRANSPOSE_METHODS[method].workspace_bytes(lowered), get_workspace_limit()
    if need > limit:
        raise ValueError(
            f"method={method!r} needs {need / 2**20:.1f} MiB of workspace, more than the "
            f"limit of {limit / 2**20:.1f} MiB (dilconv.set_workspace_limit); use "
            f"method='auto' or raise the limit"
        )
    return method


def adjoint_canonical(g: Any, w: np.ndarray, spec: ConvSpec, method: str) -> np.ndarray:
    """The adjoint of ``conv2d`` under ``spec`` applied to ``g``, as canonical NHWC.

    ``g`` is in the caller's layout with the forward output's shape, or fewer
    rows/columns at the end (a transposed convolution whose ``output_padding`` is at
    least the stride): the missing sources are zeros. A non-zero ``padding_mode``
    is undone by :func:`~dilconv._padding.pad_spatial_adjoint`, so the gradient of
    every reflected or wrapped pixel adds up into the pixel it was copied from.
    """
    gc = to_canonical(g, spec)
    (ho, wo), (gh, gw) = spec.out_hw, gc.shape[1:3]
    if (gh, gw) != (ho, wo):
        gc = np.pad(gc, ((0, 0), (0, ho - gh), (0, wo - gw), (0, 0)))
    run = _exact.conv_transpose if method == "exact" else TRANSPOSE_METHODS[method].conv_transpose
    x = run(gc, weight_to_canonical(w, spec), spec.lowered())
    if spec.padding_mode != "zeros":
        x = pad_spatial_adjoint(x, spec.pad, spec.padding_mode, spec.in_hw)
    return x


def run_conv_transpose(
    g: Any, w: np.ndarray, bias: np.ndarray | None, spec: ConvSpec, method: str
) -> np.ndarray:
    """The shared path of ``conv2d_transpose`` and ``conv2d_grad_input``.

    Returns the result in the caller's layout and rank, in ``spec.out_dtype``.
    Integer calls whose sums could leave int64 run on Python integers
    (:mod:`dilconv._exact`) and give int64 or an OverflowError, never a wrapped value.
    """
    terms = spec.kernel_hw[0] * spec.kernel_hw[1] * spec.out_per_group
    if _exact.overflows(spec, g, w, terms, bias):
        spec, method = _exact.exact_spec(spec), "exact"
    x = adjoint_canonical(g, w, spec, method)
    if bias is not None:
        x += bias.astype(spec.dtype)
    return _exact.to_int64(from_canonical(x, spec), "the transposed convolution")

"""The real frameworks, each behind one adapter: PyTorch, TensorFlow, JAX and SciPy.

Each adapter module (``dilconv.peers.torch`` and so on) imports its framework
only when a route first runs, and raises :class:`~dilconv.tutorial.RouteUnavailable`
with the install command when the framework is missing. ``ROUTES`` of an adapter
lists the ways that peer computes dilconv's operations.

Examples
--------
>>> from dilconv.peers import PEERS, load
>>> PEERS
('torch', 'tensorflow', 'jax', 'scipy')
>>> sorted({route.op for route in load("scipy").ROUTES})
['conv2d']
"""

from __future__ import annotations

import importlib
from types import ModuleType

from dilconv.peers._base import (
    INSTALL,
    OPS,
    Case,
    NotApplicable,
    PeerRefused,
    Route,
    available,
)

#: Every operation a case can name: the 2-D ones (``OPS``, what ``dilconv verify`` runs
#: by default), then those of 1-D and 3-D.
ALL_OPS = (
    *OPS,
    "conv1d",
    "conv1d_transpose",
    "conv1d_grad_input",
    "conv1d_grad_weight",
    "conv3d",
    "conv3d_transpose",
    "conv3d_grad_input",
    "conv3d_grad_weight",
)

#: The peers, in the order tables list them.
PEERS = ("torch", "tensorflow", "jax", "scipy")


def load(peer: str) -> ModuleType:
    """The adapter module of ``peer`` (importing it does not import the framework)."""
    if peer not in PEERS:
        raise ValueError(f"peer must be one of {list(PEERS)}, got {peer!r}")
    return importlib.import_module(f"{__name__}.{peer}")


def routes(peer: str) -> tuple[Route, ...]:
    """Every route of ``peer``: its 2-D ones, then those of 1-D and 3-D
    (:mod:`dilconv.peers.ranks`)."""
    from dilconv.peers.ranks import ROUTES_ND

    return tuple(load(peer).ROUTES) + ROUTES_ND[peer]


__all__ = [
    "ALL_OPS",
    "INSTALL",
    "OPS",
    "PEERS",
    "Case",
    "NotApplicable",
    "PeerRefused",
    "Route",
    "available",
    "load",
    "routes",
]

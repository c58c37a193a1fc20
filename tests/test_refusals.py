"""Invalid input: where every peer refuses a call, dilconv refuses it too, with its own message.

Each row of ``TABLE`` is a ``conv2d`` call with a kernel larger than the padded
input, channels that do not match ``w`` and ``groups``, or a zero-size
dimension. The call is run on every installed peer (through the adapters, so a
peer that cannot express a call, such as TensorFlow told a ``groups`` its shapes
contradict, is left out). dilconv refuses every row, those some peer accepts
included (JAX, for one, returns an empty array for a kernel larger than the
input); the test checks the rule where it binds and records what the peers did.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import dilconv
from dilconv.peers import PEERS, Case, NotApplicable, PeerRefused, available, routes
from tests.extras import missing

pytestmark = pytest.mark.peers

#: (name, x shape, w shape, options, dilconv's message as a regex)
TABLE: list[tuple[str, tuple[int, ...], tuple[int, ...], dict[str, Any], str]] = [
    ("kernel larger than the input", (1, 2, 5, 5), (3, 2, 7, 7), {},
     r"dilated kernel \(7x7: kernel \(7, 7\).*larger than the padded input \(5x5\)"),
    ("dilated kernel larger than the input", (1, 2, 5, 5), (3, 2, 3, 3), {"dilation": 3},
     r"dilated kernel \(7x7: kernel \(3, 3\), dilation \(3, 3\)\) is larger than the padded"),
    ("dilated kernel larger than the padded input", (1, 2, 4, 4), (3, 2, 3, 3),
     {"dilation": 3, "padding": 1}, r"larger than the padded input \(6x6\)"),
    ("2-D: dilated kernel larger than the image", (5, 5), (4, 4), {"dilation": 2},
     r"dilated kernel \(7x7.*larger than the padded input \(5x5\)"),
    ("NHWC: dilated kernel larger than the input", (2, 6, 9, 3), (3, 3, 3, 4),
     {"dilation": (3, 1), "data_format": "NHWC"}, r"dilated kernel \(7x3"),
    ("channels not matching w", (1, 4, 8, 8), (6, 3, 3, 3), {},
     r"w shape \(6, 3, 3, 3\) has 3 input channels per group; x has 4 channels"),
    ("NHWC: channels not matching w", (1, 8, 8, 4), (3, 3, 3, 6), {"data_format": "NHWC"},
     r"w shape \(3, 3, 3, 6\) has 3 input channels per group; x has 4 channels"),
    ("groups not dividing the input channels", (1, 4, 8, 8), (6, 2, 3, 3), {"groups": 3},
     r"groups=3 must divide the input channels, got 4"),
    ("groups not dividing the output channels", (1, 4, 8, 8), (5, 2, 3, 3), {"groups": 2},
     r"groups=2 must divide the output channels of w, got 5"),
    ("channels per group not matching", (1, 6, 8, 8), (6, 2, 3, 3), {"groups": 2},
     r"has 2 input channels per group; x has 6 channels and groups=2, so expected 3"),
    ("zero-size batch", (0, 2, 8, 8), (3, 2, 3, 3), {},
     r"x must have no zero-size dimension, got shape \(0, 2, 8, 8\)"),
    ("zero-size height", (1, 2, 0, 8), (3, 2, 3, 3), {},
     r"x must have no zero-size dimension, got shape \(1, 2, 0, 8\)"),
    ("zero-size channels", (1, 0, 8, 8), (3, 0, 3, 3), {},
     r"x must have no zero-size dimension, got shape \(1, 0, 8, 8\)"),
    ("zero-size kernel", (1, 2, 8, 8), (3, 2, 0, 3), {},
     r"w must have no zero-size dimension, got shape \(3, 2, 0, 3\)"),
    ("zero-size output channels", (1, 2, 8, 8), (0, 2, 3, 3), {},
     r"w must have no zero-size dimension, got shape \(0, 2, 3, 3\)"),
]  # fmt: skip


@pytest.fixture(scope="module")
def installed() -> list[str]:
    peers = [p for p in PEERS if available(p) is None]
    if not peers:
        missing("no peer is installed: pip install -e '.[peers]'")
    return peers


def peer_verdicts(peers: list[str], case: Case) -> dict[str, str]:
    """route label -> "refuses: message" or "accepts shape" (routes that cannot say it left out)."""
    verdicts = {}
    for peer in peers:
        for route in routes(peer):
            if route.op != "conv2d":
                continue
            try:
                out = route.compute(case)
            except NotApplicable:
                continue
            except PeerRefused as refusal:
                verdicts[f"{peer} {route.label}"] = f"refuses: {refusal}"
                continue
            verdicts[f"{peer} {route.label}"] = f"accepts {out.shape}"
    return verdicts


@pytest.mark.parametrize(("name", "x_shape", "w_shape", "options", "message"), TABLE,
                         ids=[row[0] for row in TABLE])  # fmt: skip
def test_dilconv_refuses_what_every_peer_refuses(
    installed: list[str],
    name: str,
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    options: dict[str, Any],
    message: str,
) -> None:
    x, w = np.ones(x_shape), np.ones(w_shape)
    verdicts = peer_verdicts(installed, Case("conv2d", options, x_shape, w_shape, x=x, w=w))
    assert verdicts, f"{name}: no peer could express the call"
    every_peer_refuses = all(v.startswith("refuses") for v in verdicts.values())
    with pytest.raises(ValueError, match=message):
        dilconv.conv2d(x, w, **options)
    with pytest.raises(ValueError, match=message):  # the shape helper says the same
        dilconv.output_shape(x_shape, w_shape, **options)
    if not every_peer_refuses:  # dilconv is stricter than some peer: that peer returned a result
        assert any(v.startswith("accepts") for v in verdicts.values())


def test_the_table_binds(installed: list[str]) -> None:
    """Enough rows are refused by every peer for the rule to be tested, of each kind."""
    binding = []
    for name, x_shape, w_shape, options, _ in TABLE:
        case = Case("conv2d", options, x_shape, w_shape, x=np.ones(x_shape), w=np.ones(w_shape))
        if all(v.startswith("refuses") for v in peer_verdicts(installed, case).values()):
            binding.append(name)
    assert {"channels not matching w", "groups not dividing the output channels",
            "zero-size kernel"} <= set(binding), binding  # fmt: skip

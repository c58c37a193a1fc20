"""The explorer's 1-D causal view: its API, and the page in headless Chromium."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from dilconv.explore._causal import causal_view
from dilconv.explore._schema import ApiError
from dilconv.receptive import receptive_field
from dilconv.stream import causal_dependencies, causal_taps
from tests.test_explore_browser import browser_context, server  # noqa: F401 (fixtures)


def test_api_answers_from_the_stream_module() -> None:
    view = causal_view({"layers": "1,2:2,4", "kernel": 3, "steps": 20})
    layers = [(3, 1, 1), (3, 2, 2), (3, 1, 4)]
    assert view["sizes"] == [20, 20, 10, 10]
    assert view["reads"][1][4] == causal_taps(4, kernel_size=3, stride=2, dilation=2)
    assert view["depends"][9] == causal_dependencies(9, layers)
    assert view["receptive_field"] == receptive_field(layers)[-1].size
    json.dumps(view, allow_nan=False)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({"layers": "1,x"}, r"layer 2 is 'x'; write dilation or dilation:stride"),
        ({"layers": "1,64"}, r"layer 2: dilation 64 must be between 1 and 32"),
        ({"layers": "1:4"}, r"layer 1: stride 4 must be between 1 and 3"),
        ({"layers": ",".join(["1"] * 9)}, r"layers has 9 layers; at most 8"),
        ({"steps": 100}, r"steps must be between 4 and 48, got 100"),
        ({"kernel": True}, r"kernel must be an integer"),
        ({"dilations": "1"}, r"unknown key 'dilations'"),
    ],
)
def test_api_refuses(body: dict[str, Any], match: str) -> None:
    with pytest.raises(ApiError, match=match):
        causal_view(body)


@pytest.fixture
def causal_page(browser_context: Any, server: Any) -> Iterator[Any]:  # noqa: F811
    pg = browser_context.new_page()
    problems: list[str] = []
    pg.on("pageerror", lambda err: problems.append(f"page error: {err}"))
    pg.on("console", lambda msg: problems.append(msg.text)
          if "Content Security Policy" in msg.text else None)  # fmt: skip
    pg.goto(server.url + "static/causal.html")
    pg.wait_for_selector("body[data-ready=true]", timeout=20_000)
    yield pg
    pg.close()
    assert not problems, problems


def _on(pg: Any, level: int) -> list[int]:
    got = pg.eval_on_selector_all(
        f"#stack circle[data-level='{level}'][data-on='1']", "cs => cs.map(c => +c.dataset.pos)"
    )
    return sorted(got)


@pytest.mark.browser
def test_hover_highlights_every_input_an_output_depends_on(causal_page: Any) -> None:
    pg = causal_page
    layers = [(2, 1, d) for d in (1, 2, 4, 8)]
    assert pg.locator("#field").inner_text() == "16"
    assert pg.locator("#stack circle").count() == 5 * 32
    for t in (31, 20, 3):
        pg.hover(f"#stack circle[data-level='4'][data-pos='{t}']")
        deps = causal_dependencies(t, layers)
        for level in range(5):
            assert _on(pg, level) == deps[level], (t, level)
        assert pg.locator("#focus-count").inner_text() == str(len(deps[0]))
    # editable dilations and stride: the page redraws from the new answer
    pg.fill("#layers", "1,2:2,4")
    pg.wait_for_selector("body[data-ready=true]", timeout=20_000)
    layers = [(2, 1, 1), (2, 2, 2), (2, 1, 4)]
    assert pg.locator("#field").inner_text() == str(receptive_field(layers)[-1].size)
    assert pg.locator("#stack circle[data-level='3']").count() == 16
    pg.hover("#stack circle[data-level='3'][data-pos='9']")
    assert _on(pg, 0) == causal_dependencies(9, layers)[0]
    # a refused stack says why
    pg.fill("#layers", "1,99")
    pg.wait_for_selector("body[data-ready=true]", timeout=20_000)
    assert "dilation 99 must be between 1 and 32" in pg.locator("#status").inner_text()

"""The explorer end to end in real headless Chromium (Debian's ``chromium``, via Playwright).

The page is loaded from a live server, driven like a learner would, and what it
highlights is compared with dilconv's own index arithmetic.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dilconv import _shapes, conv2d
from dilconv._spec import make_spec
from dilconv.explore.server import ExplorerServer, make_server
from tests.extras import import_or_missing, missing

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="module")
def server() -> Iterator[ExplorerServer]:
    srv = make_server(quiet=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        missing(f"{CHROMIUM} is missing; install Debian's chromium (./dev setup does)")
    sync_api = import_or_missing("playwright.sync_api")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1400, "height": 1000},
        )
        yield context
        context.close()


@pytest.fixture
def page(browser_context: Any, server: ExplorerServer) -> Iterator[Any]:
    pg = browser_context.new_page()
    problems: list[str] = []
    pg.on("pageerror", lambda err: problems.append(f"page error: {err}"))
    pg.on(
        "console",
        lambda msg: (
            problems.append(f"console: {msg.text}")
            if "Content Security Policy" in msg.text  # a blocked script or style
            else None
        ),
    )
    pg.goto(server.url)
    pg.wait_for_selector("body[data-ready=true]", timeout=20_000)
    yield pg
    pg.close()
    assert not problems, problems


def _highlighted(pg: Any) -> set[tuple[int, int, int]]:
    cells = pg.eval_on_selector_all(
        "#input-grid .cell.hl", "cs => cs.map(c => [+c.dataset.r, +c.dataset.c, +c.dataset.tapHl])"
    )
    return {tuple(c) for c in cells}


def _expect_text(pg: Any, selector: str, text: str) -> None:
    from playwright.sync_api import expect

    expect(pg.locator(selector)).to_have_text(text, timeout=10_000)


def test_dilation_hover_and_formula(page: Any) -> None:
    pg = page
    pg.select_option("#padding_kind", "same")
    pg.select_option("#padding_mode", "reflect")
    pg.fill("#dilation_h", "3")  # the H and W sliders move together
    spec = make_spec((7, 7), (3, 3), padding="same", dilation=3, padding_mode="reflect")
    (top, bottom), (left, right) = spec.pad
    out_h, out_w = spec.out_hw
    _expect_text(
        pg, "#formula-h", f"H_out = ⌊(7 + {top} + {bottom} − 3·(3 − 1) − 1) / 1⌋ + 1 = {out_h}"
    )
    _expect_text(
        pg, "#formula-w", f"W_out = ⌊(7 + {left} + {right} − 3·(3 − 1) − 1) / 1⌋ + 1 = {out_w}"
    )
    assert pg.locator("#dilation_w").input_value() == "3"
    assert pg.locator("#output-grid .cell").count() == out_h * out_w
    assert pg.locator("#input-grid .cell").count() == spec.padded_hw[0] * spec.padded_hw[1]

    for oi, oj in ((0, 0), (3, 5), (out_h - 1, out_w - 1)):
        pg.hover(f"#output-grid .cell[data-r='{oi}'][data-c='{oj}']")
        rows = _shapes.read_positions(out_h, 3, 1, 3)[oi]
        cols = _shapes.read_positions(out_w, 3, 1, 3)[oj]
        expected = {(r, c, a * 3 + b) for a, r in enumerate(rows) for b, c in enumerate(cols)}
        assert _highlighted(pg) == expected
        # the sum shown is the value dilconv computed
        explain = pg.locator("#explain").inner_text()
        assert explain.startswith(f"y[{oi}, {oj}] = ")

    # the values shown are conv2d's, and the explanation's terms multiply back to them
    x = pg.eval_on_selector_all(
        "#input-grid .cell", "cs => cs.map(c => [+c.dataset.r, +c.dataset.c, +c.textContent])"
    )
    grid = {(r, c): v for r, c, v in x}
    inner = [[grid[(r + top, c + left)] for c in range(7)] for r in range(7)]
    w = pg.eval_on_selector_all("#kernel-grid .cell", "cs => cs.map(c => +c.textContent)")
    import numpy as np

    y = conv2d(
        np.array(inner), np.array(w).reshape(3, 3), padding="same", dilation=3,
        padding_mode="reflect",
    )  # fmt: skip
    shown = pg.eval_on_selector_all("#output-grid .cell", "cs => cs.map(c => +c.textContent)")
    assert np.array_equal(np.array(shown).reshape(out_h, out_w), y)

    # a padded corner reads a reflected pixel: its source is outlined
    pg.hover("#output-grid .cell[data-r='0'][data-c='0']")
    assert pg.locator("#input-grid .cell.src").count() > 0

    # hovering a kernel tap lights every input cell it multiplies, one per output
    pg.hover("#kernel-grid .cell[data-tap='4']")
    assert pg.locator("#input-grid .cell.hl").count() == out_h * out_w

    pg.hover("#output-grid .cell[data-r='3'][data-c='5']")
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / "explorer-dilation3-reflect.png"), full_page=True)


def test_stride_transposed_and_invalid(page: Any) -> None:
    from playwright.sync_api import expect

    pg = page
    pg.fill("#stride_h", "2")
    spec = make_spec((7, 7), (3, 3), stride=(2, 1), dilation=2)
    _expect_text(
        pg, "#formula-h", f"H_out = ⌊(7 + 0 + 0 − 2·(3 − 1) − 1) / 2⌋ + 1 = {spec.out_hw[0]}"
    )
    pg.hover("#output-grid .cell[data-r='1'][data-c='2']")
    rows = _shapes.read_positions(spec.out_hw[0], 3, 2, 2)[1]
    cols = _shapes.read_positions(spec.out_hw[1], 3, 1, 2)[2]
    assert _highlighted(pg) == {
        (r, c, a * 3 + b) for a, r in enumerate(rows) for b, c in enumerate(cols)
    }

    # an impossible kernel is explained, with the nearest valid value, and one click fixes it
    pg.fill("#k_h", "7")
    message = pg.locator("#message")
    # the largest kernel whose dilated extent 2·(k − 1) + 1 fits the 7 rows is 4
    expect(pg.locator("#message .nearest")).to_contain_text(
        "The nearest valid value: kernel H = 4.", timeout=10_000
    )
    expect(pg.locator("#k_h")).to_have_class("bad")
    assert "larger than the padded input" in message.inner_text()
    assert pg.locator("#output-grid .cell").count() > 0  # the last valid view stays
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / "explorer-invalid.png"), full_page=False)
    pg.click("#apply-fix")
    _expect_text(pg, "#message", "")
    assert pg.locator("#controls .bad").count() == 0
    assert pg.locator("#k_h").input_value() == "4"
    pg.fill("#k_h", "3")

    # transposed: hovering an output shows the inputs that reach it
    pg.check("#transposed")
    _expect_text(pg, "#formula-h", "H_out = (7 − 1)·2 − 0 − 0 + 2·(3 − 1) + 1 + 0 = 17")
    pg.hover("#output-grid .cell[data-r='4'][data-c='4']")
    # output q gathers input o through tap t where o*s + t*d == q (no padding)
    expected = {
        (o_r, o_c, t_r * 3 + t_c)
        for t_r in range(3)
        for t_c in range(3)
        for o_r in range(7)
        for o_c in range(7)
        if o_r * 2 + t_r * 2 == 4 and o_c * 1 + t_c * 2 == 4
    }
    assert _highlighted(pg) == expected
    pg.screenshot(path=str(ARTIFACTS / "explorer-transposed.png"), full_page=False)


def test_receptive_panel_and_code(page: Any) -> None:
    pg = page
    pg.click("button[data-stack='3:2,3:2,3:2']")
    _expect_text(pg, "#stack-table tbody tr:last-child td:nth-child(5)", "13×13")
    assert "never read" in pg.locator("#coverage-caption").inner_text()
    pg.fill("#stack", "3:1,3:2,3:4,3:8")
    _expect_text(pg, "#stack-table tbody tr:last-child td:nth-child(5)", "31×31")
    pg.fill("#stack", "3:1,3:zero")
    _expect_text(pg, "#stack-message", "layer 2 is '3:zero'; write kernel:dilation or "
                 "kernel:dilation:stride, for example 3:2")  # fmt: skip
    for lang, needle in (
        ("pytorch", "F.conv2d("),
        ("tensorflow", "tf.nn.conv2d("),
        ("jax", "lax.conv_general_dilated("),
        ("dilconv", "dilconv.conv2d("),
    ):
        pg.click(f"button[data-lang='{lang}']")
        assert needle in pg.locator("#code").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / "explorer-receptive.png"), full_page=True)


def test_typed_kernel_values(page: Any) -> None:
    pg = page
    pg.select_option("#w_fill", "typed")
    assert pg.locator("#w_text").is_visible()
    assert len(pg.locator("#w_text").input_value().split("\n")) == 3  # prefilled with the kernel
    pg.fill("#w_text", "0 0 0\n0 1 0\n0 0 0")
    # dilation 2, valid padding: the centre tap reads input (i + 2, j + 2)
    _expect_text(pg, "#kernel-grid .cell[data-tap='4']", "1")
    _expect_text(pg, "#output-caption", "Output 3×3 (int64) hover or click a cell")
    cells = pg.eval_on_selector_all("#input-grid .cell", "cs => cs.map(c => +c.textContent)")
    shown = pg.eval_on_selector_all("#output-grid .cell", "cs => cs.map(c => +c.textContent)")
    x = [cells[r * 7 : r * 7 + 7] for r in range(7)]
    assert shown == [x[i + 2][j + 2] for i in range(3) for j in range(3)]
    pg.fill("#w_text", "0 0 0\n0 x 0\n0 0 0")
    _expect_text(pg, "#message .why", "w[1][1] must be a number, got null")

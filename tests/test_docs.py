"""The documentation site: built once with warnings as errors, then checked page by page.

The module builds ``docs/`` with ``sphinx-build -W --keep-going`` into a temporary
folder (the gallery's examples run during the build), then checks that the API
reference names every public name, that no page loads anything from the network, that
the gallery and benchmark figures exist, and (``-m browser``) that Chromium renders the
home page and the ``conv2d`` reference with no console error and that the search page
finds "dilation".
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.extras import import_or_missing, missing

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
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
# the modules whose public names the reference documents (dilconv.stream once it exists)
MODULES = ["dilconv", "dilconv.nn", "dilconv.dask", "dilconv.stream"]

import_or_missing("sphinx")


def public_names(module_name: str) -> list[str]:
    """``__all__``, else every public class and function the module defines itself."""
    module = importlib.import_module(module_name)
    if hasattr(module, "__all__"):
        names = list(module.__all__)
    else:
        names = [
            name
            for name, obj in vars(module).items()
            if not name.startswith("_")
            and (inspect.isclass(obj) or inspect.isfunction(obj))
            and obj.__module__ == module_name
        ]
    return [f"{module_name}.{name}" for name in names]


def documented_modules() -> list[str]:
    found = []
    for name in MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as missing:
            if missing.name != name:
                raise
            continue
        found.append(name)
    return found


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built site (``index.html`` and the rest), built once for the module."""
    out = tmp_path_factory.mktemp("docs")
    html, doctrees = out / "html", out / "doctrees"
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    cmd += ["-d", str(doctrees), str(DOCS), str(html)]
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, f"sphinx-build failed:\n{proc.stdout[-4000:]}{proc.stderr[-8000:]}"
    return html


def html_ids(site: Path, folder: str) -> set[str]:
    ids: set[str] = set()
    for page in (site / folder).rglob("*.html"):
        ids.update(re.findall(r'\bid="([^"]+)"', page.read_text()))
    return ids


def test_reference_source_names_every_public_name() -> None:
    source = (DOCS / "api" / "index.rst").read_text()
    listed: set[str] = set()
    module = "dilconv"
    for line in source.splitlines():
        if m := re.match(r"\.\. (?:currentmodule|py:module)::\s*(\S+)", line):
            module = m.group(1)
        elif m := re.match(r"\s{3}(\w+)\s*$", line):
            listed.add(f"{module}.{m.group(1)}")
        elif m := re.match(r"\.\. py:\w+::\s*(\w+)", line):
            listed.add(f"{module}.{m.group(1)}")
    wanted = [n for mod in documented_modules() for n in public_names(mod)]
    missing = sorted(set(wanted) - listed)
    assert not missing, f"docs/api/index.rst does not list {missing}"


def test_public_names_helper_finds_the_layers() -> None:
    # dilconv.nn has no __all__: its classes must still be found, and nothing imported
    names = public_names("dilconv.nn")
    assert "dilconv.nn.Conv2d" in names
    assert "dilconv.nn.ContextModule" in names
    assert "dilconv.nn.conv2d" not in names  # imported from dilconv.conv, not defined there


def test_reference_pages_document_every_public_name(site: Path) -> None:
    ids = html_ids(site, "api")
    wanted = [n for mod in documented_modules() for n in public_names(mod)]
    missing = [name for name in wanted if name not in ids]
    assert not missing, f"no reference entry in the built site for {missing}"
    assert (site / "api" / "generated" / "dilconv.conv2d.html").exists()


def test_every_page_is_offline(site: Path) -> None:
    remote = re.compile(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=\"(?:https?:)?//", re.I)
    offenders = [
        str(p.relative_to(site)) for p in site.rglob("*.html") if remote.search(p.read_text())
    ]
    assert not offenders, f"pages that load from the network: {offenders}"
    css_remote = re.compile(r"(?:url\(|@import)\s*[\"']?(?:https?:)?//", re.I)
    styles = [p for p in (site / "_static").rglob("*.css") if css_remote.search(p.read_text())]
    assert not styles, f"stylesheets that load from the network: {styles}"


def test_gallery_examples_ran_with_their_figures(site: Path) -> None:
    examples = sorted((ROOT / "examples").glob("plot_*.py"))
    assert len(examples) >= 4
    for script in examples:
        page = site / "auto_examples" / f"{script.stem}.html"
        text = page.read_text()
        images = re.findall(r'<img[^>]+src="([^"]+sphx_glr_[^"]+\.png)"', text)
        assert images, f"{page.name} embeds no figure"
        for src in images:
            assert (page.parent / src).resolve().is_file(), f"{page.name}: missing {src}"
        assert "sphx-glr-script-out" in text, f"{page.name} embeds no printed output"


def test_benchmarks_page_has_a_table_and_a_plot_per_case(site: Path) -> None:
    results = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    text = (site / "benchmarks.html").read_text()
    for case in {row["case"] for row in results["rows"]}:
        assert f"bench_{case}.png" in text, f"no plot for {case}"
        assert (site / "_images" / f"bench_{case}.png").is_file()
    rows = re.findall(r"<tr class=\"row-(?:odd|even)\"", text)
    assert len(rows) >= len(results["rows"])  # a body row per bench row (plus headers)
    auto_ms = 1000 * results["rows"][0]["contenders"]["dilconv auto"]["median_s"]
    assert f"{auto_ms:.3g}" in text  # the numbers come from the record


def test_bench_page_table_marks_missing_contenders() -> None:
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        import bench_page
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    rows = [
        {"case": "c", "row": "a", "gflop": 1.0, "best_method": "dilconv x",
         "contenders": {"dilconv auto": {"median_s": 0.002}, "dilconv x": {"median_s": 0.001},
                        "torch NCHW": {"median_s": 0.004}},
         "ratio_best": {"torch": 0.5}},
        {"case": "c", "row": "b", "gflop": 1.0, "best_method": None,
         "contenders": {"dilconv auto": {"median_s": 0.003}, "tf conv2d": {"median_s": 0.006}},
         "ratio_best": {"tensorflow": 0.5}},
    ]  # fmt: skip
    lines = bench_page.table(rows).splitlines()
    assert lines[0] == (
        "| row | dilconv `auto` | fastest dilconv method | torch NCHW | tf conv2d "
        "| `auto` / best PyTorch | `auto` / best TensorFlow |"
    )
    assert lines[2] == "| a | 2 | 1 (`x`) | 4 | - | 0.50 | - |"
    assert lines[3] == "| b | 3 | - | - | 6 | - | 0.50 |"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
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
            viewport={"width": 1300, "height": 900},
        )
        yield context
        context.close()


def open_page(browser: Any, url: str) -> tuple[Any, list[str]]:
    page = browser.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console {msg.type}: {msg.text}")
            if msg.type in ("error", "warning")
            else None
        ),
    )
    page.on("requestfailed", lambda req: problems.append(f"failed request: {req.url}"))
    page.goto(url)
    page.wait_for_load_state("load")
    return page, problems


@pytest.mark.browser
@pytest.mark.parametrize(
    ("path", "heading"),
    [("index.html", "dilconv"), ("api/generated/dilconv.conv2d.html", "dilconv.conv2d")],
)
def test_pages_render_without_console_errors(
    site: Path, browser: Any, path: str, heading: str
) -> None:
    page, problems = open_page(browser, (site / path).as_uri())
    assert page.inner_text("article h1").strip().rstrip("#").strip() == heading
    # the theme's stylesheet is applied (it defines the colour variables) ...
    primary = "getComputedStyle(document.documentElement).getPropertyValue('--pst-color-primary')"
    assert page.evaluate(primary).strip()
    # ... and its scripts ran (they set the colour mode on the root element)
    assert page.evaluate("document.documentElement.dataset.mode") in ("light", "dark", "auto")
    page.wait_for_timeout(500)  # late script errors
    page.close()
    assert not problems, problems


@pytest.mark.browser
def test_search_finds_dilation(site: Path, browser: Any) -> None:
    page, problems = open_page(browser, (site / "search.html").as_uri() + "?q=dilation")
    # results are listed one by one; the summary line comes when the list is complete
    page.wait_for_function(
        "document.querySelector('#search-results')?.innerText.includes('Search finished')",
        timeout=30_000,
    )
    titles = page.locator("#search-results ul.search li a").all_inner_texts()
    page.close()
    assert "Dilation explained" in titles, titles
    assert "dilconv.conv2d" in titles, titles
    assert not problems, problems


@pytest.mark.browser
def test_gallery_images_load(site: Path, browser: Any) -> None:
    page, problems = open_page(browser, (site / "auto_examples" / "index.html").as_uri())
    sizes = page.evaluate("[...document.images].map(i => [i.src, i.complete && i.naturalWidth])")
    page.close()
    thumbs = [s for s in sizes if "sphx_glr_plot_" in s[0]]
    assert len(thumbs) >= 4, sizes
    assert all(width for _, width in thumbs), sizes
    assert not problems, problems

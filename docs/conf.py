"""Sphinx configuration of dilconv's documentation site (``./dev docs`` builds it)."""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(DOCS / "_ext"))

import dilconv  # noqa: E402

project = "dilconv"
author = "the dilconv authors"
copyright = "the dilconv authors"  # noqa: A001
release = dilconv.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "sphinx_copybutton",
    "dilconv_site",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_generated/*.md", "Thumbs.db", ".DS_Store", "conftest.py"]
templates_path = ["_templates"]
default_role = "code"

# API reference: one page per public name, from the numpydoc docstrings.
autosummary_generate = True
autosummary_imported_members = True
autodoc_typehints = "none"  # the numpydoc Parameters sections carry the types
autodoc_default_options = {"member-order": "bysource"}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# Markdown pages (the guide, the changelog).
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# The gallery: the scripts named plot_*.py in examples/, executed at every build;
# the other scripts there (the long training run, the notebook generator) stay out.
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"^(?!plot_).*\.py$",  # matched against the bare file name
    "download_all_examples": False,
    "remove_config_comments": True,
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "abort_on_example_error": True,
    "show_memory": False,
    "min_reported_time": 1,
    # the execution-times pages load DataTables from a CDN: the site stays offline
    "write_computation_times": False,
}

# Copy buttons copy the code without the doctest prompts and outputs.
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True
copybutton_only_copy_prompt_lines = True

# Offline by design: every script, stylesheet and font is served from the build.
html_theme = "pydata_sphinx_theme"
html_title = f"dilconv {release}"
html_static_path = ["_static"]
html_css_files = ["dilconv.css"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "navbar_align": "left",
    "header_links_before_dropdown": 7,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
    "secondary_sidebar_items": ["page-toc"],
    "use_edit_page_button": False,
}
html_context = {"default_mode": "light"}
html_show_sourcelink = False
html_last_updated_fmt = None
# The search page lists matching pages without fetching each one for a summary: a
# fetch is refused for pages opened from disk (file://), the way ./dev docs says to.
html_show_search_summary = False
# The wide pages (benchmark tables) get the whole width: no section navigation.
html_sidebars = {"benchmarks": [], "changelog": []}

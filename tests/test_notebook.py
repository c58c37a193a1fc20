"""``examples/tutorial.ipynb`` executes top to bottom and matches its generator."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from tests.extras import import_or_missing, peer_or_missing

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOTEBOOK = EXAMPLES / "tutorial.ipynb"

nbformat = import_or_missing("nbformat")


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "make_tutorial_notebook", EXAMPLES / "make_tutorial_notebook.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebook_is_generated_and_clean() -> None:
    committed = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(committed)
    built = _generator().build()
    assert [c.source for c in committed.cells] == [c.source for c in built.cells], (
        "examples/tutorial.ipynb is out of date: run python examples/make_tutorial_notebook.py"
    )
    for cell in committed.cells:
        if cell.cell_type == "code":
            assert cell.outputs == []  # committed clean
            assert cell.execution_count is None


@pytest.mark.slow
@pytest.mark.peers
def test_notebook_executes_top_to_bottom() -> None:
    peer_or_missing("tensorflow")
    nbclient = import_or_missing("nbclient")
    import_or_missing("ipykernel")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # kernel "python3" runs this very interpreter: jupyter_client puts sys.executable
    # in place of the kernelspec's "python"
    client = nbclient.NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(EXAMPLES)}},
    )
    client.execute()
    errors = [
        out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
        if out.output_type == "error"
    ]  # fmt: skip
    assert not errors
    images = [
        out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
        if "image/png" in out.get("data", {})
    ]  # fmt: skip
    assert len(images) >= 6
    text = "".join(
        out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
    )
    assert "equals NumPy's convolution: False" in text  # the flip matters
    assert text.count(": True") == 8, text
    assert text.count(": False") == 1, text
    assert len(re.findall(r"dilconv\.conv2d \(\d+, \d+\) int64 equals NumPy", text)) == 4

"""The committed notebook outputs come from the committed code (rendered by the docs site)."""

import importlib.util
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
_spec = importlib.util.spec_from_file_location("execute_notebooks", NOTEBOOKS / "execute.py")
execute_notebooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(execute_notebooks)


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_outputs_come_from_the_committed_code(path):
    nb = nbformat.read(path, as_version=4)
    recorded = nb.metadata.get(execute_notebooks.METADATA_KEY, {}).get("code_sha256")
    assert recorded == execute_notebooks.code_hash(nb), (
        f"{path.name}: its outputs were not made by its current code; run `python notebooks/execute.py {path.name}`"
    )
    counts = [cell.execution_count for cell in nb.cells if cell.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), f"{path.name}: cells not run once each, top to bottom"
    errors = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == "error"]
    assert not errors, f"{path.name}: committed with an error output"


def test_code_hash_sees_an_edited_cell():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_markdown_cell("text")])
    before = execute_notebooks.code_hash(nb)
    nb.cells[1].source = "other text"
    assert execute_notebooks.code_hash(nb) == before  # markdown does not count
    nb.cells[0].source = "x = 2"
    assert execute_notebooks.code_hash(nb) != before

"""Hygiene of every notebooks/*.ipynb: committed clean, H1 first, a typed `parameters` cell, no def/class."""

import ast
import json
import re
from pathlib import Path

import nbformat
import pytest

from labkit.report.params import notebook_parameters, parameters_cell

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def _code(cell) -> str:
    """Cell source with IPython magics / shell lines blanked so `ast` can parse it."""
    return "\n".join("" if re.match(r"\s*[%!]", ln) else ln for ln in cell.source.splitlines())


def test_notebooks_exist_and_are_numbered():
    assert NOTEBOOKS, "no notebooks"
    assert any(p.stem == "00_environment" for p in NOTEBOOKS)
    for p in NOTEBOOKS:
        assert re.fullmatch(r"\d\d_[a-z0-9_]+", p.stem), p.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_clean(path):
    raw = json.loads(path.read_text(encoding="utf-8"))
    nb = nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
    nbformat.validate(nb)
    assert raw["metadata"].get("kernelspec") == KERNELSPEC
    assert raw["metadata"].get("language_info", {}).get("name") == "python"
    assert "widgets" not in raw["metadata"] and "papermill" not in raw["metadata"]
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {i} has outputs"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"
        tags = cell.metadata.get("tags", [])
        assert "injected-parameters" not in tags, f"{path.name}: papermill's injected cell was committed"
        assert "papermill" not in cell.metadata and "execution" not in cell.metadata, f"{path.name} cell {i}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_structure_title_parameters_no_def(path):
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), f"{path.name}: cell 1 must be an H1"
    assert len(first.source.strip().splitlines()) >= 2, f"{path.name}: cell 1 needs a summary under the title"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: exactly one cell tagged `parameters`"
    assert parameters_cell(nb) is tagged[0]
    tree = ast.parse(tagged[0].source)
    for stmt in tree.body:
        assert isinstance(stmt, ast.AnnAssign), f"{path.name} parameters line {stmt.lineno}: use `name: type = literal`"
    specs = notebook_parameters(path)  # literals only, parsed like the runner does
    for name, spec in specs.items():
        assert spec.help, f"{path.name}: parameter {name} has no help comment"
        assert spec.type.check(spec.default), f"{path.name}: {name} default does not match {spec.type.name}"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(_code(cell))):
            assert not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)), (
                f"{path.name} cell {i}: `def`/`class` belong in labkit, not in notebooks")


def test_parameter_names_mean_the_same_everywhere():
    """Names are global (`-p max_steps=5` applies to each notebook declaring it): declared types must agree."""
    seen: dict[str, tuple[str, str]] = {}
    for path in NOTEBOOKS:
        for name, spec in notebook_parameters(path).items():
            if name in seen:
                assert seen[name][0] == spec.type.name, (name, seen[name], (spec.type.name, path.stem))
            else:
                seen[name] = (spec.type.name, path.stem)

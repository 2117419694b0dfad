"""notebooks/05_attention.ipynb: conventions, and the shared workbook run's 05 (with adapters) recording max_abs_diff."""

import ast
import json

import nbformat
import pytest

from labkit.paths import notebooks_dir

NB = notebooks_dir() / "05_attention.ipynb"


@pytest.fixture(scope="module")
def nb():
    return nbformat.read(NB, as_version=4)


def test_metadata_and_layout(nb):
    assert nb.metadata["kernelspec"] == {"name": "python3", "display_name": "Python 3", "language": "python"}
    assert nb.metadata["language_info"] == {"name": "python"}
    first, imports, params = nb.cells[:3]
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    assert imports.cell_type == "code" and all(
        line.startswith(("import ", "from ")) or not line.strip() for line in imports.source.splitlines())
    assert params.metadata.get("tags") == ["parameters"]
    nbformat.validate(nb)


def test_parameters_are_typed_literals_with_help(nb):
    params = nb.cells[2].source.splitlines()
    names = []
    for line in params:
        tree = ast.parse(line)
        stmt = tree.body[0]
        assert isinstance(stmt, ast.AnnAssign), line
        ast.literal_eval(stmt.value)
        assert stmt.annotation.id in ("str", "int", "float", "bool"), line
        assert "  # " in line and line.split("  # ", 1)[1].strip(), f"no help comment: {line}"
        names.append(stmt.target.id)
    for expected in ("llama_model", "baichuan_model", "llama_adapter", "baichuan_adapter", "prompt_zh", "prompt_en",
                     "attn_layer", "attn_head", "max_tokens", "memory_budget_gib"):
        assert expected in names


def test_committed_clean(nb):
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
            tree = ast.parse(cell.source)
            assert not any(isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda)) for n in ast.walk(tree))


@pytest.mark.slow
def test_notebook_runs_and_records(tiny_workbook_run):
    """05 as the whole tiny workbook ran it (conftest's shared `labkit run`), with 02/03's trained adapters."""
    metrics = json.loads((tiny_workbook_run / "metrics" / "05_attention.json").read_text())
    for arch in ("llama", "baichuan"):
        assert 0 <= metrics[arch]["max_abs_diff"] < 1e-5
        assert metrics[arch]["max_abs_diff_layer_out"] < 1e-5
        assert metrics[arch]["adapter"] is True
    done = nbformat.read(tiny_workbook_run / "05_attention.ipynb", as_version=4)
    errors = [o for c in done.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert errors == []
    images = [o for c in done.cells if c.cell_type == "code" for o in c.outputs
              if o.get("data", {}).get("image/png")]
    assert len(images) >= 8
    widgets = [o for c in done.cells if c.cell_type == "code" for o in c.outputs
               if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert widgets == []  # headless: static figures instead of an empty widget


def test_adapter_resolution(tmp_path, monkeypatch):
    from labkit.paths import resolve_adapter
    from labkit.errors import LabkitError

    monkeypatch.setenv("LABKIT_RUN_DIR", str(tmp_path))
    path, note = resolve_adapter("llama")
    assert path is None and "02_linly_lora" in note and "llama_adapter=PATH" in note
    (tmp_path / "baichuan_lora").mkdir()
    (tmp_path / "baichuan_lora" / "adapter_config.json").write_text("{}")
    path, note = resolve_adapter("baichuan")
    assert path == tmp_path / "baichuan_lora"
    with pytest.raises(LabkitError, match="llama_adapter="):
        resolve_adapter("llama", str(tmp_path / "nowhere"))

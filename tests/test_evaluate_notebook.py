"""notebooks/04_evaluation.ipynb: parameters, and a kernel-executed run (static playground, record, skip message)."""

from __future__ import annotations

import ast
import json

import nbformat
import pytest

from evaluate_helpers import save_toy_pair
from labkit.evaluate.metrics import HEADLINE
from labkit.paths import notebooks_dir

NB = notebooks_dir() / "04_evaluation.ipynb"


def test_parameters():
    nb = nbformat.read(NB, as_version=4)
    params = nb.cells[2]
    assert params.metadata.get("tags") == ["parameters"]
    names = [ast.parse(line).body[0].target.id for line in params.source.splitlines()]
    for expected in ("llama_model", "llama_adapter", "baichuan_model", "baichuan_adapter", "precision",
                     "max_eval_samples", "max_new_tokens", "heldout_datasets", "eval_template"):
        assert expected in names
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "labkit.report.record(" in code and "playground(" in code


def _outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts += [str(v) for k, v in out.get("data", {}).items() if k in ("text/plain", "text/html")]
    return "\n".join(parts)


@pytest.mark.slow
def test_notebook_runs_records_and_explains_a_missing_adapter(tmp_path, monkeypatch):
    import papermill

    base, adapter = save_toy_pair(tmp_path / "toy")
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setenv("LABKIT_RUN_DIR", str(run))  # headless, like `labkit run`; no baichuan_lora in it
    monkeypatch.setenv("LABKIT_NOTEBOOK", "04_evaluation")
    out = tmp_path / "04_evaluation.ipynb"
    papermill.execute_notebook(str(NB), str(out), cwd=str(notebooks_dir()), kernel_name="python3",
                               progress_bar=False,
                               parameters={"llama_adapter": str(adapter), "max_eval_samples": 4,
                                           "max_new_tokens": 4, "playground_max_new_tokens": 4})
    executed = nbformat.read(out, as_version=4)
    text = _outputs_text(executed)
    assert "baichuan: no adapter at" in text and "run notebook 03_baichuan_wpack first" in text
    assert "; skipped" in text
    assert "Traceback" not in text
    assert "Playground (static)" in text and "<table" in text  # not an empty widget
    metrics = json.loads((run / "metrics" / "04_evaluation.json").read_text())
    assert set(metrics) == {"llama"}
    for variant in ("base", "adapter"):
        assert set(HEADLINE) <= set(metrics["llama"][variant])
    assert (run / "evaluation_comparison.png").is_file() and (run / "evaluation_per_task.png").is_file()

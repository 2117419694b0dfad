"""The whole workbook twice on a reduced tiny profile: identical metrics (`labkit run --rerun` finds none differ)."""

import json
from pathlib import Path

import pytest
import yaml

from labkit.report import runner
from labkit.report.params import notebook_parameters
from labkit.report.rerun import rerun

ROOT = Path(__file__).resolve().parents[1]
# Smaller than tiny where a notebook declares the name; everything else keeps the tiny defaults.
REDUCED = {"max_steps": 20, "save_steps": 10, "max_eval_samples": 8, "n_heldout": 4, "n_preview": 2}


@pytest.mark.slow
def test_two_runs_give_identical_metrics(tmp_path):
    notebooks = runner.discover_notebooks(ROOT / "notebooks")
    declared = {n for p in notebooks for n in notebook_parameters(p)}
    profile = tmp_path / "reduced.yaml"
    profile.write_text(yaml.safe_dump({k: v for k, v in REDUCED.items() if k in declared}))
    reports = tmp_path / "reports"

    first = runner.run(profile=str(profile), reports_dir=reports, progress=False)
    assert first.status == "ok", {k: v.get("error") for k, v in first.manifest["notebooks"].items()}
    assert any(first.manifest["notebooks"][p.stem]["metrics"] for p in notebooks[1:]), "no notebook recorded metrics"

    again = rerun(first.run_dir, reports_dir=reports, progress=False)
    second = again.result
    assert second.status == "ok"
    assert again.diffs == [] and again.verdict == "identical", again.diffs
    m = json.loads((second.run_dir / "manifest.json").read_text())
    assert m["parameters"] == first.manifest["parameters"]
    assert m["rerun_of"]["run_id"] == first.run_dir.name and m["rerun_of"]["verdict"] == "identical"
    index = (reports / "index.html").read_text()
    assert first.run_dir.name in index and second.run_dir.name in index

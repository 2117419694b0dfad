"""The whole tiny workbook twice: identical metrics (`labkit run --rerun` of the shared run finds none differ)."""

import json
import shutil

import pytest

from labkit.report.rerun import rerun


@pytest.mark.slow
def test_two_runs_give_identical_metrics(tmp_path, tiny_workbook_run):
    # the shared `labkit run` (conftest) is the first run; its folder is copied so the rerun writes only here
    reports = tmp_path / "reports"
    shutil.copytree(tiny_workbook_run, reports / tiny_workbook_run.name)
    first_dir = reports / tiny_workbook_run.name
    first = json.loads((first_dir / "manifest.json").read_text())
    assert first["status"] == "ok" and first["profile"] == "tiny"
    assert any(nb["metrics"] for name, nb in first["notebooks"].items() if not name.startswith("00")), \
        "no notebook recorded metrics"

    again = rerun(first_dir, reports_dir=reports, progress=False)
    second = again.result
    assert second.status == "ok"
    assert again.diffs == [] and again.verdict == "identical", again.diffs
    m = json.loads((second.run_dir / "manifest.json").read_text())
    assert m["parameters"] == first["parameters"]
    assert m["rerun_of"]["run_id"] == first_dir.name and m["rerun_of"]["verdict"] == "identical"
    for arch in ("llama", "baichuan"):  # the headline numbers of both architectures, run to run
        assert m["notebooks"]["04_evaluation"]["metrics"][arch] == first["notebooks"]["04_evaluation"]["metrics"][arch]
    index = (reports / "index.html").read_text()
    assert first_dir.name in index and second.run_dir.name in index

"""labkit.report.index: runs compared in reports/index.html (columns, charts, changes, reruns); CSS in one place."""

import json
import re
from pathlib import Path

from labkit.report.index import MAX_COLUMNS, write_index

ROOT = Path(__file__).resolve().parents[1]
REMOTE = re.compile(r"<(script|link)\b[^>]*\b(src|href)\s*=\s*[\"']?(https?:)?//", re.IGNORECASE)


def _run(reports: Path, run_id: str, started: str, metrics: dict, profile: str = "tiny", params=None, rerun_of=None):
    folder = reports / run_id
    folder.mkdir(parents=True)
    (folder / "04_evaluation.html").write_text("<html></html>")
    manifest = {"run_id": run_id, "status": "ok", "profile": profile, "started": started, "duration_s": 61.0,
                "parameters": params or {}, "rerun_of": rerun_of, "git": {"commit": "a" * 40, "dirty": False},
                "notebooks": {"04_evaluation": {"status": "ok", "html": "04_evaluation.html",
                                                "metrics": {"llama": metrics}},
                              "02_linly_lora": {"status": "ok", "metrics": {"final_train_loss": 1.5,
                                                                            "train_seconds": 30.0}}}}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _rows(page: str) -> list[str]:
    return re.findall(r'<tr id="run-([^"]+)" class="([^"]+)">', page)


def test_runs_compared_with_columns_charts_changes_and_reruns(tmp_path):
    reports = tmp_path / "reports"
    first = {"adapter": {"exact_match": 0.5, "refusal_rate": 0.9}, "base": {"exact_match": 0.1}}
    _run(reports, "r1", "2024-01-01T10:00:00", first, params={"lora_r": 8})
    _run(reports, "r2", "2024-01-02T10:00:00", {"adapter": {"exact_match": 0.7, "refusal_rate": 0.9},
                                                "base": {"exact_match": 0.1}}, params={"lora_r": 16})
    _run(reports, "r3", "2024-01-03T10:00:00", first, params={"lora_r": 8},
         rerun_of={"run_id": "r1", "verdict": "identical", "metrics_compared": 5, "metrics_differ": 0, "rtol": 0.0})
    _run(reports, "r4", "2024-01-04T10:00:00", first, profile="other")
    _run(reports, "r5", "2024-01-05T10:00:00", first, rerun_of={"run_id": "gone", "verdict": "differs"})
    page = write_index(reports).read_text()

    # one row per run, newest first, the rerun directly under the run it repeats
    assert _rows(page) == [("r5", "run-ok"), ("r4", "run-ok"), ("r2", "run-ok"), ("r1", "run-ok"),
                           ("r3", "run-ok rerun")]
    # headline metrics as columns (evaluation's adapter numbers first), one chart each
    heads = re.findall(r'<th class="metric" title="([^"]+)">', page)
    assert heads[:3] == ["04_evaluation.llama.adapter.exact_match", "04_evaluation.llama.adapter.refusal_rate",
                         "04_evaluation.llama.base.exact_match"]
    assert "02_linly_lora.final_train_loss" in heads and "02_linly_lora.train_seconds" not in heads
    assert len(heads) <= MAX_COLUMNS and page.count('<svg class="chart"') == len(heads)
    assert page.count("<circle") >= 5 * 2  # every run is a point in the charts
    # r2 differs from r1 (the previous tiny run): exact_match and lora_r marked, refusal_rate not
    r2 = page[page.index('id="run-r2"'):page.index('id="run-r1"')]
    assert '<td class="num changed" title="r1: 0.5">▲ 0.7<span class="was">was 0.5</span></td>' in r2
    assert '<td class="num">0.9</td>' in r2
    assert '<span class="changed" title="r1: 8">lora_r=16</span>' in r2 and "vs r1: 1 metric(s) changed" in r2
    # the rerun: its verdict, compared with the run it repeats (nothing marked)
    r3 = page[page.index('id="run-r3"'):]
    r3 = r3[:r3.index("</tr>")]
    assert 'rerun of <a href="#run-r1">r1</a>: <b class="identical">identical</b>' in r3 and "changed" not in r3
    r5 = page[page.index('id="run-r5"'):page.index('id="run-r4"')]
    assert 'rerun of gone (not here): <b class="differs">differs</b>' in r5
    # r4 is the first run of its profile: nothing to compare with
    r4 = page[page.index('id="run-r4"'):page.index('id="run-r2"')]
    assert "changed" not in r4 and "vs " not in r4
    assert 'href="r2/04_evaluation.html"' in page and 'href="r2/manifest.json"' in page
    assert "<script" not in page and not REMOTE.search(page)


def test_empty_and_unreadable_folders(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{not json")
    page = write_index(tmp_path).read_text()
    assert "0 run(s)" in page and "<svg" not in page


def test_report_css_lives_in_one_place():
    """Colours and CSS of the reports come from labkit/style.py; no other module writes CSS colour literals."""
    css = re.compile(r"(background(-color)?|color|border[-a-z]*)\s*:\s*[^;\"']*#[0-9a-fA-F]{3,6}")
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "labkit").rglob("*.py")
                 if p.name != "style.py" and css.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_older_manifests_rerun_of_a_path(tmp_path):
    metrics = {"adapter": {"exact_match": 0.5}}
    _run(tmp_path, "r1", "2024-01-01T10:00:00", metrics)
    _run(tmp_path, "r2", "2024-01-02T10:00:00", metrics, rerun_of=str(tmp_path / "r1"))  # before verdicts
    page = write_index(tmp_path).read_text()
    assert _rows(page) == [("r1", "run-ok"), ("r2", "run-ok rerun")]
    assert 'rerun of <a href="#run-r1">r1</a>: <b class="ok">ok</b>' in page

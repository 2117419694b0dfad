"""labkit run on fixture notebooks: injected parameters, manifest, HTML, index, failures, --rerun."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labkit.errors import LabkitError
from labkit.report import kernels, runner
from labkit.report.cli import main as run_main
from labkit.report.compare import compare_metrics

FIXTURES = Path(__file__).parent / "fixtures" / "notebooks"
ROOT = Path(__file__).resolve().parents[1]
REMOTE = re.compile(r"<(script|link)\b[^>]*\b(src|href)\s*=\s*[\"']?(https?:)?//", re.IGNORECASE)


def _make_root(base: Path) -> Path:
    """A project root holding the fixture notebooks and a tiny profile."""
    shutil.copytree(FIXTURES, base / "notebooks")
    (base / "profiles").mkdir()
    (base / "profiles" / "tiny.yaml").write_text("{}\n")
    (base / "profiles" / "five.yaml").write_text("steps: 5\n")
    return base


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """`python -m labkit run --profile five -p scale=2` on the fixture workbook (one run, shared)."""
    root = _make_root(tmp_path_factory.mktemp("root"))
    env = {**os.environ, "LABKIT_ROOT": str(root)}
    env.pop("LABKIT_REPORTS", None)
    res = subprocess.run([sys.executable, "-m", "labkit", "run", "--profile", "five", "-p", "scale=2", "--no-progress"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    run_dir = Path(res.stdout.strip().splitlines()[-1])
    return root, run_dir, res.stdout


def test_last_line_is_run_folder_and_time_table(cli_run):
    root, run_dir, out = cli_run
    assert run_dir.parent == root / "reports" and run_dir.is_dir()
    assert "[1/3] 00_first" in out and "[3/3] 02_third" in out
    table = out[out.index("notebook "):]
    for stem in ("00_first", "01_second", "02_third", "total (s)"):
        assert stem in table


def test_manifest_holds_profile_params_git_env_metrics(cli_run):
    _, run_dir, _ = cli_run
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["status"] == "ok" and m["profile"] == "five"
    assert m["parameters"] == {"steps": 5, "scale": 2.0}
    assert set(m["git"]) >= {"commit", "dirty"}
    assert m["environment"]["python"] and "transformers" in m["environment"]
    nb = m["notebooks"]
    assert list(nb) == ["00_first", "01_second", "02_third"]
    assert all(v["status"] == "ok" and v["duration_s"] > 0 for v in nb.values())
    first = nb["00_first"]
    assert first["parameters"] == {"greeting": "hi", "steps": 5, "scale": 2.0, "tags": ["a"]}
    assert first["metrics"]["score"] == 10.0 and first["metrics"]["steps"] == 5
    assert first["metrics"]["nested"] == {"llama": {"adapter": {"exact_match": 0.5}, "base": {"exact_match": 0.25}}}
    assert nb["01_second"]["metrics"] == {"value": 1, "steps": 5}
    assert nb["02_third"]["metrics"] == {"reached": True, "steps": 5, "leaked": False}


def test_kernel_sees_cwd_and_run_dir(cli_run):
    root, run_dir, _ = cli_run
    executed = json.loads((run_dir / "00_first.ipynb").read_text())
    text = "".join("".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    assert f"cwd {root / 'notebooks'}" in text
    assert f"run_dir {run_dir}" in text
    assert "hashseed 0" in text or os.environ.get("PYTHONHASHSEED")  # fixed string hashing in kernels
    injected = [c for c in executed["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert len(injected) == 1 and "steps = 5" in "".join(injected[0]["source"])
    assert all(c.get("execution_count") for c in executed["cells"] if c["cell_type"] == "code")


def test_html_is_self_contained(cli_run):
    _, run_dir, _ = cli_run
    for stem in ("00_first", "01_second", "02_third"):
        html = (run_dir / f"{stem}.html").read_text()
        assert not REMOTE.search(html), (stem, REMOTE.search(html))
    html = (run_dir / "00_first.html").read_text()
    assert 'src="data:image/png;base64,' in html
    assert "IntSlider(value=3, description=&#x27;layer&#x27;)" not in html
    assert "IntSlider(value=3, description='layer')" not in html


def test_index_lists_run_with_links_and_headline_metrics(cli_run):
    root, run_dir, _ = cli_run
    index = (root / "reports" / "index.html").read_text()
    assert run_dir.name in index
    for stem in ("00_first", "01_second", "02_third"):
        assert f'href="{run_dir.name}/{stem}.html"' in index
    assert "llama.adapter.exact_match" in index and "0.5" in index
    assert not REMOTE.search(index)


def test_bad_parameters_rejected_before_any_kernel(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a kernel was started")

    monkeypatch.setattr(kernels, "start_kernel", boom)
    reports = tmp_path / "reports"
    for bad in (["steps=abc"], ["no_such_param=1"], ["fail=maybe"], ["9lives=1"]):
        with pytest.raises(LabkitError):
            runner.run(overrides=bad, notebooks_dir=FIXTURES, reports_dir=reports, profiles_dir=ROOT / "profiles")
    with pytest.raises(LabkitError, match="--only"):
        runner.run(only="07", notebooks_dir=FIXTURES, reports_dir=reports, profiles_dir=ROOT / "profiles")
    assert not reports.exists()


def test_failing_notebook_stops_run(tmp_path):
    reports = tmp_path / "reports"
    result = runner.run(overrides=["fail=true"], notebooks_dir=FIXTURES, reports_dir=reports,
                        profiles_dir=ROOT / "profiles", progress=False)
    assert result.status == "failed" and result.exit_code == 1
    m = json.loads((result.run_dir / "manifest.json").read_text())
    assert m["status"] == "failed"
    nb = m["notebooks"]
    assert nb["00_first"]["status"] == "ok"
    assert nb["01_second"]["status"] == "failed" and "boom on purpose" in nb["01_second"]["error"]
    assert nb["02_third"]["status"] == "skipped"
    assert nb["01_second"]["metrics"]["value"] == 1  # recorded before the failure
    html = (result.run_dir / "01_second.html").read_text()
    assert "RuntimeError" in html and "boom on purpose" in html
    assert (result.run_dir / "01_second.ipynb").is_file()
    assert not (result.run_dir / "02_third.ipynb").exists()
    index = (reports / "index.html").read_text()
    assert result.run_dir.name in index and "run-failed" in index


def test_rerun_reports_changed_metrics(tmp_path, monkeypatch, capsys):
    root = _make_root(tmp_path / "root")
    monkeypatch.setenv("LABKIT_ROOT", str(root))
    monkeypatch.delenv("LABKIT_REPORTS", raising=False)
    monkeypatch.setenv("LABKIT_TEST_VALUE", "1")
    assert run_main(["--only", "01", "-p", "steps=7", "--no-progress"]) == 0
    first = Path(capsys.readouterr().out.strip().splitlines()[-1])

    assert run_main(["--rerun", str(first), "--no-progress"]) == 0
    out = capsys.readouterr().out
    same = Path(out.strip().splitlines()[-1])
    assert "metrics: all 2 identical" in out and "exact (rtol 0)" in out and "verdict: identical" in out
    m = json.loads((same / "manifest.json").read_text())
    assert m["parameters"] == {"steps": 7} and list(m["notebooks"]) == ["01_second"]
    assert m["rerun_of"]["run_id"] == first.name and m["rerun_of"]["verdict"] == "identical"
    assert m["rerun_of"]["source"] == f"<root>/reports/{first.name}"  # inside the clone: relative to its root

    monkeypatch.setenv("LABKIT_TEST_VALUE", "2")
    assert run_main(["--rerun", str(first), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "metrics: 1 of 2 differ" in out and "01_second.value" in out and "1 -> 2" in out
    assert out.index("environment:") < out.index("metrics: 1 of 2") and "verdict: differs" in out
    assert run_main(["--rerun", str(first), "--rtol", "0.6", "--no-progress"]) == 0  # |2-1| <= 0.6 * 2
    out = capsys.readouterr().out
    assert "metrics: all 2 identical" in out and "rtol 0.6" in out


def test_shared_kernel_resets_between_notebooks(tmp_path):
    result = runner.run(notebooks_dir=FIXTURES, reports_dir=tmp_path / "reports", profiles_dir=ROOT / "profiles",
                        progress=False, share_kernel=True)
    assert result.status == "ok" and result.manifest["kernel"] == "shared"
    nb = result.manifest["notebooks"]
    assert nb["02_third"]["metrics"] == {"reached": True, "steps": 2, "leaked": False}  # namespace was reset
    assert nb["01_second"]["metrics"] == {"value": 1, "steps": 2}  # LABKIT_NOTEBOOK followed the notebook
    for stem in nb:
        executed = json.loads((result.run_dir / f"{stem}.ipynb").read_text())
        counts = [c["execution_count"] for c in executed["cells"] if c["cell_type"] == "code"]
        assert counts == list(range(1, len(counts) + 1)), (stem, counts)


def test_compare_ignores_timings_and_fingerprint():
    old = {"notebooks": {"a": {"metrics": {"train_runtime": 1.0, "fingerprint": {"ram_gb": 1}, "loss": 0.5}}}}
    new = {"notebooks": {"a": {"metrics": {"train_runtime": 2.0, "fingerprint": {"ram_gb": 2}, "loss": 0.5,
                                           "extra": 1}}}}
    assert compare_metrics(old, new) == [("a.extra", "<missing>", 1)]
    # manifests written before paths were portable: paths into each run's own folder compare relative to it
    old = {"run_dir": "/r/1", "notebooks": {"a": {"metrics": {"adapter_dir": "/r/1/lora", "files": ["/r/1/x"]}}}}
    new = {"notebooks": {"a": {"metrics": {"adapter_dir": "<run>/lora", "files": ["<run>/x"]}}}}
    assert compare_metrics(old, new) == []
    new["notebooks"]["a"]["metrics"]["adapter_dir"] = "/elsewhere/lora"
    assert compare_metrics(old, new) == [("a.adapter_dir", "<run>/lora", "/elsewhere/lora")]


def test_environment_notebook_acceptance(tmp_path):
    """`labkit run --only 00`: 00_environment.html renders offline; manifest holds fingerprint and git commit."""
    result = runner.run(only="00", reports_dir=tmp_path / "reports", progress=False)
    assert result.status == "ok", result.manifest["notebooks"]
    m = json.loads((result.run_dir / "manifest.json").read_text())
    assert m["environment_source"] == "00_environment"
    env = m["environment"]
    for key in ("python", "os", "cpu", "ram_gb", "torch", "cuda", "gpus", "bf16", "bitsandbytes", "transformers",
                "peft", "datasets", "accelerate", "tokenizers", "papermill"):
        assert key in env, key
    assert env["bitsandbytes"]["int8"]["ok"] in (True, False) and "nf4" in env["bitsandbytes"]
    assert m["git"]["commit"] and len(m["git"]["commit"]) == 40
    metrics = m["notebooks"]["00_environment"]["metrics"]
    assert metrics["pins"]["checked"] >= 20
    assert "transformers-v5-load-in-8bit-kwarg" in metrics["known_issues"]["affected"]
    html = (result.run_dir / "00_environment.html").read_text()
    assert not REMOTE.search(html)
    assert "Traceback" not in html and "pins match" in html


def test_sigterm_marks_run_interrupted_and_stops_the_kernel(tmp_path):
    reports = tmp_path / "reports"
    code = ("import sys\nfrom labkit.report.runner import run\n"
            f"run(only='01', overrides=['sleep_s=120'], notebooks_dir={str(FIXTURES)!r}, reports_dir={str(reports)!r}, "
            f"profiles_dir={str(ROOT / 'profiles')!r}, progress=False)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        metrics = None
        while time.time() < deadline:
            found = list(reports.glob("*/metrics/01_second.json"))
            if found and "pid" in json.loads(found[0].read_text() or "{}"):
                metrics = json.loads(found[0].read_text())
                break
            time.sleep(0.2)
        assert metrics, "the notebook never reached its sleep"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, out
    m = json.loads(next(reports.glob("*/manifest.json")).read_text())
    assert m["status"] == "interrupted" and m["notebooks"]["01_second"]["status"] == "interrupted"
    time.sleep(1)
    with pytest.raises(ProcessLookupError):
        os.kill(metrics["pid"], 0)  # the kernel is gone, not orphaned


def test_run_options_reject_unknown_names():
    with pytest.raises(TypeError, match="no_such_option"):
        runner.run(no_such_option=1)


def test_report_functions_are_short():
    """The runner reads as steps: no function in labkit/report is over 80 lines."""
    import ast

    long = []
    for path in sorted((ROOT / "labkit" / "report").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long.append(f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert long == []

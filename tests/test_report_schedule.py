"""Notebooks side by side: `labkit.needs` metadata -> dependencies, the auto job count, and real runs that could
only pass with two kernels at once (one notebook waits for a file the other writes)."""

import json
from pathlib import Path

import nbformat
import pytest

from labkit.errors import LabkitError
from labkit.report import runner
from labkit.report.schedule import auto_jobs, can_overlap, dependencies, ready

ROOT = Path(__file__).resolve().parents[1]

WAITS = """import os, pathlib, time
flag = pathlib.Path(os.environ["LABKIT_RUN_DIR"]) / "second_started"
deadline = time.time() + 120
while not flag.exists() and time.time() < deadline:
    time.sleep(0.1)
assert flag.exists(), "01_waits ran alone: 02_signals never started beside it"
(flag.parent / "waits_done").write_text("ok")"""
SIGNALS = """import os, pathlib
(pathlib.Path(os.environ["LABKIT_RUN_DIR"]) / "second_started").write_text("ok")"""
AFTER = """import os, pathlib
run = pathlib.Path(os.environ["LABKIT_RUN_DIR"])
assert (run / "waits_done").exists() and (run / "second_started").exists()
print("after both")"""
FAILS = """raise ValueError("01 fails on purpose")"""


def _notebook(path: Path, source: str, needs=None) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if needs is not None:
        nb.metadata["labkit"] = {"needs": needs}
    nbformat.write(nb, path)
    return path


def _workbook(base: Path, cells: dict, needs: dict) -> Path:
    (base / "notebooks").mkdir(parents=True)
    (base / "profiles").mkdir()
    (base / "profiles" / "tiny.yaml").write_text("{}\n")
    for stem, source in cells.items():
        _notebook(base / "notebooks" / f"{stem}.ipynb", source, needs.get(stem))
    return base


def _run(base: Path, **kw):
    return runner.run(notebooks_dir=base / "notebooks", reports_dir=base / "reports", profiles_dir=base / "profiles",
                      progress=False, echo=lambda s: None, **kw)


def test_undeclared_needs_mean_every_earlier_notebook(tmp_path):
    paths = [_notebook(tmp_path / f"{s}.ipynb", "1") for s in ("00_a", "01_b", "02_c")]
    deps = dependencies(paths, paths)
    assert deps == {"00_a": set(), "01_b": {"00_a"}, "02_c": {"00_a", "01_b"}}
    assert not can_overlap(deps)
    assert auto_jobs(deps, {}, cpus=16) == 1  # nothing can overlap: one at a time, all threads to each


def test_declared_needs_only_count_selected_notebooks(tmp_path):
    a = _notebook(tmp_path / "00_a.ipynb", "1", [])
    b = _notebook(tmp_path / "01_b.ipynb", "1", [])
    c = _notebook(tmp_path / "02_c.ipynb", "1", ["00_a", "01_b"])
    deps = dependencies([a, b, c], [a, b, c])
    assert deps == {"00_a": set(), "01_b": set(), "02_c": {"00_a", "01_b"}}
    assert can_overlap(deps)
    assert dependencies([c], [a, b, c]) == {"02_c": set()}  # --only 02: its inputs come from parameters
    assert ready(deps, done=set(), started=set()) == ["00_a", "01_b"]
    assert ready(deps, done={"00_a"}, started={"00_a", "01_b"}) == []
    assert ready(deps, done={"00_a", "01_b"}, started={"00_a", "01_b"}) == ["02_c"]


def test_auto_jobs_two_for_tiny_on_two_cpus_one_for_real_models(tmp_path):
    a = _notebook(tmp_path / "00_a.ipynb", "1", [])
    b = _notebook(tmp_path / "01_b.ipynb", "1", [])
    deps = dependencies([a, b], [a, b])
    assert auto_jobs(deps, {"00_a": {"llama_model": ""}}, cpus=2) == 2
    assert auto_jobs(deps, {"00_a": {"llama_model": ""}}, cpus=1) == 1
    assert auto_jobs(deps, {"00_a": {"llama_model": "/models/linly-7b"}}, cpus=16) == 1


def test_bad_needs_are_named(tmp_path):
    a = _notebook(tmp_path / "00_a.ipynb", "1", ["01_b"])
    b = _notebook(tmp_path / "01_b.ipynb", "1", ["09_missing"])
    with pytest.raises(LabkitError, match="runs later"):
        dependencies([a, b], [a, b])
    with pytest.raises(LabkitError, match="09_missing.*not a notebook"):
        dependencies([b], [a, b])
    c = _notebook(tmp_path / "02_c.ipynb", "1", "00_a")
    with pytest.raises(LabkitError, match="must be a list"):
        dependencies([c], [c])


def test_shipped_workbook_declares_what_each_notebook_reads():
    paths = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    deps = dependencies(paths, paths)
    assert deps["04_evaluation"] == {"02_linly_lora", "03_baichuan_wpack"}  # it evaluates their adapters
    assert deps["05_attention"] == {"02_linly_lora", "03_baichuan_wpack"}  # it compares base and adapter
    assert deps["02_linly_lora"] == deps["03_baichuan_wpack"] == set()  # the two trainings run side by side
    assert auto_jobs(deps, {}, cpus=2) == 2


def test_two_notebooks_run_side_by_side_and_the_third_waits_for_both(tmp_path):
    base = _workbook(tmp_path, {"01_waits": WAITS, "02_signals": SIGNALS, "03_after": AFTER},
                     {"01_waits": [], "02_signals": [], "03_after": ["01_waits", "02_signals"]})
    result = _run(base, jobs=2, threads=None)
    m = result.manifest
    assert result.status == "ok", json.dumps(m["notebooks"], indent=1)[:2000]
    assert m["jobs"] == 2 and m["threads"] >= 1
    assert [m["notebooks"][s]["status"] for s in ("01_waits", "02_signals", "03_after")] == ["ok"] * 3
    assert m["notebooks"]["03_after"]["started"] >= m["notebooks"]["01_waits"]["started"]
    saved = json.loads((result.run_dir / "manifest.json").read_text())
    assert saved["jobs"] == 2 and saved["status"] == "ok"


def test_a_failure_starts_nothing_that_needs_it(tmp_path):
    base = _workbook(tmp_path, {"01_fails": FAILS, "02_signals": SIGNALS, "03_after": AFTER},
                     {"01_fails": [], "02_signals": [], "03_after": ["01_fails", "02_signals"]})
    result = _run(base, jobs=2)
    nb = result.manifest["notebooks"]
    assert result.status == "failed"
    assert nb["01_fails"]["status"] == "failed" and "01 fails on purpose" in nb["01_fails"]["error"]
    assert nb["02_signals"]["status"] == "ok"  # started beside it, finished
    assert nb["03_after"]["status"] == "skipped"


def test_jobs_one_runs_in_order(tmp_path):
    base = _workbook(tmp_path, {"01_signals": SIGNALS, "02_after_signal": "import os, pathlib\n"
                                "assert (pathlib.Path(os.environ['LABKIT_RUN_DIR']) / 'second_started').exists()"},
                     {"01_signals": [], "02_after_signal": []})
    result = _run(base, jobs=1)
    assert result.status == "ok" and result.manifest["jobs"] == 1


def test_jobs_below_one_is_refused(tmp_path):
    base = _workbook(tmp_path, {"01_signals": SIGNALS}, {})
    with pytest.raises(LabkitError, match="--jobs 0"):
        _run(base, jobs=0)


SLEEPS = """import json, os, pathlib, time
run = pathlib.Path(os.environ["LABKIT_RUN_DIR"])
(run / (os.environ["LABKIT_NOTEBOOK"] + ".pid")).write_text(str(os.getpid()))
time.sleep(300)"""


def test_sigterm_stops_every_kernel_running_side_by_side(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    base = _workbook(tmp_path, {"01_sleeps": SLEEPS, "02_sleeps": SLEEPS, "03_after": AFTER},
                     {"01_sleeps": [], "02_sleeps": [], "03_after": ["01_sleeps", "02_sleeps"]})
    code = ("from labkit.report.runner import run\n"
            f"run(notebooks_dir={str(base / 'notebooks')!r}, reports_dir={str(base / 'reports')!r}, "
            f"profiles_dir={str(base / 'profiles')!r}, progress=False, jobs=2)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, pids = time.time() + 180, []
        while time.time() < deadline and len(pids) < 2:
            pids = [int(p.read_text()) for p in (base / "reports").glob("*/0[12]_sleeps.pid") if p.read_text()]
            time.sleep(0.2)
        assert len(pids) == 2, "the two notebooks never ran side by side"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, out
    m = json.loads(next((base / "reports").glob("*/manifest.json")).read_text())
    nb = m["notebooks"]
    assert m["status"] == "interrupted", out
    assert nb["01_sleeps"]["status"] == nb["02_sleeps"]["status"] == "interrupted"
    assert nb["03_after"]["status"] == "skipped"
    time.sleep(1)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # both kernels are gone, not orphaned


def test_a_shared_kernel_runs_one_notebook_at_a_time(tmp_path):
    base = _workbook(tmp_path, {"01_signals": SIGNALS, "02_after_signal": "import os, pathlib\n"
                                "assert (pathlib.Path(os.environ['LABKIT_RUN_DIR']) / 'second_started').exists()"},
                     {"01_signals": [], "02_after_signal": []})
    result = _run(base, share_kernel=True)  # the notebooks could overlap, but they share one kernel
    assert result.status == "ok" and result.manifest["jobs"] == 1
    with pytest.raises(LabkitError, match="--shared-kernel.*drop --jobs 2"):
        _run(base, share_kernel=True, jobs=2)

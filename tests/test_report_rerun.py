"""labkit.report.rerun: a run folder copied anywhere (or its share zip) reruns from another clone; the rerun says
what differs in the environment and the code first, then the metrics, with no path noise."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from labkit.report.cli import main as run_main

ROOT = Path(__file__).resolve().parents[1]

_PARAMS = '''words_file: str = "../data/words.txt"  # a file of the clone (relative to notebooks/)
outside_dir: str = ""  # a folder outside the clone, recorded as given
scale: float = 1.0  # multiplies the word count'''
_BODY = '''run = pathlib.Path(os.environ["LABKIT_RUN_DIR"])
lora = run / "toy_lora"
(lora / "checkpoint-1").mkdir(parents=True, exist_ok=True)
(lora / "adapter_config.json").write_text('{"r": 2}')
(lora / "adapter_model.safetensors").write_bytes(b"w" * 64)
(lora / "checkpoint-1" / "adapter_config.json").write_text("{}")
(lora / "checkpoint-1" / "optimizer.pt").write_bytes(b"o" * 64)
words = pathlib.Path(words_file).resolve()
record(adapter_dir=str(lora), files=[str(lora / "adapter_config.json")], words_file=str(words),
       outside_dir=outside_dir or None, words=len(words.read_text().split()) * scale,
       value=int(os.environ.get("LABKIT_TEST_VALUE", "1")), threads=int(os.environ["LABKIT_THREADS"]),
       omp_threads=int(os.environ["OMP_NUM_THREADS"]))'''


def make_clone(base: Path) -> Path:
    """A project root: one notebook that writes a toy adapter into its run folder and records paths of all kinds."""
    nb = new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                                "language_info": {"name": "python"}})
    params = new_code_cell(_PARAMS)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [new_markdown_cell("# Paths\n\nRecords paths inside the run, inside the clone and outside both."),
                new_code_cell("import os, pathlib\nfrom labkit.report import record"), params, new_code_cell(_BODY)]
    (base / "notebooks").mkdir(parents=True)
    nbformat.write(nb, base / "notebooks" / "00_paths.ipynb")
    (base / "data").mkdir()
    (base / "data" / "words.txt").write_text("one two three\n")
    (base / "profiles").mkdir()
    (base / "profiles" / "tiny.yaml").write_text("{}\n")
    return base


def _main(argv: list[str], capsys) -> tuple[int, str]:
    code = run_main([*argv, "--no-progress"])
    return code, capsys.readouterr().out


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """One run in clone A, its folder then copied out of A (the clone is gone for the colleague)."""
    base = tmp_path_factory.mktemp("share")
    clone_a = make_clone(base / "a")
    outside = base / "models" / "linly-7b"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LABKIT_ROOT", str(clone_a))
        mp.delenv("LABKIT_REPORTS", raising=False)
        mp.delenv("LABKIT_TEST_VALUE", raising=False)
        code = run_main(["-p", f"outside_dir={outside}", "-p", "scale=2", "--zip", "--no-progress",
                         "-p", f"words_file={clone_a / 'data' / 'words.txt'}"])  # absolute, inside clone A
    assert code == 0
    run = sorted((clone_a / "reports").glob("*-tiny"))[-1]
    copied = base / "Downloads" / run.name
    shutil.copytree(run, copied)
    return base, run, copied, outside


def test_manifest_paths_are_relative_and_outside_ones_named(first_run):
    _, run, _, outside = first_run
    m = json.loads((run / "manifest.json").read_text())
    metrics = m["notebooks"]["00_paths"]["metrics"]
    assert metrics["adapter_dir"] == "<run>/toy_lora" and metrics["files"] == ["<run>/toy_lora/adapter_config.json"]
    assert metrics["words_file"] == "<root>/data/words.txt" and metrics["outside_dir"] == str(outside)
    assert m["parameters"] == {"outside_dir": str(outside), "scale": 2.0, "words_file": "<root>/data/words.txt"}
    assert m["paths"]["outside"]["parameters.outside_dir"] == str(outside)
    assert m["paths"]["outside"]["notebooks.00_paths.metrics.outside_dir"] == str(outside)
    text = (run / "manifest.json").read_text()
    assert str(run) not in text and str(run.parent.parent) + "/" not in text  # neither the run folder nor the clone


def test_copied_folder_reruns_identical_from_another_clone(first_run, monkeypatch, capsys):
    base, _, copied, outside = first_run
    clone_b = make_clone(base / "b")
    monkeypatch.setenv("LABKIT_ROOT", str(clone_b))
    monkeypatch.delenv("LABKIT_REPORTS", raising=False)
    monkeypatch.delenv("LABKIT_TEST_VALUE", raising=False)
    code, out = _main(["--rerun", str(copied)], capsys)
    assert code == 0, out
    assert "metrics: all 8 identical" in out and "exact (rtol 0)" in out and "verdict: identical" in out
    assert "<run>" not in out and "<root>" not in out  # no path noise
    assert "environment: no difference" in out
    assert f"  outside_dir = {outside} (missing here: pass -p outside_dir=<your copy>)" in out
    new = Path(out.strip().splitlines()[-1])
    assert new.parent == clone_b / "reports"
    m = json.loads((new / "manifest.json").read_text())
    assert m["notebooks"]["00_paths"]["metrics"]["words"] == 6.0  # the recorded scale=2 came along
    assert m["parameters"]["words_file"] == "<root>/data/words.txt"  # clone B's file was read, not clone A's
    executed = (new / "00_paths.ipynb").read_text()
    assert json.dumps(str(clone_b / "data" / "words.txt"))[1:-1] in executed
    assert m["rerun_of"]["run_id"] == copied.name and m["rerun_of"]["verdict"] == "identical"
    assert m["rerun_of"]["source"] == str(copied) and m["paths"]["outside"]["rerun_of.source"] == str(copied)
    index = (clone_b / "reports" / "index.html").read_text()
    assert f"rerun of {copied.name} (not here): <b class=\"identical\">identical</b>" in index


def test_rerun_uses_the_recorded_thread_count(first_run, monkeypatch, capsys, tmp_path):
    """Kernels of a run share one torch thread count, decided once and recorded; a rerun repeats it (CPU results are
    bit-identical only at the same count), whatever the machine's load is now."""
    base, run, _, _ = first_run
    m = json.loads((run / "manifest.json").read_text())
    assert m["threads"] >= 1 and m["notebooks"]["00_paths"]["metrics"]["threads"] == m["threads"]
    # torch reads OMP_NUM_THREADS at import: notebooks that never set threads themselves get the same count
    assert m["notebooks"]["00_paths"]["metrics"]["omp_threads"] == m["threads"]
    copied = tmp_path / run.name
    shutil.copytree(run, copied)
    m["threads"] = 1
    (copied / "manifest.json").write_text(json.dumps(m))
    monkeypatch.setenv("LABKIT_ROOT", str(make_clone(base / "threads")))
    monkeypatch.delenv("LABKIT_REPORTS", raising=False)
    monkeypatch.delenv("LABKIT_THREADS", raising=False)
    _, out = _main(["--rerun", str(copied)], capsys)
    assert "threads: 1, as recorded" in out
    new = json.loads((Path(out.strip().splitlines()[-1]) / "manifest.json").read_text())
    assert new["threads"] == 1 and new["notebooks"]["00_paths"]["metrics"]["threads"] == 1
    assert new["notebooks"]["00_paths"]["metrics"]["omp_threads"] == 1


def test_environment_difference_named_first(first_run, monkeypatch, capsys):
    base, _, copied, _ = first_run
    edited = base / "edited" / copied.name
    shutil.copytree(copied, edited)
    manifest = json.loads((edited / "manifest.json").read_text())
    manifest["environment"]["torch"] = "1.13.1+cu117"
    (edited / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("LABKIT_ROOT", str(base / "a"))
    monkeypatch.delenv("LABKIT_REPORTS", raising=False)
    monkeypatch.setenv("LABKIT_TEST_VALUE", "5")
    mine = base / "my-models"  # the colleague's own copy of the outside folder
    mine.mkdir()
    code, out = _main(["--rerun", str(edited), "-p", f"outside_dir={mine}"], capsys)
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == f"rerun of {copied.name} ({edited})"
    assert lines[1] == "environment: 1 difference(s) (recorded -> this machine):"
    assert lines[2].split() == ["torch", "build", '"1.13.1+cu117"', "->", json.dumps(manifest["environment"]
                                                                                    .get("packages", {}).get("torch"))]
    assert out.index("torch build") < out.index("metrics: 2 of 8 differ") < out.index("verdict: differs")
    assert "(replaced by -p outside_dir)" in out
    assert "00_paths.value        1 -> 5" in out and f'00_paths.outside_dir  "{first_run[3]}" -> "{mine}"' in out


def test_rerun_from_share_zip(first_run, monkeypatch, capsys):
    base, run, _, _ = first_run
    shared = run.parent / f"{run.name}.zip"  # written by `labkit run --zip`
    with zipfile.ZipFile(shared) as zf:
        names = set(zf.namelist())
    assert {f"{run.name}/{n}" for n in ("manifest.json", "00_paths.html", "00_paths.ipynb",
                                        "toy_lora/adapter_config.json", "toy_lora/adapter_model.safetensors")} == names
    monkeypatch.setenv("LABKIT_ROOT", str(base / "a"))
    monkeypatch.delenv("LABKIT_REPORTS", raising=False)
    monkeypatch.delenv("LABKIT_TEST_VALUE", raising=False)
    code, out = _main(["--rerun", str(shared)], capsys)
    assert code == 0, out
    assert "metrics: all 8 identical" in out and "verdict: identical" in out
    new = Path(out.strip().splitlines()[-1])
    assert json.loads((new / "manifest.json").read_text())["rerun_of"]["source"] == f"<root>/reports/{shared.name}"
    index = (base / "a" / "reports" / "index.html").read_text()
    assert f'rerun of <a href="#run-{run.name}">{run.name}</a>: <b class="identical">identical</b>' in index


# ---- the real workbook, reduced: a second git clone reruns a copied run folder and its zip -------------------

REDUCED = {"max_steps": 4, "save_steps": 2, "max_eval_samples": 4, "n_heldout": 2, "n_preview": 2,
           "probe_quantization": False}


def _labkit(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labkit", *args, "--no-progress"], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=900)


@pytest.mark.slow
def test_workbook_run_reruns_identical_from_a_second_clone(tmp_path):
    from labkit import paths
    from labkit.report.params import notebook_parameters
    from labkit.report.runner import discover_notebooks, select_notebooks

    selected = select_notebooks(discover_notebooks(ROOT / "notebooks"), "00,02")
    declared = {n for p in selected for n in notebook_parameters(p)}
    params = [f"{k}={json.dumps(v)}" for k, v in REDUCED.items() if k in declared]
    env = {**os.environ, "LABKIT_CACHE": str(paths.cache_dir()), "LABKIT_REPORTS": str(tmp_path / "reports")}
    env.pop("LABKIT_ROOT", None)
    env.pop("MPLBACKEND", None)
    first = _labkit(["run", "--only", "00,02", "--zip", *sum((["-p", p] for p in params), [])], env, tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    run = Path(first.stdout.strip().splitlines()[-1])
    shared = run.parent / f"{run.name}.zip"
    with zipfile.ZipFile(shared) as zf:
        names = zf.namelist()
    adapters = [n for n in names if n.endswith("adapter_model.safetensors")]
    assert adapters and not any("checkpoint-" in n or n.endswith(("optimizer.pt", "/model.safetensors"))
                                for n in names), names
    copied = tmp_path / "colleague" / run.name
    shutil.copytree(run, copied)

    # a second clone of the same commit, with this checkout's uncommitted notebooks/data/profiles laid over it
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, capture_output=True)
    for folder in ("notebooks", "data", "profiles"):
        shutil.copytree(ROOT / folder, clone / folder, dirs_exist_ok=True)
    env2 = {k: v for k, v in env.items() if k != "LABKIT_REPORTS"} | {"LABKIT_ROOT": str(clone)}
    for source in (copied, shared):
        again = _labkit(["run", "--rerun", str(source)], env2, tmp_path)
        out = again.stdout
        assert again.returncode == 0, out[-4000:] + again.stderr[-3000:]
        assert "verdict: identical" in out and "<run>" not in out, out[-4000:]
        assert out.index("environment:") < out.index("code:") < out.index("metrics: all")
    assert len(list((clone / "reports").glob("*/manifest.json"))) == 2

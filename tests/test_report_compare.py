"""labkit.report.compare: metric differences (timings ignored), environment and code differences of two runs."""

import copy
import subprocess

from labkit.report.compare import code_differences, compare_metrics, environment_differences
from labkit.report.manifest import git_info

ENV = {
    "python": "3.11.7", "torch": "2.5.1+cpu", "cuda": None, "os": "Linux", "cpu": "AMD EPYC", "cpu_count": 2,
    "cpu_capability": "AVX2", "gpus": [], "bf16": {"cuda": False, "cpu_accelerated": False},
    "python_executable": "/usr/bin/python3", "ram_gb": 23.5, "transformers": "4.40.0",
    "packages": {"torch": "2.5.1+cpu", "transformers": "4.40.0", "peft": "0.10.0", "numpy": "1.26.4"},
}


def test_environment_differences_torch_build_first_then_packages():
    new = copy.deepcopy(ENV)
    new.update(torch="2.5.1+cu121", cuda="12.1", ram_gb=64.0, python_executable="/opt/py/bin/python")
    new["gpus"] = [{"index": 0, "name": "NVIDIA H100", "memory_gb": 79.6, "capability": "9.0"}]
    new["bf16"]["cuda"] = True
    new["packages"].update(torch="2.5.1+cu121", peft="0.11.0")
    diffs = environment_differences(ENV, new)
    assert [d[0] for d in diffs] == ["torch build", "CUDA", "GPUs", "bf16 on GPU", "peft"]
    assert diffs[0][1:] == ("2.5.1+cpu", "2.5.1+cu121")
    assert diffs[2][2] == "NVIDIA H100 (sm 9.0, 79.6 GB)" and diffs[2][1] == "none"
    assert environment_differences(ENV, copy.deepcopy(ENV)) == []  # RAM, executable path: not differences


def test_environment_facts_recorded_on_one_side_only_are_skipped():
    cheap = {k: ENV[k] for k in ("python", "torch", "os", "cpu", "cpu_count", "transformers")}  # the runner's own
    assert environment_differences(cheap, ENV) == []


def test_metric_differences_respect_rtol_and_ignore_timings():
    old = {"notebooks": {"a": {"metrics": {"loss": 0.5, "train_seconds": 3.0, "n": 4, "nan": float("nan")}}}}
    new = {"notebooks": {"a": {"metrics": {"loss": 0.5000001, "train_seconds": 9.0, "n": 4, "nan": float("nan")}}}}
    assert compare_metrics(old, new) == [("a.loss", 0.5, 0.5000001)]
    assert compare_metrics(old, new, rtol=1e-6) == []


def _git(cwd, *args):
    subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True)


def test_code_differences_between_commits(tmp_path):
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    (repo / "labkit").mkdir()
    _git(tmp_path, "init", "-q", str(repo))
    _git(repo, "config", "user.email", "t@example.org")
    _git(repo, "config", "user.name", "t")
    (repo / "notebooks" / "02_x.ipynb").write_text("{}")
    (repo / "labkit" / "a.py").write_text("a = 1\n")
    (repo / "README.md").write_text("hi\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "one")
    old = git_info(repo)
    assert old["dirty"] is False and len(old["commit"]) == 40
    assert code_differences(old, repo) == [f"code: same commit {old['commit'][:10]}"]

    (repo / "labkit" / "a.py").write_text("a = 2\n")
    (repo / "README.md").write_text("changed\n")  # not code: not listed
    _git(repo, "commit", "-qam", "two")
    (repo / "notebooks" / "02_x.ipynb").write_text('{"cells": []}')  # uncommitted
    lines = code_differences(old, repo)
    new = git_info(repo)
    assert lines[0] == f"code: commit {old['commit'][:10]} -> {new['commit'][:10]}"
    assert lines[1] == "  1 file(s) changed between them: labkit/a.py"
    assert lines[2] == "  this clone has uncommitted changes: notebooks/02_x.ipynb"

    unknown = dict(old, commit="f" * 40, dirty=True, changed=["labkit/b.py"])
    lines = code_differences(unknown, repo)
    assert "is not in this clone" in lines[1] and lines[2].endswith("uncommitted changes: labkit/b.py")
    assert code_differences({"commit": None}, repo)[0].startswith("code: the earlier run recorded no git commit")

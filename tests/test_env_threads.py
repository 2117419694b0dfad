"""Threads: affinity and cgroup quota cap torch's threads; other processes' load lowers them; training next to a
CPU-bound process stays within 3x of its idle time."""

import os
import subprocess
import sys
import time

import pytest
import torch

from labkit.env import threads
from labkit.paths import project_root


def test_cgroup_quota_v2_and_v1(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert threads.cgroup_quota(v2) == 1.5
    (v2 / "cpu.max").write_text("max 100000\n")
    assert threads.cgroup_quota(v2) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.cgroup_quota(v1) == 2.0
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert threads.cgroup_quota(v1) is None
    assert threads.cgroup_quota(tmp_path / "none") is None


def test_available_cpus_respects_affinity_and_quota(monkeypatch):
    monkeypatch.setattr(threads, "affinity_cpus", lambda: [0, 1, 2, 3])
    monkeypatch.setattr(threads, "cgroup_quota", lambda: None)
    assert threads.available_cpus() == 4
    monkeypatch.setattr(threads, "cgroup_quota", lambda: 1.2)
    assert threads.available_cpus() == 2  # 1.2 CPUs of quota: 2 threads, not 4
    monkeypatch.setattr(threads, "cgroup_quota", lambda: 0.5)
    assert threads.available_cpus() == 1


def test_plan_subtracts_other_processes(monkeypatch):
    monkeypatch.setattr(threads, "affinity_cpus", lambda: [0, 1, 2, 3])
    monkeypatch.setattr(threads, "cgroup_quota", lambda: None)
    planner = threads.ThreadPlanner()
    assert planner.plan(None) == 4
    assert planner.plan(0.2) == 4
    assert planner.plan(1.0) == 3
    assert planner.plan(2.6) == 1
    assert planner.plan(9.0) == 1  # never below one


def test_configure_threads_explicit_and_warn_once(monkeypatch, caplog):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("LABKIT_THREADS", "1")
        assert threads.configure_threads(sample_seconds=0) == 1 and torch.get_num_threads() == 1
        monkeypatch.delenv("LABKIT_THREADS")
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(threads, "_warned", False)
        monkeypatch.setattr(threads, "affinity_cpus", lambda: [0, 1])
        monkeypatch.setattr(threads, "cgroup_quota", lambda: None)
        monkeypatch.setattr(threads.ThreadPlanner, "others_busy", lambda self: 1.0)
        messages = []
        import labkit.log

        monkeypatch.setattr(labkit.log, "warn", messages.append)
        assert threads.configure_threads(sample_seconds=0) == 1
        assert threads.configure_threads(sample_seconds=0) == 1
        assert len(messages) == 1 and "busy" in messages[0]
    finally:
        torch.set_num_threads(before)


def test_others_busy_is_measured():
    planner = threads.ThreadPlanner()
    time.sleep(0.2)
    others = planner.others_busy()
    assert others is None or 0.0 <= others <= len(planner.cpus)


TRAIN = """
import sys, time
from labkit.train.config import TrainConfig
from labkit.train.sft import run_training
cfg = TrainConfig(output_dir=sys.argv[1], max_steps=6, per_device_train_batch_size=4, save_strategy="no",
                  logging_steps=10, disable_tqdm=True, plot_loss=False, overwrite_output_dir=True, max_samples=64)
t0 = time.perf_counter()
run_training(cfg)
print("SECONDS", time.perf_counter() - t0)
"""

BURN = "import time\nt = time.time()\nwhile time.time() - t < 600:\n    sum(i * i for i in range(10000))\n"


def _train_seconds(tmp_path, name):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "LABKIT_THREADS", "MKL_NUM_THREADS")}
    p = subprocess.run([sys.executable, "-c", TRAIN, str(tmp_path / name)], capture_output=True, text=True,
                       cwd=project_root(), env=env, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    return float([ln for ln in p.stdout.splitlines() if ln.startswith("SECONDS")][-1].split()[1])


@pytest.mark.slow
def test_training_next_to_a_cpu_bound_process(tmp_path):
    """A short tiny training with one CPU-bound process per spare core beside it: within 3x of its idle time."""
    _train_seconds(tmp_path, "warm")  # builds/caches the tiny model, warms imports
    idle = _train_seconds(tmp_path, "idle")
    burners = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(max(1, len(threads.affinity_cpus()) - 1))]
    try:
        time.sleep(1.0)
        busy = _train_seconds(tmp_path, "busy")
    finally:
        for b in burners:
            b.kill()
            b.wait()
    assert busy < 3 * idle, f"idle {idle:.1f}s, next to a CPU-bound process {busy:.1f}s"

"""labkit.train.checkpoints: completion marker, newest complete, repair of best_model_checkpoint, real SIGKILL resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from labkit.errors import LabkitError
from labkit.train import checkpoints as ck

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "train_worker.py"
BASE = {"max_steps": 24, "save_steps": 4, "logging_steps": 4, "learning_rate": 3e-3, "lora_dropout": 0.1,
        "per_device_train_batch_size": 4, "gradient_accumulation_steps": 2}


def _fake_ckpt(root: Path, step: int, complete: bool = True) -> Path:
    d = root / f"checkpoint-{step}"
    d.mkdir(parents=True)
    (d / "adapter_model.safetensors").write_bytes(b"x" * 10)
    (d / "trainer_state.json").write_text(json.dumps({"global_step": step, "best_model_checkpoint": None}))
    if complete:
        ck.write_marker(d)
    return d


def test_marker_lists_files_and_detects_truncation(tmp_path):
    d = _fake_ckpt(tmp_path, 3)
    assert ck.is_complete(d)
    body = json.loads((d / ck.MARKER).read_text())
    assert body["step"] == 3 and body["files"]["adapter_model.safetensors"] == 10
    (d / "adapter_model.safetensors").write_bytes(b"x" * 4)  # truncated after the marker
    assert "4 bytes" in ck.incomplete_reason(d)


def test_latest_complete_skips_half_written_with_warning(tmp_path, capsys):
    _fake_ckpt(tmp_path, 2)
    _fake_ckpt(tmp_path, 10)
    _fake_ckpt(tmp_path, 12, complete=False)
    assert ck.latest_complete(tmp_path).name == "checkpoint-10"  # numeric order, 12 skipped
    assert "checkpoint-12" in capsys.readouterr().err
    assert ck.resolve_resume("auto", tmp_path).name == "checkpoint-10"
    assert ck.resolve_resume("true", tmp_path).name == "checkpoint-10"
    assert ck.resolve_resume("", tmp_path) is None
    assert ck.resolve_resume(str(tmp_path), tmp_path / "elsewhere").name == "checkpoint-10"
    with pytest.raises(LabkitError, match="incomplete"):
        (tmp_path / "checkpoint-12" / "optimizer.pt").write_bytes(b"")
        (tmp_path / "checkpoint-12" / ck.MARKER).write_text("{broken")
        ck.resolve_resume(str(tmp_path / "checkpoint-12"), tmp_path)
    with pytest.raises(LabkitError, match="no such folder"):
        ck.resolve_resume(str(tmp_path / "nope"), tmp_path)
    removed = ck.drop_stale_after(tmp_path, 10)
    assert [p.name for p in removed] == ["checkpoint-12"] and not (tmp_path / "checkpoint-12").exists()


@pytest.mark.parametrize("recorded", ["{old}/checkpoint-4", "./gone/checkpoint-4", "checkpoint-4", "/moved/x/checkpoint-4"])
def test_repair_best_model_checkpoint(tmp_path, recorded):
    """The "'checkpoint-1400' is not in list" bug: the recorded best folder is gone, moved or spelled differently."""
    out = tmp_path / "run2"
    best = _fake_ckpt(out, 4)
    last = _fake_ckpt(out, 8)
    state = json.loads((last / "trainer_state.json").read_text())
    state["best_model_checkpoint"] = recorded.format(old=tmp_path / "run1")
    (last / "trainer_state.json").write_text(json.dumps(state))
    ck.write_marker(last)
    assert ck.repair_best_checkpoint(last, out) == str(best.resolve())
    assert json.loads((last / "trainer_state.json").read_text())["best_model_checkpoint"] == str(best.resolve())
    assert (last / "trainer_state.json.orig").is_file() and ck.is_complete(last)
    shutil.rmtree(best)  # best folder gone entirely: cleared, not crashing later
    assert ck.repair_best_checkpoint(last, out) is None


def _run(out: Path, fault: str = "", **over) -> subprocess.CompletedProcess:
    env = {**os.environ, "LABKIT_FAULT": fault, "OMP_NUM_THREADS": "1"}
    spec = {**BASE, "output_dir": str(out), **over}
    return subprocess.run([sys.executable, str(WORKER), json.dumps(spec)], env=env, capture_output=True,
                          text=True, timeout=240)


def _adapter(path: Path) -> dict:
    return load_file(str(path / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    proc = _run(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
def test_sigkill_at_several_points_resumes_bit_identical(reference, tmp_path):
    out = tmp_path / "out"
    # 1. killed (SIGKILL) right after optimizer step 10: checkpoint-8 is the newest complete one
    p = _run(out, "kill_step:10")
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    assert [c.name for c in ck.list_checkpoints(out)] == ["checkpoint-4", "checkpoint-8"]
    # 2. resumed, then killed in the middle of saving checkpoint-16 (adapter written, the rest not)
    p = _run(out, "kill_save:16", resume_from_checkpoint="auto")
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    half = out / "checkpoint-16"
    assert (half / "adapter_model.safetensors").is_file() and not ck.is_complete(half)
    # 3. resumed again: skips the half-written checkpoint-16 naming it, restarts from checkpoint-12
    p = _run(out, resume_from_checkpoint="true")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "checkpoint-16" in p.stderr and "half-written" in p.stderr
    assert json.loads((out / "train_metrics.json").read_text())["resumed_from"].endswith("checkpoint-12")
    ref, got = _adapter(reference), _adapter(out)
    assert ref.keys() == got.keys() and len(ref) == 2 * 4 * 2  # A,B x q,k,v,o x 2 layers
    diff = max(float((ref[k] - got[k]).abs().max()) for k in ref)
    assert diff == 0.0, f"resumed adapter differs from the uninterrupted run by {diff}"
    assert all(ck.is_complete(c) for c in ck.list_checkpoints(out))


@pytest.mark.slow
def test_resume_from_checkpoint_in_another_output_dir(reference, tmp_path):
    out = tmp_path / "elsewhere"
    p = _run(out, resume_from_checkpoint=str(reference / "checkpoint-12"))
    assert p.returncode == 0, p.stderr[-3000:]
    ref, got = _adapter(reference), _adapter(out)
    assert max(float((ref[k] - got[k]).abs().max()) for k in ref) == 0.0
    assert ck.list_checkpoints(out)[0].name == "checkpoint-16"  # continues the step count


@pytest.mark.slow
def test_rotation_with_load_best_and_a_moved_run(tmp_path):
    """save_total_limit + load_best_model_at_end, then the run folder renamed and resumed (the seed's failure)."""
    first = tmp_path / "run1"
    over = {"max_steps": 12, "eval_strategy": "steps", "eval_steps": 4, "val_set_size": 16,
            "save_total_limit": 1, "load_best_model_at_end": True}
    p = _run(first, **over)
    assert p.returncode == 0, p.stderr[-3000:]
    state = json.loads((first / "trainer_state.json").read_text())
    kept = [c.name for c in ck.list_checkpoints(first)]
    assert Path(state["best_model_checkpoint"]).name in kept and len(kept) <= 2
    moved = tmp_path / "run1-renamed"
    first.rename(moved)
    p = _run(moved, **{**over, "max_steps": 20}, resume_from_checkpoint="auto")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "is not in list" not in p.stderr
    state = json.loads((moved / "trainer_state.json").read_text())
    assert state["global_step"] == 20 and Path(state["best_model_checkpoint"]).parent == moved
    assert all(ck.is_complete(c) for c in ck.list_checkpoints(moved))

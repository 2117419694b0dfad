"""labkit.train.checkpoints: completion marker (sizes + sha256), newest intact, repair of best_model_checkpoint,
damaged checkpoints skipped or refused, real SIGKILL resume."""

from __future__ import annotations

import hashlib
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
        "per_device_train_batch_size": 4, "gradient_accumulation_steps": 2, "save_total_limit": None,
        "warmup_steps": 0}


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
    assert body["step"] == 3 and body["version"] == 2
    assert body["files"]["adapter_model.safetensors"] == {"size": 10, "sha256": hashlib.sha256(b"x" * 10).hexdigest()}
    (d / "adapter_model.safetensors").write_bytes(b"x" * 4)  # truncated after the marker
    assert "4 bytes" in ck.incomplete_reason(d)


def _damage(path: Path) -> bytes:
    """Overwrite the first bytes in place: same size, different content (what a size-only marker misses)."""
    before = path.read_bytes()
    with open(path, "r+b") as fh:
        fh.write(bytes(b ^ 0xFF for b in before[:4]))
    assert path.stat().st_size == len(before)
    return before


def test_same_size_corruption_is_caught_by_the_hash(tmp_path):
    d = _fake_ckpt(tmp_path, 5)
    _damage(d / "adapter_model.safetensors")
    why = ck.incomplete_reason(d)
    assert "adapter_model.safetensors" in why and "sha256" in why
    assert ck.problem(d)[0] == d / "adapter_model.safetensors"
    assert ck.incomplete_reason(d, verify_hashes=False) is None  # sizes alone cannot see it


def test_old_markers_with_sizes_only_are_still_read(tmp_path):
    d = _fake_ckpt(tmp_path, 7, complete=False)
    (d / ck.MARKER).write_text(json.dumps({"step": 7, "files": {"adapter_model.safetensors": 10,
                                                                 "trainer_state.json": (d / "trainer_state.json").stat().st_size}}))
    assert ck.is_complete(d)
    assert ck.resolve_resume("auto", tmp_path) == d
    (d / "adapter_model.safetensors").write_bytes(b"x" * 3)
    assert "3 bytes" in ck.incomplete_reason(d)
    (d / ck.MARKER).write_text(json.dumps({"files": {"adapter_model.safetensors": "ten"}}))
    assert "damaged" in ck.incomplete_reason(d)


def test_auto_skips_a_damaged_checkpoint_and_resumes_from_the_newest_intact(tmp_path, capsys):
    _fake_ckpt(tmp_path, 4)
    good = _fake_ckpt(tmp_path, 8)
    bad = _fake_ckpt(tmp_path, 12)
    _damage(bad / "adapter_model.safetensors")
    snapshot = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert ck.resolve_resume("auto", tmp_path) == good
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "checkpoint-12" in warnings[0] and "sha256" in warnings[0]
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == snapshot  # nothing touched
    removed = ck.drop_stale_after(tmp_path, 8)  # what a resume from checkpoint-8 does next: redo step 12
    assert removed == [bad] and not bad.exists() and good.exists()
    assert "checkpoint-12" in capsys.readouterr().err


def test_explicit_damaged_checkpoint_is_a_clean_error_naming_the_file(tmp_path):
    _fake_ckpt(tmp_path, 4)
    bad = _fake_ckpt(tmp_path, 8)
    _damage(bad / "trainer_state.json")
    snapshot = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(LabkitError) as exc:
        ck.resolve_resume(str(bad), tmp_path)
    msg = str(exc.value)
    assert str(bad / "trainer_state.json") in msg and "sha256" in msg and "checkpoint-4" in msg
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == snapshot


def test_hashes_are_streamed_in_chunks(tmp_path, monkeypatch):
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * 40_000)  # ~10 MB: more than one chunk
    monkeypatch.setattr(ck, "_CHUNK", 1 << 20)
    reads = []
    real_open = open

    class Spy:
        def __init__(self, fh):
            self.fh = fh

        def read(self, n=-1):
            reads.append(n)
            return self.fh.read(n)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.fh.close()

    monkeypatch.setattr("builtins.open", lambda p, mode="r", *a, **k: Spy(real_open(p, mode, *a, **k)))
    digest = ck.sha256_file(big)
    monkeypatch.undo()
    assert digest == hashlib.sha256(big.read_bytes()).hexdigest()
    assert reads and max(reads) == 1 << 20 and len(reads) >= 10  # never the whole file at once


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


def test_disk_full_while_saving_a_checkpoint_is_a_clean_error(tmp_path, monkeypatch):
    """ENOSPC in the middle of a checkpoint save: one LabkitError naming the folder, and the half-written folder has
    no completion marker, so `auto` never resumes from it."""
    import errno

    from transformers import Trainer

    from labkit.data.tokenize import tokenize_examples
    from labkit.models import load_model, load_tokenizer
    from labkit.models.tiny import tiny_model_path
    from labkit.train.config import TrainConfig
    from labkit.train.sft import run_training

    def full_disk(self, model, trial):
        folder = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "adapter_model.safetensors").write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Trainer, "_save_checkpoint", full_disk)
    path = tiny_model_path("llama")
    model, tok = load_model(path), load_tokenizer(path)
    examples = [{"messages": [{"role": "user", "content": f"数 {i}"}, {"role": "assistant", "content": str(i)}]}
                for i in range(8)]
    ds, _ = tokenize_examples(examples, tok, "labkit/roles", 64)
    out = tmp_path / "out"
    cfg = TrainConfig(output_dir=str(out), max_steps=2, save_steps=1, per_device_train_batch_size=2, packing=False,
                      template="labkit/roles", plot_loss=False, disable_tqdm=True, logging_steps=1)
    from labkit.data.packing import PaddingCollator

    with pytest.raises(LabkitError) as err:
        run_training(cfg, model=model, tokenizer=tok, train_dataset=ds, data_collator=PaddingCollator(tok))
    assert "checkpoint-1: could not save the checkpoint (No space left on device)" in str(err.value)
    assert "last complete checkpoint: none" in str(err.value)
    assert not (out / "checkpoint-1" / ck.MARKER).exists() and ck.latest_complete(out, quiet=True) is None

"""labkit.train.sft + callbacks: outputs of a run, guards, and 2-process (torchrun / accelerate) parity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from labkit.errors import LabkitError
from labkit.train import checkpoints as ck
from labkit.train.callbacks import NonFiniteLossError, adapter_change, trainable_snapshot
from labkit.train.config import TrainConfig
from labkit.train.sft import run_training, split_examples

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_worker as tw  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _cfg(tmp_path, **over) -> TrainConfig:
    base = {"output_dir": str(tmp_path / "out"), "max_steps": 16, "save_steps": 8, "logging_steps": 2,
            "learning_rate": 3e-3, "lora_target": "q_proj,k_proj,v_proj,o_proj", "packing": False,
            "disable_tqdm": True, "per_device_train_batch_size": 4, "warmup_steps": 0, "lora_r": 8, "lora_alpha": 16,
            "save_total_limit": None}
    return TrainConfig.from_dict({**base, **over})


def _train(cfg, n_train=64):
    train, ev = tw.datasets(n_train)
    return run_training(cfg, model=tw.tiny_llama(), train_dataset=train,
                        eval_dataset=ev if cfg.eval_strategy != "no" else None, data_collator=tw.pad_collator)


def test_run_writes_adapter_state_plot_metrics_and_learns(tmp_path):
    cfg = _cfg(tmp_path, max_steps=32, learning_rate=2e-2, lora_r=16, eval_strategy="steps", eval_steps=16, save_steps=16, val_set_size=16,
               lr_scheduler_type="linear", warmup_steps=2)
    res = _train(cfg)
    out = res.output_dir
    for name in ("adapter_model.safetensors", "adapter_config.json", "trainer_state.json", "training_loss.png",
                 "train_metrics.json", "labkit_train.json"):
        assert (out / name).is_file(), name
    assert (out / "training_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    m = json.loads((out / "train_metrics.json").read_text())
    assert m["global_step"] == 32 and m["adapter_change"]["changed"]
    assert m["final_train_loss"] < m["first_train_loss"] - 0.03  # it moves (real learning: notebooks 02/03)
    logs = [r for r in res.log_history if "loss" in r]
    assert all("grad_norm" in r and "learning_rate" in r and r["train_tokens_per_s"] > 0 for r in logs)
    # trained tokens = label-bearing tokens only (answer + EOS), counted over every step
    rows = tw.reversal_rows(64 + 16)[:64]
    per_epoch = sum(sum(1 for x in r["labels"][1:] if x != -100) for r in rows)
    assert m["trained_tokens"] == per_epoch * 2  # 32 steps x 4 = 2 epochs
    assert "eval_loss" in m and TrainConfig.load(out / "labkit_train.json") == cfg
    plan = json.loads((out / "labkit_train.json").read_text())["plan"]
    assert (plan["train_samples"], plan["eval_samples"], plan["samples_per_step"]) == (64, 16, 4)
    assert (plan["steps_per_epoch"], plan["planned_steps"], plan["warmup_steps"]) == (16, 32, 2)
    assert plan["arch"] == "llama" and sorted(plan["lora_targets"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert m["planned_steps"] == m["global_step"] == 32


def test_non_finite_loss_stops_naming_the_step_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_FAULT", "nan:10")
    cfg = _cfg(tmp_path, save_steps=4)
    with pytest.raises(NonFiniteLossError, match=r"step 11.*checkpoint-8"):
        _train(cfg)
    good = load_file(str(tmp_path / "out" / "checkpoint-8" / "adapter_model.safetensors"))
    assert all(torch.isfinite(t).all() for t in good.values())
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()  # no final adapter from a broken run


def test_adapter_unchanged_is_reported():
    model = torch.nn.Linear(3, 3)
    snap = trainable_snapshot(model)
    assert not adapter_change(model, snap)["changed"]
    with torch.no_grad():
        model.weight[0, 0] += 1
    rep = adapter_change(model, snap)
    assert rep["changed"] and rep["max_abs_delta"] == pytest.approx(1.0) and rep["unchanged"] == 1


def test_gradient_checkpointing_and_group_by_length_same_result(tmp_path):
    a = _train(_cfg(tmp_path / "a", max_steps=6, lora_dropout=0.0, save_strategy="no"))
    b = _train(_cfg(tmp_path / "b", max_steps=6, lora_dropout=0.0, save_strategy="no", gradient_checkpointing=True))
    wa, wb = (load_file(str(r.output_dir / "adapter_model.safetensors")) for r in (a, b))
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-6
    c = _train(_cfg(tmp_path / "c", max_steps=4, save_strategy="no", group_by_length=True))
    assert c.metrics["global_step"] == 4


def test_reporters_tensorboard_and_offline_wandb(tmp_path, monkeypatch, capsys):
    import importlib.util

    from labkit.train.sft import reporters

    for name in ("WANDB_MODE", "WANDB_PROJECT", "WANDB_DIR"):
        monkeypatch.delenv(name, raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "wandb" else real(n, *a))
    cfg = TrainConfig(report_to="tensorboard,wandb", wandb_project="seed")
    assert reporters(cfg, tmp_path) == ["tensorboard"]  # never fails: a notice says wandb is not installed
    assert "wandb is not installed" in capsys.readouterr().err and "WANDB_MODE" not in os.environ
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: object() if n == "wandb" else real(n, *a))
    monkeypatch.setenv("WANDB_MODE", "online")
    assert reporters(cfg, tmp_path) == ["tensorboard", "wandb"]
    assert os.environ["WANDB_MODE"] == "offline" and os.environ["WANDB_PROJECT"] == "seed"  # never online
    assert os.environ["WANDB_DIR"] == str(tmp_path) and "offline run" in capsys.readouterr().err


def test_split_examples_deterministic():
    ex = list(range(100))
    tr, va = split_examples(ex, 0.1, seed=3)
    assert len(va) == 10 and sorted(tr + va) == ex and split_examples(ex, 0.1, seed=3) == (tr, va)
    assert len(split_examples(ex, 7, seed=3)[1]) == 7 and split_examples(ex, 0, 3) == (ex, [])
    assert len(split_examples(ex[:55], 0.01, seed=3)[1]) == 1  # ceil(0.55), as train_test_split(test_size=0.01)
    assert len(split_examples(list(range(1940)), 0.01, seed=3)[1]) == 20  # ceil(19.4)
    with pytest.raises(LabkitError, match="leave none of 10 to train; lower it"):
        split_examples(list(range(10)), 10, seed=3)


def _launch(cmd: list[str], out: Path, bs: int) -> subprocess.CompletedProcess:
    spec = {"output_dir": str(out), "max_steps": 12, "save_steps": 6, "logging_steps": 4, "learning_rate": 3e-3,
            "lora_dropout": 0.0, "per_device_train_batch_size": bs, "gradient_accumulation_steps": 2}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*cmd, str(ROOT / "tests" / "train_worker.py"), json.dumps(spec)], env=env,
                          capture_output=True, text=True, timeout=240, cwd=ROOT)


@pytest.mark.slow
def test_two_processes_match_one_process_with_same_global_batch(tmp_path):
    """torchrun and accelerate launch, 2 ranks x batch 4 vs 1 process x batch 8: LoRA weights agree to 1e-6."""
    single = _launch([sys.executable], tmp_path / "one", 8)
    assert single.returncode == 0, single.stderr[-3000:]
    ref = load_file(str(tmp_path / "one" / "adapter_model.safetensors"))
    runs = {"torchrun": [str(BIN / "torchrun"), "--nproc_per_node", "2"],
            "accelerate": [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
                           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]}
    for name, cmd in runs.items():
        p = _launch(cmd, tmp_path / name, 4)
        assert p.returncode == 0, (name, p.stderr[-3000:])
        assert p.stdout.count("RESULT") == 1  # rank 0 only
        marker = json.loads((tmp_path / name / "checkpoint-6" / ck.MARKER).read_text())
        assert marker["world_size"] == 2 and "rng_state_1.pth" in marker["files"]  # written after every rank saved
        got = load_file(str(tmp_path / name / "adapter_model.safetensors"))
        diff = max(float((ref[k] - got[k]).abs().max()) for k in ref)
        scale = max(float(ref[k].abs().max()) for k in ref if "lora_B" in k)
        assert scale > 1e-3 and diff < 1e-6, (name, diff, scale)  # measured ~4.5e-8 vs |B| ~2e-2

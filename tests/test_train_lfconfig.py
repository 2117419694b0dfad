"""labkit.train.lfconfig: LLaMA-Factory SFT + LoRA YAML (its example, paths changed): mapping, refusals, training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from labkit.errors import LabkitError
from labkit.train.flags import parse_train_args
from labkit.train.lfconfig import lf_values, overrides, read_yaml

EXAMPLE = Path(__file__).parent / "fixtures" / "llamafactory" / "llama3_lora_sft.yaml"


def parse(argv):
    return parse_train_args([str(a) for a in argv], on_gpu=False, world_size=1)


def _write(tmp_path: Path, name: str = "cfg.yaml", **changes) -> Path:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def _datasets(folder: Path, sizes=(("identity", 6), ("alpaca_en_demo", 9))) -> Path:
    """A dataset_dir holding the datasets the example names (small alpaca files)."""
    folder.mkdir(parents=True, exist_ok=True)
    info = {}
    for name, n in sizes:
        rows = [{"instruction": f"{name} question {i}?", "input": "" if i % 2 else f"context {i}",
                 "output": f"answer {i} of {name}."} for i in range(n)]
        (folder / f"{name}.json").write_text(json.dumps(rows), encoding="utf-8")
        info[name] = {"file_name": f"{name}.json"}
    (folder / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    return folder


def test_example_yaml_maps_to_llamafactory_semantics():
    cfg, notices = parse([EXAMPLE])
    assert cfg.dialect == "llamafactory" and cfg.template == "llamafactory/llama3"
    assert cfg.base_model == "meta-llama/Meta-Llama-3-8B-Instruct" and cfg.datasets == "identity,alpaca_en_demo"
    assert (cfg.cutoff_len, cfg.max_samples, cfg.dataset_dir) == (2048, 1000, "data")
    assert (cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target) == (8, 16, 0.0, "all")
    assert (cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps) == (1, 8)
    assert (cfg.learning_rate, cfg.num_epochs, cfg.lr_scheduler_type, cfg.warmup_ratio) == (1e-4, 3.0, "cosine", 0.1)
    assert (cfg.logging_steps, cfg.save_steps, cfg.plot_loss, cfg.overwrite_output_dir) == (10, 500, True, True)
    assert cfg.precision == "bf16" and cfg.report_to == "none" and cfg.dataloader_num_workers == 4
    assert cfg.output_dir == "saves/llama3-8b/lora/sft" and not cfg.train_on_inputs
    assert any("trust_remote_code: true accepted and not honoured" in n for n in notices)
    assert any("overwrite_cache" in n and "ddp_timeout" in n for n in notices)


def test_overrides_after_the_config(tmp_path):
    cfg, _ = parse([EXAMPLE, "max_steps=3", "--learning_rate", "2e-4", "--report_to=tensorboard"])
    assert (cfg.max_steps, cfg.learning_rate, cfg.report_to) == (3, 2e-4, "tensorboard")
    assert overrides(["--plot_loss"], "x") == {"plot_loss": "true"}
    with pytest.raises(LabkitError, match="max_steps given twice"):
        overrides(["max_steps=1", "--max_steps", "2"], "x")


@pytest.mark.parametrize("changes, message", [
    ({"stage": "dpo"}, r"stage: dpo: not supported; .*\(stage: sft\)"),
    ({"stage": "pt"}, r"stage: pt: not supported"),
    ({"finetuning_type": "full"}, r"finetuning_type: full: not supported; .*finetuning_type: lora"),
    ({"finetuning_type": "freeze"}, r"finetuning_type: freeze: not supported"),
    ({"image_max_pixels": 262144}, r"image_max_pixels: multimodal training is not supported"),
    ({"freeze_vision_tower": True}, r"freeze_vision_tower: multimodal"),
    ({"learning_rte": 1e-4}, r"unknown key 'learning_rte' \(did you mean 'learning_rate'\?\)"),
    ({"report_to": "mlflow"}, r"report_to: mlflow: not supported; use none, tensorboard, wandb"),
    ({"template": None}, r"template: missing; .*template: llama3"),
    ({"dataset": None}, r"dataset: missing"),
    ({"model_name_or_path": None}, r"model_name_or_path: missing"),
    ({"do_train": False}, r"do_train: false: nothing to do"),
    ({"lora_rank": "eight"}, r"lora_rank: expected int, got 'eight'"),
    ({"eval_strategy": "steps"}, r"eval_strategy: steps needs held-out data; set val_size"),
    ({"deepspeed": "ds_z3_config.json"}, r"deepspeed: not supported"),
    ({"template": "llama33"}, r"template 'llama33'"),
])
def test_unsupported_and_wrong_values_are_refused(tmp_path, changes, message):
    path = _write(tmp_path, **changes)
    with pytest.raises(LabkitError, match=message) as err:
        parse([path])
    assert str(err.value).startswith(str(path))  # every message names the file


def test_eval_keys_with_val_size(tmp_path):
    cfg, _ = parse([_write(tmp_path, val_size=0.1, per_device_eval_batch_size=1, eval_strategy="steps",
                           eval_steps=500)])
    got = (cfg.val_set_size, cfg.per_device_eval_batch_size, cfg.eval_strategy, cfg.eval_steps)
    assert got == (0.1, 1, "steps", 500)


def test_unusable_files(tmp_path):
    with pytest.raises(LabkitError, match="no such file"):
        read_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage: sft\n  lora_rank: [8\n", encoding="utf-8")
    with pytest.raises(LabkitError, match=r"bad.yaml: invalid YAML at line \d+"):
        read_yaml(bad)
    bad.write_text("- stage\n- sft\n", encoding="utf-8")
    with pytest.raises(LabkitError, match="expected a mapping"):
        read_yaml(bad)


def test_defaults_are_llamafactorys():
    values, _ = lf_values({"model_name_or_path": "m", "dataset": "d", "template": "alpaca"}, "x")
    assert (values["learning_rate"], values["num_epochs"], values["lr_scheduler_type"]) == (5e-5, 3.0, "linear")
    assert (values["per_device_train_batch_size"], values["lora_alpha"], values["lora_target"]) == (8, 16, "all")
    assert (values["cutoff_len"], values["val_set_size"], values["train_on_inputs"]) == (2048, 0, False)


def test_max_samples_is_per_dataset_for_llamafactory(tmp_path):
    from labkit.train.config import TrainConfig
    from labkit.train.sft import load_examples

    folder = _datasets(tmp_path / "data")
    lf = TrainConfig(dialect="llamafactory", datasets="identity,alpaca_en_demo", dataset_dir=str(folder),
                     max_samples=4)
    examples, _ = load_examples(lf)
    assert len(examples) == 8  # the first 4 of each, as LLaMA-Factory's max_samples
    assert [e["messages"][0]["content"].split()[0] for e in examples] == ["identity"] * 4 + ["alpaca_en_demo"] * 4
    mix = TrainConfig(dialect="labkit", datasets="identity,alpaca_en_demo", dataset_dir=str(folder), max_samples=4)
    assert len(load_examples(mix)[0]) == 4  # labkit: of the whole mix


def test_lora_target_all_is_every_linear_but_lm_head():
    from labkit.models import load_model
    from labkit.models.lora import is_all, resolve_targets
    from labkit.models.tiny import tiny_model_path

    assert is_all("all") and is_all(" ALL ") and not is_all("q_proj,all_proj")
    baichuan = resolve_targets(load_model(tiny_model_path("baichuan")), "all")
    assert sorted(baichuan) == ["W_pack", "down_proj", "gate_proj", "o_proj", "up_proj"]
    llama = resolve_targets(load_model(tiny_model_path("llama")), "all")
    assert sorted(llama) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    assert resolve_targets(None, "[q_proj,v_proj]") == ["q_proj", "v_proj"]


@pytest.mark.slow
def test_example_yaml_paths_changed_trains_tiny_baichuan(tmp_path, capsys):
    from labkit.cli import main

    folder = _datasets(tmp_path / "data")
    out = tmp_path / "saves" / "sft"
    path = _write(tmp_path, model_name_or_path="tiny-baichuan", dataset_dir=str(folder), output_dir=str(out),
                  dataloader_num_workers=0, cutoff_len=256)
    assert main(["train", str(path), "max_steps=2", "logging_steps=1"]) == 0
    err = capsys.readouterr().err
    assert "trust_remote_code: true accepted and not honoured" in err and "template llamafactory/llama3" in err
    saved = json.loads((out / "labkit_train.json").read_text(encoding="utf-8"))
    plan = saved["plan"]
    assert saved["arch"] == "baichuan" and plan["arch"] == "baichuan" and plan["template"] == "llamafactory/llama3"
    assert sorted(plan["lora_targets"]) == ["W_pack", "down_proj", "gate_proj", "o_proj", "up_proj"]
    assert (plan["train_samples"], plan["samples_per_step"], plan["planned_steps"]) == (15, 8, 2)
    assert plan["dialect"] == "llamafactory" and plan["lr_scheduler_type"] == "cosine"
    metrics = json.loads((out / "train_metrics.json").read_text(encoding="utf-8"))
    assert metrics["global_step"] == 2 and metrics["adapter_check"]["trained"]
    adapter = json.loads((out / "adapter_config.json").read_text(encoding="utf-8"))
    assert sorted(adapter["target_modules"]) == ["W_pack", "down_proj", "gate_proj", "o_proj", "up_proj"]

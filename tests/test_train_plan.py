"""labkit.train.plan: steps counted in samples as the HF Trainer does, each tool's warmup and schedule, the lines."""

from __future__ import annotations

import json
import shlex
import shutil

import pytest

from labkit.errors import LabkitError
from labkit.paths import data_dir
from labkit.train.config import TrainConfig
from labkit.train.flags import parse_train_args
from labkit.train.plan import make_plan, read_plan, steps_per_epoch, truncation_rule, warmup_of

# the seed's alpaca-lora command (paths changed) and its Baichuan LLaMA-Efficient-Tuning command
ALPACA = ("--base_model tiny-llama --data_path {data} --output_dir {out} --num_epochs 2 --cutoff_len 1024 "
          "--val_set_size 0 --lora-target-modules '[q_proj,v_proj,k_proj,o_proj]'")
LET = ("--model_name_or_path tiny-baichuan --do_train --dataset alpaca4zh --dataset_dir {data} "
       "--finetuning_type lora --lora_rank 8 --lora_target W_pack --output_dir {out} "
       "--per_device_train_batch_size 4 --per_device_eval_batch_size 4 --gradient_accumulation_steps 8 "
       "--lr_scheduler_type cosine --logging_steps 10 --save_steps 100 --eval_steps 100 --learning_rate 5e-5 "
       "--max_grad_norm 0.5 --num_train_epochs 3.0 --dev_ratio 0.01 --evaluation_strategy steps "
       "--load_best_model_at_end --plot_loss --fp16")
# alpaca-lora README command lines (its data_path is a hub dataset; 51,760 records in yahma/alpaca-cleaned)
README_2 = ("--base_model 'decapoda-research/llama-7b-hf' --data_path 'yahma/alpaca-cleaned' --output_dir "
            "'./lora-alpaca' --batch_size 128 --micro_batch_size 4 --num_epochs 3 --learning_rate 1e-4 "
            "--cutoff_len 512 --val_set_size 2000 --lora_r 8 --lora_alpha 16 --lora_dropout 0.05 "
            "--lora_target_modules '[q_proj,v_proj]' --train_on_inputs --group_by_length")
README_3 = ("--base_model='decapoda-research/llama-7b-hf' --num_epochs=10 --cutoff_len=512 --group_by_length "
            "--output_dir='./lora-alpaca' --lora_target_modules='[q_proj,k_proj,v_proj,o_proj]' --lora_r=16 "
            "--micro_batch_size=8")


def _parse(cmd: str, world: int = 1) -> TrainConfig:
    return parse_train_args(shlex.split(cmd), on_gpu=False, world_size=world)[0]


def test_steps_per_epoch_counts_samples_like_the_trainer():
    assert steps_per_epoch(1058, 4, 32) == (265, 9)  # 265 micro-batches, the last step takes the 9 left over
    assert steps_per_epoch(1058, 4, 16, world=2) == (133, 9)  # each rank: ceil(1058 / 2) = 529 samples
    assert steps_per_epoch(7, 8, 4) == (1, 1)  # never 0 steps
    assert steps_per_epoch(1090, 1, 8) == (1090, 137)


def test_seed_alpaca_command_plans_18_steps_with_alpaca_lora_warmup(tmp_path):
    cfg = _parse(ALPACA.format(data="x.json", out=tmp_path / "o"))
    plan = make_plan(cfg, 1058, world=1)
    assert (plan.micro_batch_size, plan.gradient_accumulation_steps, plan.samples_per_step) == (4, 32, 128)
    assert (plan.steps_per_epoch, plan.planned_steps) == (9, 18)
    assert (plan.warmup_steps, plan.lr_scheduler_type, plan.learning_rate) == (100, "linear", 3e-4)
    assert plan.template == "alpaca-lora/alpaca" and plan.dialect == "alpaca-lora" and plan.train_on_inputs
    assert "cutoff_len 1024" in plan.truncation and "alpaca-lora" in plan.truncation
    lines = plan.lines()
    assert any("18 steps" in line and "warmup 100" in line for line in lines)
    assert any("never reaches" in line for line in lines)  # 100 warmup steps > 18: said, not hidden
    # two processes: accumulation 128 // 4 // 2 = 16, same 128 samples per step, same 18 steps
    two = make_plan(_parse(ALPACA.format(data="x.json", out=tmp_path / "o"), world=2), 1058, world=2)
    assert (two.gradient_accumulation_steps, two.samples_per_step, two.planned_steps) == (16, 128, 18)


def test_alpaca_lora_readme_commands():
    cfg = _parse(README_2)
    assert cfg.train_on_inputs and cfg.group_by_length and cfg.val_set_size == 2000 and cfg.cutoff_len == 512
    plan = make_plan(cfg, 51760 - 2000, 2000, world=1)
    assert (plan.samples_per_step, plan.steps_per_epoch, plan.planned_steps, plan.warmup_steps) == (128, 389, 1167, 100)
    assert cfg.eval_strategy == "steps" and cfg.eval_steps == 200 and cfg.load_best_model_at_end
    with pytest.raises(LabkitError, match=r"--data_path: not given; alpaca-lora's default is the hub dataset "
                                          r"yahma/alpaca-cleaned"):
        _parse(README_3)
    cfg = _parse(README_3 + " --data_path d.json")
    plan = make_plan(cfg, 51760 - 2000, 2000, world=1)
    assert (plan.micro_batch_size, plan.gradient_accumulation_steps, plan.steps_per_epoch) == (8, 16, 389)
    assert plan.planned_steps == 3890 and cfg.lora_r == 16 and cfg.lora_target == "q_proj,k_proj,v_proj,o_proj"


def test_seed_let_command_plan_numbers(tmp_path):
    cfg = _parse(LET.format(data=tmp_path, out=tmp_path / "o"))
    assert cfg.template == "let/default" and cfg.dialect == "let"  # LET's --prompt_template default
    assert (cfg.max_source_length, cfg.max_target_length, cfg.cutoff_len) == (512, 512, 1024)
    plan = make_plan(cfg, 1920, 20, world=1)
    assert (plan.samples_per_step, plan.steps_per_epoch, plan.planned_steps) == (32, 60, 180)
    assert (plan.warmup_steps, plan.lr_scheduler_type) == (0, "cosine")
    assert "max_source_length 512" in plan.truncation and "max_target_length 512" in plan.truncation


def test_warmup_ratio_and_max_steps():
    cfg = TrainConfig(warmup_ratio=0.1, warmup_steps=0, per_device_train_batch_size=1, gradient_accumulation_steps=8, num_epochs=3)
    plan = make_plan(cfg, 1090, world=1)
    assert (plan.planned_steps, plan.warmup_steps) == (411, 42)  # ceil(411 * 0.1), as get_warmup_steps
    assert warmup_of(TrainConfig(warmup_steps=5, warmup_ratio=0.5), 100) == 5  # steps win over a ratio
    capped = make_plan(TrainConfig(max_steps=7, num_epochs=3), 1000, world=1)
    assert capped.planned_steps == 7 and capped.max_steps == 7
    with pytest.raises(LabkitError, match="no sample left"):
        make_plan(cfg, 0, world=1)


def test_truncation_rule_follows_the_source():
    assert "LLaMA-Factory" in truncation_rule(TrainConfig(cutoff_len=2048), "llamafactory")
    assert "dropped" in truncation_rule(TrainConfig(), "labkit")


def test_plan_from_real_data_without_loading_the_model(tmp_path, monkeypatch):
    """The seed alpaca command on the bundled 1058-record file: template, arch and 18 steps, model never loaded."""
    import labkit.models

    def no_model(*a, **k):
        raise AssertionError("the model must not load to plan a run")

    monkeypatch.setattr(labkit.models, "load_model", no_model)
    from labkit.train.sft import prepare_run

    cfg = _parse(ALPACA.format(data=data_dir() / "alpaca_1058_100negative.json", out=tmp_path / "o"))
    prep = prepare_run(cfg)
    assert prep.plan.train_samples == 1058 and prep.plan.planned_steps == 18 and prep.plan.arch == "llama"
    assert prep.plan.template == "alpaca-lora/alpaca" and cfg.template == "alpaca-lora/alpaca"
    assert not (tmp_path / "o").exists()


def test_plan_of_baichuan_let_command_records_baichuan(tmp_path):
    from labkit.train.sft import prepare_run

    shutil.copy(data_dir() / "tasks.json", tmp_path / "alpaca4zh.json")
    (tmp_path / "dataset_info.json").write_text(json.dumps({"alpaca4zh": {"file_name": "alpaca4zh.json"}}))
    cfg = _parse(LET.format(data=tmp_path, out=tmp_path / "o"))
    prep = prepare_run(cfg)
    n = prep.summary["examples"]
    n_val = -(-n // 100)  # ceil(1% of n), as train_test_split(test_size=0.01)
    assert prep.plan.arch == "baichuan" and cfg.arch == "baichuan" and prep.plan.template == "let/default"
    assert (prep.plan.train_samples, prep.plan.eval_samples) == (n - n_val, n_val)
    assert prep.plan.planned_steps == 3 * steps_per_epoch(n - n_val, 4, 8)[1]


def test_read_plan(tmp_path):
    cfg = TrainConfig()
    cfg.save(tmp_path / "labkit_train.json", plan=make_plan(cfg, 10, world=1).to_dict())
    assert read_plan(tmp_path)["train_samples"] == 10 and TrainConfig.load(tmp_path / "labkit_train.json") == cfg
    assert read_plan(tmp_path / "nothing") == {}

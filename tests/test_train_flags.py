"""labkit.train.flags: the seed command lines map verbatim; unknown flags name the closest; CPU notices."""

from __future__ import annotations

import shlex

import pytest

from labkit.errors import LabkitError
from labkit.train.flags import parse_train_args

ALPACA = ("--base_model ./linly-Ch-7b --data_path ./alpaca_1058_100negative.json --output_dir "
          "./fintune-Linly-7b-revise1058 --num_epochs 2 --cutoff_len 1024 --val_set_size 0 --lora-target-modules "
          "'[q_proj,v_proj,k_proj,o_proj]'")
LET = ("--model_name_or_path /root/baichuan/baichuan-7B/baichuan-7B --do_train --dataset alpaca4zh "
       "--finetuning_type lora --lora_rank 8 --lora_target W_pack --output_dir alpaca_baichuan "
       "--per_device_train_batch_size 4 --per_device_eval_batch_size 4 --gradient_accumulation_steps 8 "
       "--lr_scheduler_type cosine --logging_steps 10 --save_steps 100 --eval_steps 100 --learning_rate 5e-5 "
       "--max_grad_norm 0.5 --num_train_epochs 3.0 --dev_ratio 0.01 --evaluation_strategy steps "
       "--load_best_model_at_end --plot_loss --fp16")


def test_alpaca_lora_command_verbatim_on_cpu():
    cfg, notices = parse_train_args(shlex.split(ALPACA), on_gpu=False, world_size=1)
    assert cfg.base_model == "./linly-Ch-7b" and cfg.data_path == "./alpaca_1058_100negative.json"
    assert cfg.output_dir == "./fintune-Linly-7b-revise1058" and cfg.num_epochs == 2 and cfg.cutoff_len == 1024
    assert cfg.lora_target == "q_proj,v_proj,k_proj,o_proj"
    assert cfg.val_set_size == 0 and cfg.eval_strategy == "no" and not cfg.load_best_model_at_end
    # alpaca-lora's own defaults for what the command leaves out
    assert (cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps) == (4, 32)
    assert cfg.learning_rate == 3e-4 and cfg.lora_r == 8 and cfg.lora_alpha == 16 and cfg.train_on_inputs
    assert cfg.warmup_steps == 100 and cfg.save_total_limit == 3 and cfg.template == "alpaca"
    assert cfg.precision == "fp32" and any("8-bit" in n for n in notices)  # no GPU: one-line notice


def test_alpaca_lora_on_gpu_loads_8bit_and_splits_batch_over_ranks():
    cfg, _ = parse_train_args(shlex.split(ALPACA) + ["--max_steps", "5"], on_gpu=True, world_size=2)
    assert cfg.precision == "int8" and cfg.gradient_accumulation_steps == 16 and cfg.max_steps == 5


def test_llama_efficient_tuning_command_verbatim():
    cfg, notices = parse_train_args(shlex.split(LET) + ["--max_steps", "20"], on_gpu=False, world_size=1)
    assert cfg.base_model.endswith("baichuan-7B") and cfg.datasets == "alpaca4zh" and cfg.dataset_dir == ""
    assert cfg.lora_r == 8 and cfg.lora_target == "W_pack" and cfg.lora_alpha == 32 and cfg.lora_dropout == 0.1
    assert (cfg.per_device_train_batch_size, cfg.per_device_eval_batch_size, cfg.gradient_accumulation_steps) == (4, 4, 8)
    assert cfg.lr_scheduler_type == "cosine" and cfg.learning_rate == 5e-5 and cfg.max_grad_norm == 0.5
    assert cfg.num_epochs == 3.0 and cfg.val_set_size == 0.01 and cfg.eval_strategy == "steps"
    assert cfg.eval_steps == 100 and cfg.save_steps == 100 and cfg.logging_steps == 10
    assert cfg.load_best_model_at_end and cfg.plot_loss and cfg.max_steps == 20
    assert cfg.precision == "fp32" and sum("fp16" in n for n in notices) == 1
    gpu, _ = parse_train_args(shlex.split(LET), on_gpu=True, world_size=1)
    assert gpu.precision == "fp16"
    q, _ = parse_train_args(shlex.split(LET) + ["--quantization_bit", "4"], on_gpu=True, world_size=1)
    assert q.precision == "nf4"


def test_dataset_dir_and_spellings():
    cfg, _ = parse_train_args(["--model_name_or_path", "m", "--dataset", "a,b", "--dataset_dir", "mydata",
                               "--lora_target", "'[q_proj, v_proj]'", "--load_best_model_at_end=false",
                               "--per-device-train-batch-size=2", "--prompt_template", "default"],
                              on_gpu=False, world_size=1)
    assert cfg.dataset_dir == "mydata" and cfg.datasets == "a,b" and cfg.lora_target == "q_proj,v_proj"
    assert cfg.per_device_train_batch_size == 2 and cfg.template == "chat" and not cfg.load_best_model_at_end


@pytest.mark.parametrize("argv, hint", [
    (["--base_model", "m", "--num_epoch", "2"], "num_epochs"),
    (["--model_name_or_path", "m", "--lora_rnk", "8"], "lora_rank"),
    (["--learnig_rate", "1e-4"], "learning_rate"),
])
def test_unknown_flag_names_the_closest(argv, hint):
    with pytest.raises(LabkitError, match=f"did you mean --{hint}\\?"):
        parse_train_args(argv, on_gpu=False, world_size=1)


def test_bad_values_fail_clearly():
    with pytest.raises(LabkitError, match="finetuning_type"):
        parse_train_args(["--model_name_or_path", "m", "--finetuning_type", "full"], on_gpu=False, world_size=1)
    with pytest.raises(LabkitError, match="cutoff_len.*number"):
        parse_train_args(["--cutoff_len", "big"], on_gpu=False, world_size=1)
    with pytest.raises(LabkitError, match="needs a value"):
        parse_train_args(["--output_dir"], on_gpu=False, world_size=1)
    with pytest.raises(LabkitError, match="lr_scheduler_type"):
        parse_train_args(["--lr_scheduler_type", "cosin"], on_gpu=False, world_size=1)

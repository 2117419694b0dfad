"""labkit.train.flags: dialect of a pasted command line, each tool's defaults, qualified templates, clear refusals."""

from __future__ import annotations

import shlex

import pytest

from labkit.data.templates import template_names
from labkit.errors import LabkitError
from labkit.train.flags import detect_dialect, parse_train_args

ALPACA = ("--base_model ./linly-Ch-7b --data_path ./alpaca_1058_100negative.json --output_dir "
          "./fintune-Linly-7b-revise1058 --num_epochs 2 --cutoff_len 1024 --val_set_size 0 --lora-target-modules "
          "'[q_proj,v_proj,k_proj,o_proj]'")
LET = ("--model_name_or_path /root/baichuan/baichuan-7B/baichuan-7B --do_train --dataset alpaca4zh "
       "--finetuning_type lora --lora_rank 8 --lora_target W_pack --output_dir alpaca_baichuan "
       "--per_device_train_batch_size 4 --per_device_eval_batch_size 4 --gradient_accumulation_steps 8 "
       "--lr_scheduler_type cosine --logging_steps 10 --save_steps 100 --eval_steps 100 --learning_rate 5e-5 "
       "--max_grad_norm 0.5 --num_train_epochs 3.0 --dev_ratio 0.01 --evaluation_strategy steps "
       "--load_best_model_at_end --plot_loss --fp16")


def parse(argv, **kw):
    return parse_train_args(argv if isinstance(argv, list) else shlex.split(argv), on_gpu=kw.pop("on_gpu", False),
                            world_size=kw.pop("world_size", 1))


def test_alpaca_lora_command_verbatim_on_cpu():
    cfg, notices = parse(ALPACA)
    assert cfg.dialect == "alpaca-lora" and cfg.template == "alpaca-lora/alpaca"  # its --prompt_template_name default
    assert cfg.base_model == "./linly-Ch-7b" and cfg.data_path == "./alpaca_1058_100negative.json" and not cfg.datasets
    assert cfg.output_dir == "./fintune-Linly-7b-revise1058" and cfg.num_epochs == 2 and cfg.cutoff_len == 1024
    assert cfg.lora_target == "q_proj,v_proj,k_proj,o_proj"
    assert cfg.val_set_size == 0 and cfg.eval_strategy == "no" and not cfg.load_best_model_at_end
    # alpaca-lora's own defaults for what the command leaves out
    assert (cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps) == (4, 32)
    assert cfg.learning_rate == 3e-4 and cfg.lora_r == 8 and cfg.lora_alpha == 16 and cfg.train_on_inputs
    assert cfg.warmup_steps == 100 and cfg.lr_scheduler_type == "linear" and cfg.save_total_limit == 3
    assert cfg.add_eos_token is False  # its flag default; tokenization applies alpaca-lora's meaning of it
    assert cfg.precision == "fp32" and any("8-bit" in n for n in notices)  # no GPU: one-line notice
    assert any("alpaca-lora finetune.py" in n for n in notices)


def test_alpaca_lora_on_gpu_loads_8bit_and_splits_batch_over_ranks():
    cfg, _ = parse(ALPACA + " --max_steps 5", on_gpu=True, world_size=2)
    assert cfg.precision == "int8" and cfg.gradient_accumulation_steps == 16 and cfg.max_steps == 5


def test_llama_efficient_tuning_command_verbatim():
    cfg, notices = parse(LET + " --max_steps 20")
    assert cfg.dialect == "let" and cfg.template == "let/default"  # no template flag: LET's default, not labkit's
    assert cfg.base_model.endswith("baichuan-7B") and cfg.datasets == "alpaca4zh" and cfg.dataset_dir == "data"
    assert cfg.lora_r == 8 and cfg.lora_target == "W_pack" and cfg.lora_alpha == 32 and cfg.lora_dropout == 0.1
    batch = (cfg.per_device_train_batch_size, cfg.per_device_eval_batch_size, cfg.gradient_accumulation_steps)
    assert batch == (4, 4, 8)
    assert cfg.lr_scheduler_type == "cosine" and cfg.learning_rate == 5e-5 and cfg.max_grad_norm == 0.5
    assert cfg.num_epochs == 3.0 and cfg.val_set_size == 0.01 and cfg.eval_strategy == "steps"
    assert cfg.eval_steps == 100 and cfg.save_steps == 100 and cfg.logging_steps == 10 and cfg.warmup_steps == 0
    assert cfg.load_best_model_at_end and cfg.plot_loss and cfg.max_steps == 20
    assert (cfg.max_source_length, cfg.max_target_length, cfg.cutoff_len) == (512, 512, 1024)
    assert cfg.precision == "fp32" and sum("fp16" in n for n in notices) == 1
    assert parse(LET, on_gpu=True)[0].precision == "fp16"
    assert parse(LET + " --quantization_bit 4", on_gpu=True)[0].precision == "nf4"
    cut = parse(LET + " --max_source_length 256 --max_target_length 128")[0]
    assert (cut.max_source_length, cut.max_target_length, cut.cutoff_len) == (256, 128, 384)


def test_dataset_dir_and_spellings():
    cfg, _ = parse(["--model_name_or_path", "m", "--dataset", "a,b", "--dataset_dir", "mydata",
                    "--lora_target", "'[q_proj, v_proj]'", "--load_best_model_at_end=false",
                    "--per-device-train-batch-size=2", "--prompt_template", "default"])
    assert cfg.dataset_dir == "mydata" and cfg.datasets == "a,b" and cfg.lora_target == "q_proj,v_proj"
    assert cfg.per_device_train_batch_size == 2 and cfg.template == "let/default" and not cfg.load_best_model_at_end


@pytest.mark.parametrize("flags, dialect", [
    ({"base_model", "data_path"}, "alpaca-lora"),
    ({"micro_batch_size", "output_dir"}, "alpaca-lora"),
    ({"model_name_or_path", "dataset"}, "let"),
    ({"model_name_or_path", "dataset", "prompt_template"}, "let"),
    ({"stage", "model_name_or_path", "dataset", "template"}, "llamafactory"),
    ({"model_name_or_path", "dataset", "template"}, "llamafactory"),
    ({"base_model", "data_path", "template"}, "alpaca-lora"),  # --template as labkit's own name
    ({"datasets", "max_steps", "output_dir"}, "labkit"),
    (set(), "labkit"),
])
def test_detect_dialect(flags, dialect):
    assert detect_dialect(flags) == dialect


def test_mixed_tools_and_explicit_dialect():
    with pytest.raises(LabkitError, match=r"--micro_batch_size: an alpaca-lora flag among LLaMA-Efficient-Tuning"):
        detect_dialect({"model_name_or_path", "micro_batch_size"})
    with pytest.raises(LabkitError, match=r"--dev_ratio: not a LLaMA-Factory flag"):
        detect_dialect({"stage", "dev_ratio"})
    with pytest.raises(LabkitError, match=r"--dialect vicuna: unknown"):
        detect_dialect(set(), "vicuna")
    cfg, _ = parse("--dialect labkit --base_model tiny-llama --max_steps 3")  # labkit's defaults, no data needed
    assert cfg.dialect == "labkit" and cfg.datasets == "tasks,negatives" and cfg.val_set_size == 0
    assert cfg.template in template_names()


def test_template_names_resolve_by_dialect_and_are_validated():
    assert parse(ALPACA + " --prompt_template_name alpaca")[0].template == "alpaca-lora/alpaca"
    assert parse(LET + " --prompt_template baichuan")[0].template == "let/baichuan"
    qualified = parse(LET + " --prompt_template alpaca-lora/alpaca")[0]
    assert qualified.template == "alpaca-lora/alpaca" and qualified.dialect == "let"
    with pytest.raises(LabkitError, match=r"^--prompt_template_name 'alpacca': "):
        parse(ALPACA + " --prompt_template_name alpacca")


def test_no_silent_substitution_of_data_or_base():
    with pytest.raises(LabkitError, match=r"^--data_path: not given; .*yahma/alpaca-cleaned.*--data_path FILE"):
        parse("--base_model m --num_epochs 2")
    with pytest.raises(LabkitError, match=r"^--dataset: not given; .*alpaca_zh.*pass --dataset NAME"):
        parse("--model_name_or_path m --do_train --lora_target W_pack")
    with pytest.raises(LabkitError, match=r"^--base_model: not given"):
        parse("--data_path d.json --num_epochs 1")
    with pytest.raises(LabkitError, match=r"^--model_name_or_path: not given"):
        parse("--dataset d --do_train")


def test_let_truncates_by_source_and_target_not_cutoff_len():
    with pytest.raises(LabkitError, match=r"^--cutoff_len: not a LLaMA-Efficient-Tuning flag.*--max_source_length"):
        parse(LET + " --cutoff_len 512")


def test_llamafactory_command_line():
    cfg, notices = parse("--stage sft --do_train --model_name_or_path tiny-llama --dataset tasks --dataset_dir d "
                         "--template alpaca --finetuning_type lora --lora_target all --output_dir o "
                         "--per_device_train_batch_size 2 --gradient_accumulation_steps 4 --learning_rate 1e-4 "
                         "--num_train_epochs 1.0 --bf16")
    assert cfg.dialect == "llamafactory" and cfg.template == "llamafactory/alpaca" and cfg.lora_target == "all"
    assert (cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.cutoff_len) == (8, 16, 0.0, 2048)  # LF defaults
    assert cfg.precision == "bf16" and cfg.gradient_accumulation_steps == 4 and cfg.learning_rate == 1e-4
    with pytest.raises(LabkitError, match=r"stage: dpo: not supported; .*stage: sft"):
        parse("--stage dpo --model_name_or_path m --dataset d --template alpaca")
    again, notices = parse("--stage sft --model_name_or_path m --dataset d --template alpaca --cutoff_len 64 "
                           "--cutoff_len 128")
    assert again.cutoff_len == 128 and any("--cutoff_len given more than once" in n for n in notices)


def test_given_twice():
    with pytest.raises(LabkitError, match=r"^--model_name_or_path: given twice \(also as --base_model\)"):
        parse("--base_model a --data_path d.json --model_name_or_path b")
    cfg, notices = parse(ALPACA + " --num_epochs 1")  # an override appended to a pasted line: last one wins
    assert cfg.num_epochs == 1 and any("--num_epochs given more than once" in n for n in notices)


def test_logging_and_lenient_flags(monkeypatch):
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    cfg, notices = parse(ALPACA + " --wandb_project proj --wandb_run_name run1 --wandb_watch gradients")
    assert (cfg.report_to, cfg.wandb_project, cfg.run_name) == ("wandb", "proj", "run1")
    assert any("--wandb_watch gradients ignored" in n for n in notices)
    assert parse(ALPACA)[0].report_to == "none"
    monkeypatch.setenv("WANDB_PROJECT", "from-env")  # alpaca-lora: use_wandb when WANDB_PROJECT is set
    assert parse(ALPACA)[0].report_to == "wandb"
    cfg, _ = parse(LET + " --report_to tensorboard --lenient")
    assert cfg.report_to == "tensorboard" and cfg.lenient
    with pytest.raises(LabkitError, match="report_to"):
        parse(LET + " --report_to mlflow")


@pytest.mark.parametrize("argv, hint", [
    (["--base_model", "m", "--num_epoch", "2"], "num_epochs"),
    (["--model_name_or_path", "m", "--lora_rnk", "8"], "lora_rank"),
    (["--learnig_rate", "1e-4"], "learning_rate"),
])
def test_unknown_flag_names_the_closest(argv, hint):
    with pytest.raises(LabkitError, match=f"did you mean --{hint}\\?"):
        parse(argv)


def test_bad_values_fail_clearly():
    with pytest.raises(LabkitError, match="^--finetuning_type full: not supported"):
        parse(["--model_name_or_path", "m", "--finetuning_type", "full"])
    with pytest.raises(LabkitError, match="^--cutoff_len: expected a number"):
        parse(["--cutoff_len", "big"])
    with pytest.raises(LabkitError, match="^--output_dir: needs a value"):
        parse(["--output_dir"])
    with pytest.raises(LabkitError, match="lr_scheduler_type"):
        parse(["--lr_scheduler_type", "cosin"])
    with pytest.raises(LabkitError, match="^stray: unexpected argument"):
        parse(["stray"])


def test_a_warmup_ratio_alone_replaces_the_default_warmup_steps():
    """labkit's default warmup_steps would win over a ratio (HF: steps win); asking for a ratio alone means it."""
    cfg, _ = parse_train_args(["--warmup_ratio", "0.1"], on_gpu=False, world_size=1)
    assert (cfg.warmup_steps, cfg.warmup_ratio) == (0, 0.1)
    cfg, _ = parse_train_args(["--warmup_ratio", "0.1", "--warmup_steps", "7"], on_gpu=False, world_size=1)
    assert (cfg.warmup_steps, cfg.warmup_ratio) == (7, 0.1)

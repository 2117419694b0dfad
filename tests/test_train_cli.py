"""labkit.train.cli: help, one `error:` line per user mistake (nothing written, no model loaded), --lenient,
tiny-llama as base, and real short runs of the seed command lines on the tiny models."""

from __future__ import annotations

import json
import shlex

import pytest

from labkit.cli import main as labkit_main
from labkit.paths import data_dir
from labkit.train.cli import main

ALPACA = ("train --base_model tiny-llama --data_path {data} --output_dir {out} --num_epochs 2 --cutoff_len 1024 "
          "--val_set_size 0 --lora-target-modules '[q_proj,v_proj,k_proj,o_proj]'")


def test_help_lists_seed_flags_and_llamafactory_keys(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--lora_target_modules", "--lora_target", "--dev_ratio", "--plot_loss", "--resume_from_checkpoint",
                 "--lenient", "--report_to", "--dialect", "--max_source_length", "finetuning_type", "val_size",
                 "alpaca-lora/alpaca", "let/default", "llamafactory/llama3"):
        assert flag in out, flag
    assert "image_max_pixels" not in out  # refused keys are not listed as taken


def test_unknown_flag_exits_2_naming_closest(capsys):
    assert labkit_main(["train", "--model_name_or_path", "x", "--lora_rnak", "8"]) == 2
    err = capsys.readouterr().err
    assert "error: --lora_rnak: unknown flag (did you mean --lora_rank?)" in err and "Traceback" not in err


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if any model weights load (mistakes must be caught before)."""
    import labkit.models

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the mistake was reported")

    monkeypatch.setattr(labkit.models, "load_model", refuse)


MISTAKES = [
    ("--base_model tiny-llama --output_dir {out}", "--data_path: not given; alpaca-lora's default is the hub dataset "
                                                   "yahma/alpaca-cleaned"),
    ("--base_model tiny-llama --data_path {tmp}/missing.json --output_dir {out}", "--data_path {tmp}/missing.json: no "
                                                                                  "such file"),
    ("--base_model tiny-llama --data_path yahma/alpaca-cleaned --output_dir {out}", "--data_path yahma/alpaca-cleaned:"
                                                                                    " no such file (alpaca-lora would "
                                                                                    "download it"),
    ("--base_model tiny-llama --data_path {tmp} --output_dir {out}", "--data_path {tmp}: is a folder"),
    ("--model_name_or_path tiny-llama --dataset tasks,taks --dataset_dir {data} --output_dir {out}",
     "--dataset taks: not in {data}/dataset_info.json (did you mean 'tasks'?)"),
    ("--model_name_or_path tiny-llama --dataset tasks --dataset_dir {tmp}/nowhere --output_dir {out}",
     "dataset_dir {tmp}/nowhere: no dataset_info.json"),
    ("--model_name_or_path tiny-llama --dataset tasks --output_dir {out}", "dataset_dir data: no dataset_info.json"),
    ("--base_model {tmp}/no_model --data_path {data}/tasks.json --val_set_size 0 --output_dir {out}",
     "--base_model {tmp}/no_model: no such folder"),
    ("--base_model tiny-llama --data_path {data}/tasks.json --prompt_template_name alpacca --output_dir {out}",
     "--prompt_template_name 'alpacca': unknown template"),
    ("--base_model tiny-llama --data_path {data}/negatives.json --output_dir {out}", "val_set_size 2000: 2000 "
                                                                                     "held-out samples leave none"),
    ("--base_model tiny-llama --data_path {data}/tasks.json --val_set_size 0 --lora_target_modules '[q_proj,W_pack]' "
     "--output_dir {out}", "--lora_target_modules q_proj,W_pack: W_pack is no linear layer of this llama model"),
    ("--model_name_or_path tiny-llama --dataset tasks --dataset_dir {data} --lora_rank 0 --output_dir {out}",
     "--lora_rank 0: must be >= 1; use a positive"),
]


@pytest.mark.parametrize("cmd, message", MISTAKES)
def test_user_mistakes_one_error_line_nothing_written_no_model(tmp_path, monkeypatch, capsys, no_model_load,
                                                                cmd, message):
    monkeypatch.chdir(tmp_path)  # LET/LF's default dataset_dir "data" is relative to the working folder
    out = tmp_path / "out"
    fill = {"tmp": tmp_path, "out": out, "data": data_dir()}
    code = labkit_main(["train", *shlex.split(cmd.format(**fill))])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: " + message.format(**fill)), err
    assert "; " in errors[0]  # what is wrong; what to do
    assert not out.exists()


def test_rejected_records_name_lenient_and_lenient_drops_them(tmp_path, capsys, no_model_load):
    rows = json.loads((data_dir() / "tasks.json").read_text(encoding="utf-8"))[:40]
    rows[3] = {"instruction": "", "input": "", "output": ""}
    rows[7] = {"instruction": 5}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(rows), encoding="utf-8")
    out = tmp_path / "out"
    cmd = f"train --base_model tiny-llama --data_path {bad} --val_set_size 0 --output_dir {out}"
    assert labkit_main(shlex.split(cmd)) == 1
    err = capsys.readouterr().err
    assert "error: " in err and "--lenient" in err and "Traceback" not in err and not out.exists()

    from labkit.train.flags import parse_train_args
    from labkit.train.sft import prepare_run

    cfg, _ = parse_train_args(shlex.split(cmd)[1:] + ["--lenient"], on_gpu=False, world_size=1)
    prep = prepare_run(cfg)
    err = capsys.readouterr().err
    assert "--lenient: dropped 2 of 40 records" in err
    assert prep.summary["examples"] == 38 and prep.plan.train_samples == 38


def test_tiny_names_resolve_for_train_as_for_generate(tmp_path, no_model_load):
    from labkit.models import resolve_base
    from labkit.train.config import TrainConfig
    from labkit.train.sft import prepare_run

    cfg = TrainConfig(base_model="tiny-baichuan", data_path=str(data_dir() / "tasks.json"), max_samples=16,
                      template="let/baichuan", output_dir=str(tmp_path / "o"))
    prep = prepare_run(cfg)
    assert prep.base == str(resolve_base("tiny-baichuan")) and cfg.arch == "baichuan" and prep.plan.arch == "baichuan"


@pytest.mark.slow
def test_seed_alpaca_command_trains_with_tensorboard_and_wandb_notice(tmp_path, capsys, monkeypatch):
    """The seed's alpaca-lora line (paths changed, a smaller global batch to stay short) through `labkit train`."""
    import importlib.util

    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    out = tmp_path / "alpaca_out"
    cmd = ALPACA.format(data=data_dir() / "alpaca_1058_100negative.json", out=out)
    argv = shlex.split(cmd) + ["--batch_size", "8", "--max_steps", "2", "--logging_steps", "1",
                               "--report_to", "tensorboard", "--wandb_project", "seed"]
    assert labkit_main(argv) == 0
    cap = capsys.readouterr()
    assert cap.out.strip().splitlines()[-1] == str(out.resolve())
    assert "template alpaca-lora/alpaca" in cap.err and "8 samples per optimizer step" in cap.err
    saved = json.loads((out / "labkit_train.json").read_text(encoding="utf-8"))
    plan = saved["plan"]
    assert (plan["dialect"], plan["template"], plan["arch"]) == ("alpaca-lora", "alpaca-lora/alpaca", "llama")
    assert (plan["gradient_accumulation_steps"], plan["planned_steps"], plan["warmup_steps"]) == (2, 2, 100)
    assert plan["steps_per_epoch"] == 133 and plan["train_samples"] == 1058
    assert sorted(plan["lora_targets"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    m = json.loads((out / "train_metrics.json").read_text(encoding="utf-8"))
    assert m["global_step"] == 2 and m["planned_steps"] == 2
    assert list((out / "runs").rglob("events.out.tfevents.*")), "no TensorBoard event file"
    assert (out / "training_loss.png").is_file()
    if importlib.util.find_spec("wandb") is None:
        assert "wandb is not installed" in cap.err
    else:
        assert "offline" in cap.err


@pytest.mark.slow
def test_cli_trains_tiny_llama_on_bundled_data_and_resumes(tmp_path, capsys):
    out = tmp_path / "cli_out"
    argv = ["train", "--model_name_or_path", "", "--dataset", "tasks,negatives", "--dataset_dir", str(data_dir()),
            "--max_samples", "48", "--max_steps", "4", "--save_steps", "2", "--logging_steps", "1",
            "--per_device_train_batch_size", "2", "--learning_rate", "1e-3", "--output_dir", str(out),
            "--prompt_template", "linly", "--fp16", "--plot_loss"]
    assert labkit_main(argv) == 0
    cap = capsys.readouterr()
    assert cap.out.strip().splitlines()[-1] == str(out.resolve())
    assert "--fp16 needs a CUDA GPU" in cap.err and "template let/linly" in cap.err
    for name in ("adapter_model.safetensors", "trainer_state.json", "training_loss.png", "train_metrics.json"):
        assert (out / name).is_file(), name
    m = json.loads((out / "train_metrics.json").read_text())
    assert m["global_step"] == 4 and m["adapter_check"]["trained"] and m["trained_tokens"] > 0
    assert m["data"]["examples"] == 96  # max_samples per dataset (LLaMA-Efficient-Tuning): 48 + 48
    # resume: max_steps raised, continues from the newest complete checkpoint
    assert labkit_main(argv[:-2] + ["--max_steps", "6", "--resume_from_checkpoint", "auto"]) == 0
    m = json.loads((out / "train_metrics.json").read_text())
    assert m["global_step"] == 6 and m["resumed_from"].endswith("checkpoint-4")

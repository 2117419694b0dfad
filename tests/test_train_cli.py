"""labkit.train.cli: `labkit train` help, errors without traceback, a real run on the tiny model and data."""

from __future__ import annotations

import json

import pytest

from labkit.cli import main as labkit_main
from labkit.train.cli import main


def test_help_lists_seed_flags(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--lora_target_modules", "--lora_target", "--dev_ratio", "--plot_loss", "--resume_from_checkpoint"):
        assert flag in out


def test_unknown_flag_exits_2_naming_closest(capsys):
    assert labkit_main(["train", "--model_name_or_path", "x", "--lora_rnak", "8"]) == 2
    err = capsys.readouterr().err
    assert "error: unknown flag --lora_rnak (did you mean --lora_rank?)" in err and "Traceback" not in err


@pytest.mark.slow
def test_cli_trains_tiny_llama_on_bundled_data_and_resumes(tmp_path, capsys):
    out = tmp_path / "cli_out"
    argv = ["train", "--model_name_or_path", "", "--dataset", "tasks,negatives", "--max_samples", "48",
            "--cutoff_len", "128", "--max_steps", "4", "--save_steps", "2", "--logging_steps", "1",
            "--per_device_train_batch_size", "2", "--learning_rate", "1e-3", "--output_dir", str(out),
            "--prompt_template", "linly", "--fp16", "--plot_loss"]
    assert labkit_main(argv) == 0
    cap = capsys.readouterr()
    assert cap.out.strip().splitlines()[-1] == str(out.resolve()) or cap.out.strip().splitlines()[-1] == str(out)
    assert "--fp16 needs a CUDA GPU" in cap.err
    for name in ("adapter_model.safetensors", "trainer_state.json", "training_loss.png", "train_metrics.json"):
        assert (out / name).is_file(), name
    m = json.loads((out / "train_metrics.json").read_text())
    assert m["global_step"] == 4 and m["adapter_check"]["trained"] and m["trained_tokens"] > 0
    # resume: max_steps raised, continues from the newest complete checkpoint
    assert labkit_main(argv[:-2] + ["--max_steps", "6", "--resume_from_checkpoint", "auto"]) == 0
    m = json.loads((out / "train_metrics.json").read_text())
    assert m["global_step"] == 6 and m["resumed_from"].endswith("checkpoint-4")

"""labkit.train.config: strict keys with the closest name, checked values, the fields the dialects need."""

import json

import pytest

from labkit.errors import LabkitError
from labkit.train.config import DIALECTS, TrainConfig


def test_unknown_key_names_closest():
    with pytest.raises(LabkitError, match="did you mean 'learning_rate'"):
        TrainConfig.from_dict({"learning_rte": 1e-4})


def test_types_and_values_checked():
    with pytest.raises(LabkitError, match="lora_r"):
        TrainConfig.from_dict({"lora_r": "8"})
    with pytest.raises(LabkitError, match="precision"):
        TrainConfig(precision="fp8")
    with pytest.raises(LabkitError, match="held-out"):
        TrainConfig(eval_strategy="steps")
    with pytest.raises(LabkitError, match="not a multiple of eval_steps"):
        TrainConfig(eval_strategy="steps", val_set_size=0.1, load_best_model_at_end=True, eval_steps=30, save_steps=100)
    cfg = TrainConfig(eval_strategy="steps", val_set_size=0.1, load_best_model_at_end=True, eval_steps=50,
                      save_steps=100)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_dialect_truncation_and_logging_fields():
    assert set(DIALECTS) == {"labkit", "alpaca-lora", "let", "llamafactory"}
    cfg = TrainConfig(dialect="let", max_source_length=512, max_target_length=512, add_eos_token=False,
                      lenient=True, report_to="tensorboard,wandb")
    assert cfg.report_targets == ["tensorboard", "wandb"] and TrainConfig().report_targets == []
    with pytest.raises(LabkitError, match=r"dialect=.vicuna.: unknown dialect; use one of labkit, alpaca-lora, let, "
                                          r"llamafactory"):
        TrainConfig(dialect="vicuna")
    with pytest.raises(LabkitError, match=r"report_to.*'mlflow' is not supported"):
        TrainConfig(report_to="mlflow")
    with pytest.raises(LabkitError, match=r"max_source_length"):
        TrainConfig(max_source_length=-1)


def test_save_with_plan_and_load(tmp_path):
    cfg = TrainConfig(dialect="alpaca-lora", template="alpaca-lora/alpaca", arch="baichuan")
    path = cfg.save(tmp_path / "labkit_train.json", plan={"planned_steps": 18, "arch": "baichuan"})
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["plan"]["planned_steps"] == 18 and data["arch"] == "baichuan"
    assert data["template"] == "alpaca-lora/alpaca"
    assert TrainConfig.load(path) == cfg

"""labkit.train.config: strict keys with the closest name, checked values."""

import pytest

from labkit.errors import LabkitError
from labkit.train.config import TrainConfig


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
    with pytest.raises(LabkitError, match="multiple of eval_steps"):
        TrainConfig(eval_strategy="steps", val_set_size=0.1, load_best_model_at_end=True, eval_steps=30, save_steps=100)
    cfg = TrainConfig(eval_strategy="steps", val_set_size=0.1, load_best_model_at_end=True, eval_steps=50,
                      save_steps=100)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg

"""LoRA SFT: config, seed-command flags, HF Trainer + PEFT training, crash-safe checkpoints, loss plots."""

from __future__ import annotations

from labkit.train.config import TrainConfig

__all__ = ["TrainConfig", "run_training", "TrainResult"]


def __getattr__(name):  # torch/transformers load on first use, not on `import labkit.train`
    if name in ("run_training", "TrainResult"):
        from labkit.train import sft

        return getattr(sft, name)
    raise AttributeError(name)

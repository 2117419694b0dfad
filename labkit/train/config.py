"""TrainConfig: every knob of a LoRA SFT run, strict (unknown keys name the closest), checked on creation."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from labkit.config import from_dict
from labkit.errors import LabkitError

PRECISIONS = ("fp32", "bf16", "fp16", "int8", "nf4")
SCHEDULES = ("cosine", "linear", "constant", "constant_with_warmup")
EVAL_STRATEGIES = ("no", "steps", "epoch")
RESUME_AUTO = ("auto", "true", "True", "latest")


@dataclass
class TrainConfig:
    """One LoRA SFT run. Field names follow HF TrainingArguments / the seed scripts where they exist."""

    # model
    base_model: str = ""  # model folder; "" = labkit's tiny model of `arch`
    arch: str = "llama"  # tiny default to build when base_model is "": llama | baichuan
    precision: str = "fp32"  # base weights: fp32 | bf16 | fp16 | int8 | nf4 (8/4-bit = QLoRA)
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = False
    # data
    datasets: str = "tasks,negatives"  # registry names (comma list) in dataset_dir/dataset_info.json
    data_path: str = ""  # a single data file (alpaca-lora --data_path); overrides datasets when set
    dataset_dir: str = ""  # folder of dataset_info.json; "" = bundled data/
    template: str = "alpaca"
    cutoff_len: int = 256
    val_set_size: float = 0  # >= 1: number of held-out samples; in (0, 1): a ratio; 0: no eval
    max_samples: int | None = None
    train_on_inputs: bool = False
    packing: bool = True
    group_by_length: bool = False
    # optimisation
    num_epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides num_epochs
    learning_rate: float = 3e-4
    lr_scheduler_type: str = "cosine"
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    per_device_train_batch_size: int = 4
    per_device_eval_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    seed: int = 42
    # LoRA
    lora_r: int = 8
    lora_alpha: float = 16
    lora_dropout: float = 0.05
    lora_target: str = ""  # "" = preset of the architecture; '[q_proj,v_proj]', W_pack, comma lists
    # logging, eval, checkpoints
    output_dir: str = ""  # "" = <run folder>/lora
    logging_steps: int = 10
    eval_strategy: str = "no"
    eval_steps: int | None = None
    save_strategy: str = "steps"
    save_steps: int = 100
    save_total_limit: int | None = None
    load_best_model_at_end: bool = False
    resume_from_checkpoint: str = ""  # "" = fresh; PATH | auto | true = newest complete checkpoint
    overwrite_output_dir: bool = False
    plot_loss: bool = True
    disable_tqdm: bool = False
    dataloader_num_workers: int = 0
    extra: dict = field(default_factory=dict)  # passed to TrainingArguments verbatim (advanced)

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> LabkitError:
            return LabkitError(f"TrainConfig.{name}={getattr(self, name)!r}: {why}")

        if self.precision not in PRECISIONS:
            raise bad("precision", f"must be one of {', '.join(PRECISIONS)}")
        if self.lr_scheduler_type not in SCHEDULES:
            raise bad("lr_scheduler_type", f"must be one of {', '.join(SCHEDULES)}")
        if self.eval_strategy not in EVAL_STRATEGIES:
            raise bad("eval_strategy", f"must be one of {', '.join(EVAL_STRATEGIES)}")
        if self.save_strategy not in ("no", "steps", "epoch"):
            raise bad("save_strategy", "must be no, steps or epoch")
        if self.arch not in ("llama", "baichuan"):
            raise bad("arch", "must be llama or baichuan")
        for name in ("cutoff_len", "per_device_train_batch_size", "per_device_eval_batch_size",
                     "gradient_accumulation_steps", "lora_r", "logging_steps", "save_steps"):
            if getattr(self, name) < 1:
                raise bad(name, "must be >= 1")
        if self.learning_rate <= 0:
            raise bad("learning_rate", "must be > 0")
        if not 0 <= self.lora_dropout < 1:
            raise bad("lora_dropout", "must be in [0, 1)")
        if self.val_set_size < 0:
            raise bad("val_set_size", "must be >= 0 (a count >= 1 or a ratio in (0, 1))")
        if self.max_steps <= 0 and self.num_epochs <= 0:
            raise bad("num_epochs", "must be > 0 when max_steps is not set")
        if self.eval_strategy != "no" and self.val_set_size == 0:
            raise bad("eval_strategy", "evaluation needs held-out data: set val_set_size (or --dev_ratio)")
        if self.load_best_model_at_end:
            if self.eval_strategy == "no":
                raise bad("load_best_model_at_end", "needs eval_strategy steps or epoch and val_set_size > 0")
            if self.save_strategy != self.eval_strategy:
                raise bad("load_best_model_at_end", f"needs save_strategy == eval_strategy ({self.eval_strategy})")
            if self.eval_strategy == "steps" and self.save_steps % (self.eval_steps or self.logging_steps):
                raise bad("save_steps", "must be a multiple of eval_steps with load_best_model_at_end")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise bad("save_total_limit", "must be >= 1 or None")
        if not self.datasets and not self.data_path:
            raise bad("datasets", "name at least one dataset (or set data_path)")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "") -> "TrainConfig":
        return from_dict(cls, data, source=source or "TrainConfig")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @property
    def is_quantized(self) -> bool:
        return self.precision in ("int8", "nf4")

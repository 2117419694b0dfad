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
# whose semantics a command line carries: its defaults, template names, truncation and step plan
DIALECTS = ("labkit", "alpaca-lora", "let", "llamafactory")
REPORT_TO = ("none", "tensorboard", "wandb")


@dataclass
class TrainConfig:
    """One LoRA SFT run. Field names follow HF TrainingArguments / the seed scripts where they exist."""

    dialect: str = "labkit"  # labkit | alpaca-lora | let | llamafactory: defaults, template names, truncation
    # model
    base_model: str = ""  # model folder, tiny-llama / tiny-baichuan; "" = labkit's tiny model of `arch`
    arch: str = "llama"  # tiny default when base_model is ""; set to the base's own arch once it is resolved
    precision: str = "fp32"  # base weights: fp32 | bf16 | fp16 | int8 | nf4 (8/4-bit = QLoRA)
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = False
    allow_pickle: bool = False  # read pytorch_model*.bin (weights_only=True); safetensors need nothing
    # data
    datasets: str = "tasks,negatives"  # registry names (comma list) in dataset_dir/dataset_info.json
    data_path: str = ""  # a single data file (alpaca-lora --data_path); overrides datasets when set
    dataset_dir: str = ""  # folder of dataset_info.json; "" = bundled data/
    template: str = "alpaca-lora/alpaca"  # source/name, or a name resolved by `dialect`; qualified once resolved
    cutoff_len: int = 256
    max_source_length: int = 0  # > 0: LLaMA-Efficient-Tuning truncation of each prompt (with max_target_length)
    max_target_length: int = 0  # > 0: ... of each response, EOS included
    add_eos_token: bool = True  # alpaca-lora's --add_eos_token, read by tokenization per the template's source
    lenient: bool = False  # drop (and report) records that fail validation instead of stopping
    val_set_size: float = 0  # >= 1: number of held-out samples; in (0, 1): a ratio; 0: no eval
    max_samples: int | None = None
    train_on_inputs: bool = False
    packing: bool = True
    autocast: str = "auto"  # CPU bf16 autocast: auto (where AMX/AVX512-BF16 exists) | off; LABKIT_AUTOCAST=0/1 wins
    group_by_length: bool = False
    # optimisation
    num_epochs: float = 2.0  # the defaults below are the tiny recipe (notebooks 02/03 use the same values)
    max_steps: int = -1  # > 0 overrides num_epochs
    learning_rate: float = 5e-3  # tiny LoRA; a 7B LoRA wants 5e-5..3e-4 (the 7B profiles and dialects set it)
    lr_scheduler_type: str = "cosine"
    warmup_steps: int = 10
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    per_device_train_batch_size: int = 16
    per_device_eval_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    seed: int = 42
    # LoRA
    lora_r: int = 16
    lora_alpha: float = 32
    lora_dropout: float = 0.05
    lora_target: str = ""  # "" = preset of the architecture; '[q_proj,v_proj]', W_pack, comma lists
    # logging, eval, checkpoints
    output_dir: str = ""  # "" = <run folder>/lora
    logging_steps: int = 10
    eval_strategy: str = "no"
    eval_steps: int | None = None
    save_strategy: str = "steps"
    save_steps: int = 100
    save_total_limit: int | None = 2  # complete checkpoints kept; None keeps all (the HF default)
    load_best_model_at_end: bool = False
    resume_from_checkpoint: str = ""  # "" = fresh; PATH | auto | true = newest complete checkpoint
    overwrite_output_dir: bool = False
    plot_loss: bool = True
    report_to: str = "none"  # none | tensorboard | wandb (offline, when installed); comma list
    run_name: str = ""  # the run's name in TensorBoard / wandb (alpaca-lora --wandb_run_name)
    wandb_project: str = ""  # alpaca-lora --wandb_project (WANDB_PROJECT)
    disable_tqdm: bool = False
    dataloader_num_workers: int = 0
    extra: dict = field(default_factory=dict)  # passed to TrainingArguments verbatim (advanced)

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> LabkitError:
            return LabkitError(f"TrainConfig.{name}={getattr(self, name)!r}: {why}")

        if self.dialect not in DIALECTS:
            raise bad("dialect", f"unknown dialect; use one of {', '.join(DIALECTS)}")
        for name in self.report_targets:
            if name not in REPORT_TO:
                raise bad("report_to", f"{name!r} is not supported; use {', '.join(REPORT_TO)} (comma list)")
        for name in ("max_source_length", "max_target_length"):
            if getattr(self, name) < 0:
                raise bad(name, "negative; use a length >= 1, or 0 for off")
        if self.precision not in PRECISIONS:
            raise bad("precision", f"unknown precision; use one of {', '.join(PRECISIONS)}")
        if self.lr_scheduler_type not in SCHEDULES:
            raise bad("lr_scheduler_type", f"unknown schedule; use one of {', '.join(SCHEDULES)}")
        if self.eval_strategy not in EVAL_STRATEGIES:
            raise bad("eval_strategy", f"unknown strategy; use one of {', '.join(EVAL_STRATEGIES)}")
        if self.save_strategy not in ("no", "steps", "epoch"):
            raise bad("save_strategy", "unknown strategy; use no, steps or epoch")
        if self.autocast not in ("auto", "off"):
            raise bad("autocast", "must be auto or off")
        if self.arch not in ("llama", "baichuan"):
            raise bad("arch", "unknown architecture; use llama or baichuan")
        for name in ("cutoff_len", "per_device_train_batch_size", "per_device_eval_batch_size",
                     "gradient_accumulation_steps", "lora_r", "logging_steps", "save_steps"):
            if getattr(self, name) < 1:
                raise bad(name, "must be >= 1; use a positive whole number")
        if self.learning_rate <= 0:
            raise bad("learning_rate", "must be > 0; use a positive number such as 1e-4")
        if not 0 <= self.lora_dropout < 1:
            raise bad("lora_dropout", "must be in [0, 1); use e.g. 0.05")
        if self.val_set_size < 0:
            raise bad("val_set_size", "negative; use a count >= 1, a ratio in (0, 1), or 0 for no evaluation")
        if self.max_steps <= 0 and self.num_epochs <= 0:
            raise bad("num_epochs", "must be > 0; set it, or max_steps")
        if self.eval_strategy != "no" and self.val_set_size == 0:
            raise bad("eval_strategy", "evaluation needs held-out data; set val_set_size (--dev_ratio, val_size)")
        if self.load_best_model_at_end:
            if self.eval_strategy == "no":
                raise bad("load_best_model_at_end",
                          "needs evaluation; set eval_strategy steps or epoch and val_set_size > 0")
            if self.save_strategy != self.eval_strategy:
                raise bad("load_best_model_at_end",
                          f"save and eval strategies differ; set save_strategy {self.eval_strategy}")
            if self.eval_strategy == "steps" and self.save_steps % (self.eval_steps or self.logging_steps):
                raise bad("save_steps", "not a multiple of eval_steps; with load_best_model_at_end make it one")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise bad("save_total_limit", "must be >= 1; use a count, or None to keep all")
        if not self.datasets and not self.data_path:
            raise bad("datasets", "empty; name at least one dataset (or set data_path)")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "") -> "TrainConfig":
        return from_dict(cls, data, source=source or "TrainConfig")

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        """The config of a labkit_train.json (its `plan` entry, written by labkit.train.plan, is left aside)."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        data.pop("plan", None)
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path, plan: Mapping[str, Any] | None = None) -> Path:
        """Write the config as JSON; `plan` (the resolved training plan) goes under the key "plan"."""
        path = Path(path)
        data = self.to_dict()
        if plan is not None:
            data["plan"] = dict(plan)
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @property
    def report_targets(self) -> list[str]:
        """report_to as a list without "none" (empty = nothing beyond the output folder's files)."""
        names = [n.strip() for n in str(self.report_to).split(",") if n.strip()]
        return [n for n in names if n != "none"]

    @property
    def is_quantized(self) -> bool:
        return self.precision in ("int8", "nf4")

"""The resolved training plan: template, arch, samples per optimizer step, steps, warmup, schedule, truncation."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from labkit.errors import LabkitError
from labkit.train.config import TrainConfig

TOOLS = {"alpaca-lora": "alpaca-lora finetune.py", "let": "LLaMA-Efficient-Tuning train_sft.py",
         "llamafactory": "LLaMA-Factory", "labkit": "labkit"}


@dataclass
class TrainPlan:
    """What one run will do, in the numbers the HF Trainer uses (steps counted in samples, not packed rows)."""

    dialect: str
    template: str  # qualified name (source/name)
    base_model: str  # resolved folder ("" when the caller passed the model in)
    arch: str  # of the base, read from its config.json
    train_samples: int
    eval_samples: int
    world_size: int
    micro_batch_size: int  # per_device_train_batch_size
    gradient_accumulation_steps: int
    samples_per_step: int  # micro_batch_size x gradient_accumulation_steps x world_size
    micro_batches_per_epoch: int  # per rank: ceil(ceil(N / world_size) / micro_batch_size)
    steps_per_epoch: int  # ceil(micro_batches_per_epoch / gradient_accumulation_steps)
    num_epochs: float
    max_steps: int  # > 0: set by the command line, overrides num_epochs
    planned_steps: int
    warmup_steps: int
    lr_scheduler_type: str
    learning_rate: float
    packing: bool
    truncation: str
    cutoff_len: int
    max_source_length: int
    max_target_length: int
    train_on_inputs: bool
    add_eos_token: bool
    report_to: list[str] = field(default_factory=list)
    lora_target: str = ""
    lora_targets: list[str] = field(default_factory=list)  # resolved module names, filled once LoRA is attached

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def lines(self) -> list[str]:
        """The plan as a few one-line notices (printed before training)."""
        epochs = f"{self.num_epochs:g} epoch(s)" if self.max_steps <= 0 else f"max_steps {self.max_steps}"
        out = [
            f"plan ({TOOLS.get(self.dialect, self.dialect)} semantics): template {self.template}, base "
            f"{self.base_model or '(given model)'} (arch {self.arch})",
            f"plan: {self.train_samples} training samples ({self.eval_samples} held out); {self.samples_per_step} "
            f"samples per optimizer step = micro-batch {self.micro_batch_size} x accumulation "
            f"{self.gradient_accumulation_steps} x {self.world_size} process(es)",
            f"plan: {self.steps_per_epoch} optimizer steps per epoch, {epochs} -> {self.planned_steps} steps; "
            f"{self.lr_scheduler_type} schedule, learning rate {self.learning_rate:g}, warmup {self.warmup_steps} "
            f"steps; packing {'on (same samples per step)' if self.packing else 'off'}",
            f"plan: truncation: {self.truncation}",
        ]
        if self.warmup_steps > self.planned_steps:
            out.append(f"plan: warmup ({self.warmup_steps} steps) is longer than the run ({self.planned_steps} steps): "
                       f"the learning rate never reaches {self.learning_rate:g} "
                       f"(as in {TOOLS.get(self.dialect, self.dialect)}); lower --warmup_steps if that is not meant")
        return out


def world_size() -> int:
    """Processes of this run (torchrun / accelerate set WORLD_SIZE)."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))


def steps_per_epoch(n_samples: int, micro_batch: int, accumulation: int, world: int = 1) -> tuple[int, int]:
    """(micro-batches per epoch per rank, optimizer steps per epoch) as the HF Trainer counts them."""
    per_rank = math.ceil(n_samples / world)  # DistributedSampler pads to equal shares
    micro = math.ceil(per_rank / micro_batch)
    return micro, max(1, math.ceil(micro / accumulation))


def warmup_of(cfg: TrainConfig, total_steps: int) -> int:
    """Warmup steps as TrainingArguments.get_warmup_steps computes them (steps win over a ratio)."""
    if cfg.warmup_steps:
        return int(cfg.warmup_steps)
    return math.ceil(total_steps * cfg.warmup_ratio)


def truncation_rule(cfg: TrainConfig, source: str = "") -> str:
    """A one-line description of how samples are cut: the rule of the template's source, which tokenization applies."""
    if not source:
        source = cfg.template.split("/", 1)[0] if "/" in cfg.template else cfg.dialect
    if source == "let":
        src, tgt = cfg.max_source_length or 512, cfg.max_target_length or 512
        room = min(src + tgt, cfg.cutoff_len)
        return (f"each prompt cut to max_source_length {src}, each response to max_target_length {tgt} (EOS "
                f"included); a turn that no longer fits in {room} tokens ends the sample (LLaMA-Efficient-Tuning)")
    if source == "alpaca-lora":
        return (f"whole text cut at cutoff_len {cfg.cutoff_len} tokens, EOS appended when it fits; "
                f"{'prompt trained too (train_on_inputs)' if cfg.train_on_inputs else 'prompt masked'} (alpaca-lora)")
    if source == "llamafactory":
        return (f"cutoff_len {cfg.cutoff_len} shared between prompt and response of each turn; samples with "
                "nothing left to train are dropped and counted (LLaMA-Factory)")
    return f"cutoff_len {cfg.cutoff_len}: responses cut at the end; samples whose prompt does not fit are dropped"


def make_plan(cfg: TrainConfig, train_samples: int, eval_samples: int = 0, *, base_model: str = "",
              template_source: str = "", world: int | None = None) -> TrainPlan:
    """The plan of `cfg` for `train_samples` tokenized samples."""
    if train_samples < 1:
        raise LabkitError("training data: no sample left to train on; check the dataset and cutoff_len")
    world = world or world_size()
    micro, per_epoch = steps_per_epoch(train_samples, cfg.per_device_train_batch_size,
                                       cfg.gradient_accumulation_steps, world)
    total = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_epochs * per_epoch)
    return TrainPlan(
        dialect=cfg.dialect, template=cfg.template, base_model=base_model, arch=cfg.arch,
        train_samples=train_samples, eval_samples=eval_samples, world_size=world,
        micro_batch_size=cfg.per_device_train_batch_size, gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        samples_per_step=cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * world,
        micro_batches_per_epoch=micro, steps_per_epoch=per_epoch, num_epochs=cfg.num_epochs,
        max_steps=cfg.max_steps if cfg.max_steps > 0 else -1, planned_steps=total,
        warmup_steps=warmup_of(cfg, total), lr_scheduler_type=cfg.lr_scheduler_type,
        learning_rate=cfg.learning_rate, packing=cfg.packing, truncation=truncation_rule(cfg, template_source),
        cutoff_len=cfg.cutoff_len, max_source_length=cfg.max_source_length,
        max_target_length=cfg.max_target_length, train_on_inputs=cfg.train_on_inputs,
        add_eos_token=cfg.add_eos_token, report_to=cfg.report_targets, lora_target=cfg.lora_target)


def read_plan(output_dir: str | Path) -> dict:
    """The plan recorded in <output_dir>/labkit_train.json ({} when there is none)."""
    path = Path(output_dir) / "labkit_train.json"
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")).get("plan") or {})
    except (OSError, json.JSONDecodeError, AttributeError):
        return {}

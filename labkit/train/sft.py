"""LoRA SFT on the HF Trainer + PEFT: data -> model -> Trainer -> verified adapter, plot and metrics in output_dir."""

from __future__ import annotations

import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit.errors import LabkitError
from labkit.train import checkpoints as ck
from labkit.train.config import TrainConfig

METRICS_FILE = "train_metrics.json"
CONFIG_FILE = "labkit_train.json"
PLOT_FILE = "training_loss.png"


@dataclass
class TrainResult:
    output_dir: Path
    metrics: dict
    log_history: list
    loss_plot: Path | None
    resumed_from: Path | None = None
    data_summary: dict = field(default_factory=dict)


def on_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_base(cfg: TrainConfig) -> str:
    """The base model folder: cfg.base_model, or labkit's tiny model of cfg.arch."""
    if cfg.base_model:
        return cfg.base_model
    from labkit.models.tiny import tiny_model_path

    return str(tiny_model_path(cfg.arch))


def load_base(cfg: TrainConfig):
    """(model, tokenizer) for cfg: labkit.models.load_model at cfg.precision (fp16 on CPU falls back to fp32)."""
    from labkit.models import load_model, load_tokenizer

    path = resolve_base(cfg)
    precision = cfg.precision
    if precision == "fp16" and not on_cuda():
        print("notice: fp16 needs a CUDA GPU; loading the base in fp32 on CPU", flush=True)
        precision = "fp32"
    model = load_model(path, precision=precision, attn_implementation=cfg.attn_implementation)
    return model, load_tokenizer(path)


def add_lora(model, cfg: TrainConfig):
    """Prepare (k-bit / gradient checkpointing) and wrap the base in a LoRA PeftModel; trainable weights in fp32."""
    import torch
    from peft import PeftModel, prepare_model_for_kbit_training

    if isinstance(model, PeftModel):
        return model
    from transformers import set_seed

    set_seed(cfg.seed)  # LoRA A is drawn from the global RNG, which some imports seed from the clock
    if cfg.is_quantized:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    elif cfg.gradient_checkpointing:
        model.enable_input_require_grads()  # checkpointed blocks need a grad-carrying input under frozen embeddings
    from labkit.models import arch_of
    from labkit.models.lora import attach_lora, parse_targets, preset_targets

    targets = parse_targets(cfg.lora_target) if cfg.lora_target else preset_targets(arch_of(model))
    model = attach_lora(model, targets, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout)
    for p in model.parameters():  # fp16/bf16 bases: the LoRA weights and their optimizer state stay fp32
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    return model


def split_examples(examples: list, val_set_size: float, seed: int) -> tuple[list, list]:
    """Deterministic hold-out: val_set_size >= 1 is a count, (0, 1) a ratio."""
    if not val_set_size:
        return list(examples), []
    n_val = int(val_set_size) if val_set_size >= 1 else max(1, round(val_set_size * len(examples)))
    if n_val >= len(examples):
        raise LabkitError(f"val_set_size={val_set_size}: {n_val} held-out samples leave none of {len(examples)} to train")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    val = set(order[:n_val])
    return [e for i, e in enumerate(examples) if i not in val], [examples[i] for i in sorted(val)]


def load_examples(cfg: TrainConfig) -> tuple[list, Any]:
    """Examples from the registry (cfg.datasets in cfg.dataset_dir) or a single file (cfg.data_path)."""
    from labkit.data.registry import load_datasets
    from labkit.paths import data_dir

    dataset_dir = Path(cfg.dataset_dir) if cfg.dataset_dir else data_dir()
    if cfg.data_path:
        path = Path(cfg.data_path).expanduser()
        if path.is_file():
            from labkit.data import registry

            loader = getattr(registry, "load_file", None)
            if loader is not None:
                return loader(path, seed=cfg.seed)
            return load_datasets(path.stem, dataset_dir=path.parent, seed=cfg.seed)
        info = dataset_dir / "dataset_info.json"
        if info.is_file() and path.stem in json.loads(info.read_text(encoding="utf-8")):
            print(f"notice: --data_path {cfg.data_path} not found; using the registered dataset {path.stem!r} "
                  f"of {info}", flush=True)
            return load_datasets(path.stem, dataset_dir=dataset_dir, seed=cfg.seed)
        raise LabkitError(f"--data_path {cfg.data_path}: no such file (and no dataset {path.stem!r} in {info})")
    return load_datasets(cfg.datasets, dataset_dir=dataset_dir, seed=cfg.seed)


def prepare_data(cfg: TrainConfig, tokenizer) -> tuple[Any, Any, Any, dict]:
    """(train_dataset, eval_dataset|None, collator, summary): template, tokenize, hold out, pack or pad."""
    from labkit.data.templates import get_template
    from labkit.data.tokenize import tokenize_examples

    examples, report = load_examples(cfg)
    if cfg.max_samples:
        examples = examples[: cfg.max_samples]
    train_ex, val_ex = split_examples(examples, cfg.val_set_size, cfg.seed)
    template = get_template(cfg.template)
    train_ds, tok_report = tokenize_examples(train_ex, tokenizer, template, cfg.cutoff_len,
                                             train_on_inputs=cfg.train_on_inputs)
    eval_ds = None
    if val_ex:
        eval_ds, _ = tokenize_examples(val_ex, tokenizer, template, cfg.cutoff_len, train_on_inputs=cfg.train_on_inputs)
    summary = {"examples": len(examples), "train_examples": len(train_ex), "eval_examples": len(val_ex),
               "read": getattr(report, "read", None), "rejected": getattr(report, "rejected", None),
               "tokenize": _as_dict(tok_report)}
    train_ds, eval_ds, collator = batching(cfg, tokenizer, train_ds, eval_ds)
    summary["train_rows"] = len(train_ds)
    return train_ds, eval_ds, collator, summary


def batching(cfg: TrainConfig, tokenizer, train_ds, eval_ds):
    """Packed rows + block-diagonal mask collator, or padding to the longest."""
    from labkit.data import packing

    if cfg.packing:
        train_ds = packing.pack_dataset(train_ds, cfg.cutoff_len)
        if eval_ds is not None:
            eval_ds = packing.pack_dataset(eval_ds, cfg.cutoff_len)
        import torch

        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision, torch.float32)
        if dtype == torch.float16 and not on_cuda():
            dtype = torch.float32
        return train_ds, eval_ds, packing.PackedCollator(tokenizer, dtype=dtype)
    return train_ds, eval_ds, packing.PaddingCollator(tokenizer)


def _as_dict(obj) -> dict:
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return obj
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    import dataclasses

    if dataclasses.is_dataclass(obj):
        return {k: v for k, v in dataclasses.asdict(obj).items() if isinstance(v, (int, float, str, bool))}
    return {}


def training_arguments(cfg: TrainConfig, output_dir: Path):
    """TrainingArguments for cfg (CPU: use_cpu, gloo under torchrun; LoRA: find_unused_parameters False)."""
    from transformers import TrainingArguments

    cuda = on_cuda()
    amp = {"fp16": cuda and cfg.precision == "fp16", "bf16": cfg.precision == "bf16"}
    if cfg.is_quantized and cuda:
        import torch

        amp["bf16" if torch.cuda.is_bf16_supported() else "fp16"] = True
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        num_train_epochs=cfg.num_epochs,
        max_steps=cfg.max_steps if cfg.max_steps > 0 else -1,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_steps if cfg.warmup_steps else cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        eval_strategy=cfg.eval_strategy,
        eval_steps=cfg.eval_steps,
        save_strategy=cfg.save_strategy,
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=cfg.load_best_model_at_end,
        metric_for_best_model="eval_loss" if cfg.load_best_model_at_end else None,
        greater_is_better=False if cfg.load_best_model_at_end else None,
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=not cuda,
        report_to="none",
        ddp_find_unused_parameters=False,
        remove_unused_columns=False,
        label_names=["labels"],
        gradient_checkpointing=cfg.gradient_checkpointing and not cfg.is_quantized,
        gradient_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        disable_tqdm=cfg.disable_tqdm,
        dataloader_num_workers=cfg.dataloader_num_workers,
        optim="adamw_torch",
        **amp,
    )
    if cfg.group_by_length and not cfg.packing:
        kwargs["train_sampling_strategy"] = "group_by_length"
    elif cfg.group_by_length:
        print("notice: group_by_length has no effect with packing (rows are already full); ignored", flush=True)
    kwargs.update(cfg.extra)
    return TrainingArguments(**kwargs)


def output_dir_of(cfg: TrainConfig) -> Path:
    from labkit.paths import resolve_output

    return resolve_output(cfg.output_dir, "lora")


def run_training(cfg: TrainConfig, *, model=None, tokenizer=None, train_dataset=None, eval_dataset=None,
                 data_collator=None, callbacks=()) -> TrainResult:
    """Train a LoRA adapter per cfg; model/tokenizer/datasets/collator may be given (notebooks, tests)."""
    import torch

    from labkit.train.callbacks import FaultCallback, LabkitTrainer, adapter_change, trainable_snapshot
    from labkit.train.plots import plot_loss

    out = output_dir_of(cfg)
    rank0 = int(os.environ.get("RANK", "0")) == 0
    resume = ck.resolve_resume(cfg.resume_from_checkpoint, out)
    if resume is None and not cfg.resume_from_checkpoint and not cfg.overwrite_output_dir and rank0:
        done = ck.list_checkpoints(out)
        if done:
            print(f"notice: {out} already holds {len(done)} checkpoint(s); starting fresh "
                  "(--resume_from_checkpoint auto continues the newest complete one)", flush=True)
    if resume is not None and rank0:  # other ranks read the state only after the Trainer's first barrier
        if resume.parent.resolve() == out.resolve():
            ck.drop_stale_after(out, ck.step_of(resume) or 0)
        ck.repair_best_checkpoint(resume, out)
    from transformers import set_seed

    set_seed(cfg.seed)
    if model is None:
        model, tok = load_base(cfg)
        tokenizer = tokenizer or tok
    model = add_lora(model, cfg)
    summary: dict = {}
    if train_dataset is None:
        train_dataset, eval_dataset, data_collator, summary = prepare_data(cfg, tokenizer)
    args = training_arguments(cfg, out)
    trainer = LabkitTrainer(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                            data_collator=data_collator, callbacks=[FaultCallback(), *callbacks])
    before = trainable_snapshot(model)
    t0 = time.perf_counter()
    train_out = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - t0
    change = adapter_change(model, before)
    metrics = dict(train_out.metrics)
    metrics.update(train_seconds=round(seconds, 3), trained_tokens=trainer.label_tokens,
                   train_tokens_per_s=round(trainer.label_tokens / max(seconds, 1e-9), 1),
                   global_step=trainer.state.global_step, adapter_change=change,
                   resumed_from=str(resume) if resume else None)
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    if losses:
        metrics["final_train_loss"] = losses[-1]
        metrics["first_train_loss"] = losses[0]
    if eval_dataset is not None:
        metrics.update(trainer.evaluate())
    if not change["changed"]:
        print(f"warning: the adapter did not change during training ({change['unchanged']} of {change['tensors']} "
              "tensors identical): check learning_rate, targets and that labels are not all -100", file=sys.stderr)
    plot = None
    if trainer.is_world_process_zero():
        trainer.save_model(str(out))  # final adapter (best one with load_best_model_at_end)
        trainer.save_state()
        metrics["adapter_check"] = _verify(out)
        cfg.save(out / CONFIG_FILE)
        if cfg.plot_loss:
            import matplotlib.pyplot as plt

            fig = plot_loss(trainer.state.log_history, out / PLOT_FILE, title=f"loss: {out.name}")
            plt.close(fig)
            plot = out / PLOT_FILE
        metrics["data"] = summary
        (out / METRICS_FILE).write_text(json.dumps(_jsonable(metrics), indent=2, ensure_ascii=False) + "\n",
                                        encoding="utf-8")
    return TrainResult(output_dir=out, metrics=metrics, log_history=list(trainer.state.log_history),
                       loss_plot=plot, resumed_from=resume, data_summary=summary)


def _verify(out: Path) -> dict:
    """The saved adapter holds A and B for every targeted module (labkit.models.integrity), as safetensors."""
    if not (out / "adapter_model.safetensors").is_file():
        raise LabkitError(f"{out}: adapter_model.safetensors was not written")
    from labkit.models.integrity import verify_adapter_dir

    # against the base config named in adapter_config.json (or the layers in the file); passing the PeftModel
    # itself would hide its wrapped linears from the check
    return verify_adapter_dir(out)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)

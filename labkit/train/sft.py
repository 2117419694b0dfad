"""LoRA SFT on the HF Trainer + PEFT: data -> model -> Trainer -> verified adapter, plot and metrics in output_dir."""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit.errors import LabkitError
from labkit.log import notice, warn
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


def load_base(cfg: TrainConfig, path: str | None = None):
    """(model, tokenizer) for cfg: labkit.models.load_model at cfg.precision (fp16 on CPU falls back to fp32)."""
    from labkit.models import load_model, load_tokenizer, resolve_base

    path = path or str(resolve_base(cfg.base_model, cfg.arch))
    precision = cfg.precision
    if precision == "fp16" and not on_cuda():
        notice("fp16 needs a CUDA GPU; loading the base in fp32 on CPU")
        precision = "fp32"
    model = load_model(path, precision=precision, attn_implementation=cfg.attn_implementation,
                       allow_pickle=cfg.allow_pickle)
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
    from labkit.models.lora import attach_lora, preset_targets, resolve_targets

    targets = resolve_targets(model, cfg.lora_target) if cfg.lora_target else preset_targets(arch_of(model))
    model = attach_lora(model, targets, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout)
    for p in model.parameters():  # fp16/bf16 bases: the LoRA weights and their optimizer state stay fp32
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    return model


def split_examples(examples: list, val_set_size: float, seed: int) -> tuple[list, list]:
    """Deterministic hold-out: val_set_size >= 1 is a count, (0, 1) a ratio (rounded up, as train_test_split)."""
    if not val_set_size:
        return list(examples), []
    n_val = int(val_set_size) if val_set_size >= 1 else max(1, math.ceil(val_set_size * len(examples)))
    if n_val >= len(examples):
        raise LabkitError(f"val_set_size {val_set_size:g}: {n_val} held-out samples leave none of {len(examples)} "
                          "to train; lower it (--val_set_size / --dev_ratio / val_size, 0 = no evaluation)")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    val = set(order[:n_val])
    return [e for i, e in enumerate(examples) if i not in val], [examples[i] for i in sorted(val)]


def resolve_template(cfg: TrainConfig):
    """The Template of cfg (unqualified names resolve by cfg.dialect); cfg.template becomes its qualified name."""
    from labkit.data.templates import get_template

    try:
        template = get_template(cfg.template, cfg.dialect)
    except LabkitError as err:
        raise LabkitError(f"template {cfg.template!r}: {err}") from None
    cfg.template = template.qualified_name
    return template


def _data_file(cfg: TrainConfig) -> Path:
    """--data_path as an existing file; the message says what alpaca-lora would have done otherwise."""
    path = Path(cfg.data_path).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise LabkitError(f"--data_path {cfg.data_path}: is a folder; pass the .json or .jsonl file")
    if path.suffix.lower() in (".json", ".jsonl"):
        raise LabkitError(f"--data_path {cfg.data_path}: no such file; check the path")
    raise LabkitError(f"--data_path {cfg.data_path}: no such file (alpaca-lora would download it as a hub dataset; "
                      "labkit never downloads): download it and pass --data_path FILE.json")


def _dataset_dir(cfg: TrainConfig) -> Path:
    from labkit.paths import data_dir

    folder = Path(cfg.dataset_dir).expanduser() if cfg.dataset_dir else data_dir()
    if not (folder / "dataset_info.json").is_file():
        raise LabkitError(f"dataset_dir {cfg.dataset_dir or folder}: no dataset_info.json in {folder.resolve()}; pass "
                          f"--dataset_dir FOLDER holding the registry (labkit's bundled datasets: {data_dir()})")
    return folder


def _check_names(cfg: TrainConfig, folder: Path) -> None:
    """Every --dataset name is in the registry (checked before any file is read)."""
    from labkit.config import closest
    from labkit.data.mixing import parse_spec
    from labkit.data.registry import read_registry

    info = read_registry(folder / "dataset_info.json")
    flag = "dataset" if cfg.dialect == "llamafactory" else "--dataset"
    for name, _ in parse_spec(cfg.datasets):
        if name not in info:
            hint = closest(name, info)
            raise LabkitError(f"{flag} {name}: not in {folder / 'dataset_info.json'}"
                              + (f" (did you mean {hint!r}?)" if hint else "")
                              + f"; registered: {', '.join(sorted(info)) or 'none'}")


def _loaded(what: str, load):
    """Run a loader; its errors are prefixed with the flag or file that named the data."""
    try:
        return load()
    except LabkitError as err:
        raise LabkitError(f"{what}: {err}", exit_code=err.exit_code) from None


def load_examples(cfg: TrainConfig) -> tuple[list, Any]:
    """Examples from the registry (cfg.datasets in cfg.dataset_dir) or a single file (cfg.data_path).

    LLaMA-Efficient-Tuning and LLaMA-Factory take max_samples of each dataset (the first ones); labkit and
    alpaca-lora command lines take it of the whole mix. Lenient: failing records are dropped and counted.
    """
    from labkit.data.registry import load_datasets, load_file

    strict = not cfg.lenient
    if cfg.data_path:
        path = _data_file(cfg)
        examples, report = _loaded(f"--data_path {cfg.data_path}",
                                   lambda: load_file(path, strict=strict, seed=cfg.seed))
    else:
        folder = _dataset_dir(cfg)
        _check_names(cfg, folder)
        what = f"{'dataset' if cfg.dialect == 'llamafactory' else '--dataset'} {cfg.datasets}"
        if cfg.max_samples and cfg.dialect in ("let", "llamafactory"):
            examples, report = [], None
            for name in [n.strip() for n in cfg.datasets.split(",") if n.strip()]:
                ex, rep = _loaded(what, lambda: load_datasets(name, dataset_dir=folder, seed=cfg.seed, strict=strict,
                                                              shuffle=False))
                examples += ex[: cfg.max_samples]
                if report is None:
                    report = rep
                else:
                    report.merge(rep)
        else:
            examples, report = _loaded(what, lambda: load_datasets(cfg.datasets, dataset_dir=folder, seed=cfg.seed,
                                                                   strict=strict))
    if cfg.max_samples and cfg.dialect not in ("let", "llamafactory"):
        examples = examples[: cfg.max_samples]
    if report is not None and report.rejected:
        first = f" (first: {report.errors[0]})" if report.errors else ""
        warn(f"--lenient: dropped {report.rejected} of {report.read} records that failed validation{first}")
    if not examples:
        raise LabkitError(f"{cfg.data_path or cfg.datasets}: no usable record; fix the data (labkit data check)")
    return examples, report


def prepare_data(cfg: TrainConfig, tokenizer) -> tuple[Any, Any, Any, dict]:
    """(train_dataset, eval_dataset|None, collator, summary): template, tokenize, hold out, pack or pad."""
    from labkit.data.tokenize import tokenize_examples

    template = resolve_template(cfg)
    examples, report = load_examples(cfg)
    train_ex, val_ex = split_examples(examples, cfg.val_set_size, cfg.seed)
    rules = dict(train_on_inputs=cfg.train_on_inputs, max_source_length=cfg.max_source_length,
                 max_target_length=cfg.max_target_length, add_eos_token=cfg.add_eos_token)
    train_ds, tok_report = tokenize_examples(train_ex, tokenizer, template, cfg.cutoff_len, **rules)
    eval_ds = None
    if val_ex:
        eval_ds, _ = tokenize_examples(val_ex, tokenizer, template, cfg.cutoff_len, **rules)
    summary = {"examples": len(examples), "train_examples": len(train_ex), "eval_examples": len(val_ex),
               "read": getattr(report, "read", None), "rejected": getattr(report, "rejected", None),
               "tokenize": _as_dict(tok_report), "template": template.qualified_name,
               "template_source": getattr(template, "source", ""), "train_samples": len(train_ds),
               "eval_samples": len(eval_ds) if eval_ds is not None else 0}
    from labkit.train.batching import batching

    train_ds, eval_ds, collator = batching(cfg, tokenizer, train_ds, eval_ds)
    summary["train_rows"] = len(train_ds)
    return train_ds, eval_ds, collator, summary


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


def training_arguments(cfg: TrainConfig, output_dir: Path, report_to: list[str] | None = None):
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
        report_to=report_to or "none",
        run_name=cfg.run_name or None,
        ddp_find_unused_parameters=False,
        remove_unused_columns=False,
        label_names=["labels"],
        # transformers 5 names (the gradient_checkpointing* spellings warn on every run)
        activation_checkpointing=cfg.gradient_checkpointing and not cfg.is_quantized,
        activation_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        disable_tqdm=cfg.disable_tqdm,
        dataloader_num_workers=cfg.dataloader_num_workers,
        optim="adamw_torch",
        **amp,
    )
    if cfg.group_by_length and not cfg.packing:
        kwargs["train_sampling_strategy"] = "group_by_length"
    elif cfg.group_by_length:
        notice("group_by_length has no effect with packing (rows are already full); ignored")
    kwargs.update(cfg.extra)
    return TrainingArguments(**kwargs)


def output_dir_of(cfg: TrainConfig) -> Path:
    from labkit.paths import resolve_output

    return resolve_output(cfg.output_dir, "lora")


def reporters(cfg: TrainConfig, out: Path) -> list[str]:
    """TrainingArguments.report_to for cfg: tensorboard event files in <out>/runs; wandb offline, if installed."""
    import importlib.util

    targets = []
    for name in cfg.report_targets:
        if name == "wandb":
            if importlib.util.find_spec("wandb") is None:
                notice("report_to wandb: wandb is not installed, so nothing goes to wandb (the loss curve and "
                       f"metrics are in {out}); pip install wandb for offline wandb runs, or use "
                       "--report_to tensorboard")
                continue
            if os.environ.get("WANDB_MODE") != "disabled":
                os.environ["WANDB_MODE"] = "offline"  # never online from here; `wandb sync` uploads later
            if cfg.wandb_project:
                os.environ["WANDB_PROJECT"] = cfg.wandb_project
            os.environ.setdefault("WANDB_DIR", str(out))
            notice(f"report_to wandb: offline run under {Path(os.environ['WANDB_DIR']) / 'wandb'} (upload later "
                   "with `wandb sync`)")
        elif name == "tensorboard":
            notice(f"report_to tensorboard: event files under {out / 'runs'} (tensorboard --logdir {out / 'runs'})")
        targets.append(name)
    return targets


def _resume_point(cfg: TrainConfig, out: Path, rank0: bool):
    """The checkpoint to resume from (None = fresh); a notice when a fresh run lands on old checkpoints."""
    resume = ck.resolve_resume(cfg.resume_from_checkpoint, out)
    if resume is None and not cfg.resume_from_checkpoint and not cfg.overwrite_output_dir and rank0:
        done = ck.list_checkpoints(out)
        if done:
            notice(f"{out} already holds {len(done)} checkpoint(s); starting fresh "
                   "(--resume_from_checkpoint auto continues the newest complete one)")
    return resume


def _prepare_resume(resume: Path | None, out: Path, rank0: bool) -> None:
    if resume is not None and rank0:  # other ranks read the state only after the Trainer's first barrier
        if resume.parent.resolve() == out.resolve():
            ck.drop_stale_after(out, ck.step_of(resume) or 0)
        ck.repair_best_checkpoint(resume, out)


def _arch(model, default: str) -> str:
    from labkit.models import arch_of

    try:
        return arch_of(model)
    except LabkitError:
        return default


@dataclass
class Prepared:
    """Everything a run needs before its model loads."""

    base: str  # resolved base folder ("" when the model was passed in)
    tokenizer: Any
    train_dataset: Any
    eval_dataset: Any
    data_collator: Any
    summary: dict
    plan: Any  # labkit.train.plan.TrainPlan


def prepare_run(cfg: TrainConfig, *, model=None, tokenizer=None, train_dataset=None, eval_dataset=None,
                data_collator=None, data_summary: dict | None = None) -> Prepared:
    """Base folder and its arch, template, data, tokenization and the plan, without loading the model.

    A mistake in any of them costs seconds and leaves the output folder untouched. `data_summary` (from
    prepare_data) gives the plan the sample counts when the datasets are passed in already packed.
    """
    from labkit.train.plan import make_plan

    base = ""
    if model is None:
        from labkit.models import arch_of, resolve_base
        from labkit.models.load import readable_weights

        base = str(resolve_base(cfg.base_model, cfg.arch))
        cfg.arch = arch_of(base)
        readable_weights(base, cfg.allow_pickle)  # refused now, before the data work, not at model load
    else:
        cfg.arch = _arch(model, cfg.arch)
    if cfg.lora_target:
        from labkit.models.lora import check_targets_for_arch

        flag = {"alpaca-lora": "--lora_target_modules", "llamafactory": "lora_target"}.get(cfg.dialect, "--lora_target")
        check_targets_for_arch(cfg.lora_target, cfg.arch, flag)
    summary: dict = dict(data_summary or {})
    if train_dataset is None:
        if tokenizer is None:
            if not base:
                raise LabkitError("run_training: a model was given without its tokenizer; pass tokenizer=")
            from labkit.models import load_tokenizer

            tokenizer = load_tokenizer(base)
        train_dataset, eval_dataset, data_collator, summary = prepare_data(cfg, tokenizer)
    n_eval = summary.get("eval_samples", len(eval_dataset) if eval_dataset is not None else 0)
    plan = make_plan(cfg, summary.get("train_samples", len(train_dataset)), n_eval, base_model=base,
                     template_source=summary.get("template_source", ""))
    return Prepared(base, tokenizer, train_dataset, eval_dataset, data_collator, summary, plan)


def run_training(cfg: TrainConfig, *, model=None, tokenizer=None, train_dataset=None, eval_dataset=None,
                 data_collator=None, callbacks=(), data_summary: dict | None = None) -> TrainResult:
    """Train a LoRA adapter per cfg; model/tokenizer/datasets/collator may be given (notebooks, tests).

    Everything but the model is checked first (prepare_run) and the plan printed before the model loads.
    """
    out = output_dir_of(cfg)
    rank0 = int(os.environ.get("RANK", "0")) == 0
    from labkit.paths import writable_folder

    writable_folder(out, "--output_dir")  # a read-only / full disk is named now, not after training
    resume = _resume_point(cfg, out, rank0)
    prep = prepare_run(cfg, model=model, tokenizer=tokenizer, train_dataset=train_dataset,
                       eval_dataset=eval_dataset, data_collator=data_collator, data_summary=data_summary)
    if rank0:
        for line in prep.plan.lines():
            notice(line)
    report_to = reporters(cfg, out) if rank0 else [n for n in cfg.report_targets if n != "wandb"]
    _prepare_resume(resume, out, rank0)
    return _train(cfg, out, prep, resume, report_to, model=model, callbacks=callbacks)


def _train(cfg: TrainConfig, out: Path, prep: Prepared, resume, report_to, *, model, callbacks) -> TrainResult:
    """Load (if needed), attach LoRA, train, save, verify; the plan goes into labkit_train.json."""
    from transformers import set_seed

    from labkit.train.callbacks import FaultCallback, LabkitTrainer, adapter_change, trainable_snapshot

    plan, summary, eval_dataset = prep.plan, prep.summary, prep.eval_dataset
    set_seed(cfg.seed)
    if model is None:
        model, _ = load_base(cfg, prep.base)
    model = add_lora(model, cfg)
    plan.lora_targets = _lora_targets(model)
    from labkit.env.threads import configure_threads
    from labkit.train.batching import speed_arguments

    configure_threads()  # threads = CPUs really free (affinity, cgroup quota, other processes' load)
    args = speed_arguments(cfg, training_arguments(cfg, out, report_to))  # bf16 autocast where the CPU has it
    trainer = LabkitTrainer(model=model, args=args, train_dataset=prep.train_dataset, eval_dataset=eval_dataset,
                            data_collator=prep.data_collator, callbacks=[FaultCallback(), *callbacks])
    before = trainable_snapshot(model)
    t0 = time.perf_counter()
    train_out = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - t0
    change = adapter_change(model, before)
    if trainer.state.max_steps != plan.planned_steps and trainer.is_world_process_zero():
        warn(f"the trainer ran a schedule of {trainer.state.max_steps} optimizer steps where the plan says "
             f"{plan.planned_steps} ({plan.train_samples} samples, {plan.samples_per_step} per step): steps are "
             "not counted in samples on this path")
    metrics = dict(train_out.metrics)
    metrics.update(train_seconds=round(seconds, 3), trained_tokens=trainer.label_tokens,
                   train_tokens_per_s=round(trainer.label_tokens / max(seconds, 1e-9), 1),
                   global_step=trainer.state.global_step, adapter_change=change,
                   resumed_from=str(resume) if resume else None, planned_steps=plan.planned_steps)
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    if losses:
        metrics["final_train_loss"] = losses[-1]
        metrics["first_train_loss"] = losses[0]
    if eval_dataset is not None:
        metrics.update(trainer.evaluate())
    if not change["changed"]:
        warn(f"the adapter did not change during training ({change['unchanged']} of {change['tensors']} tensors "
             "identical): check learning_rate, targets and that labels are not all -100")
    plot = _save(trainer, cfg, out, plan, metrics, summary)
    return TrainResult(output_dir=out, metrics=metrics, log_history=list(trainer.state.log_history),
                       loss_plot=plot, resumed_from=resume, data_summary=summary)


def _lora_targets(model) -> list[str]:
    """Short names of the modules that carry LoRA weights."""
    names = []
    for full, _ in model.named_parameters():
        if ".lora_A." in full:
            short = full.split(".lora_A.")[0].split(".")[-1]
            if short not in names:
                names.append(short)
    return names


def _save(trainer, cfg: TrainConfig, out: Path, plan, metrics: dict, summary: dict) -> Path | None:
    """Rank 0: final adapter (verified), trainer state, labkit_train.json (config + plan), loss plot, metrics."""
    if not trainer.is_world_process_zero():
        return None
    from labkit.train.plots import plot_loss

    trainer.save_model(str(out))  # final adapter (best one with load_best_model_at_end)
    trainer.save_state()
    metrics["adapter_check"] = _verify(out)
    cfg.save(out / CONFIG_FILE, plan=plan.to_dict())
    plot = None
    if cfg.plot_loss:
        import matplotlib.pyplot as plt

        fig = plot_loss(trainer.state.log_history, out / PLOT_FILE, title=f"loss: {out.name}")
        plt.close(fig)
        plot = out / PLOT_FILE
    metrics["data"] = summary
    (out / METRICS_FILE).write_text(json.dumps(_jsonable(metrics), indent=2, ensure_ascii=False) + "\n",
                                    encoding="utf-8")
    return plot


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

"""LLaMA-Factory SFT + LoRA settings (its YAML, or `--stage`/`--template` command lines) -> TrainConfig values."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from labkit.config import closest
from labkit.errors import LabkitError

# LLaMA-Factory's own defaults (its hparams + HF TrainingArguments) for what a config leaves out.
LF_DEFAULTS: dict[str, Any] = {
    "dialect": "llamafactory", "num_epochs": 3.0, "learning_rate": 5e-5, "lr_scheduler_type": "linear",
    "per_device_train_batch_size": 8, "per_device_eval_batch_size": 8, "gradient_accumulation_steps": 1,
    "logging_steps": 500, "save_steps": 500, "cutoff_len": 2048, "lora_r": 8, "lora_dropout": 0.0,
    "lora_target": "all", "train_on_inputs": False, "plot_loss": False, "precision": "fp32", "dataset_dir": "data",
    "val_set_size": 0, "warmup_steps": 0, "report_to": "none", "save_total_limit": None,
}
# LF key -> (TrainConfig field, type). Values are converted to the type (command lines give strings).
DIRECT: dict[str, tuple[str, type]] = {
    "model_name_or_path": ("base_model", str), "dataset": ("datasets", str), "dataset_dir": ("dataset_dir", str),
    "template": ("template", str), "cutoff_len": ("cutoff_len", int), "max_samples": ("max_samples", int),
    "val_size": ("val_set_size", float), "output_dir": ("output_dir", str), "logging_steps": ("logging_steps", int),
    "save_steps": ("save_steps", int), "save_strategy": ("save_strategy", str),
    "save_total_limit": ("save_total_limit", int), "plot_loss": ("plot_loss", bool),
    "overwrite_output_dir": ("overwrite_output_dir", bool), "report_to": ("report_to", str),
    "run_name": ("run_name", str), "per_device_train_batch_size": ("per_device_train_batch_size", int),
    "per_device_eval_batch_size": ("per_device_eval_batch_size", int),
    "gradient_accumulation_steps": ("gradient_accumulation_steps", int), "learning_rate": ("learning_rate", float),
    "num_train_epochs": ("num_epochs", float), "max_steps": ("max_steps", int),
    "lr_scheduler_type": ("lr_scheduler_type", str), "warmup_ratio": ("warmup_ratio", float),
    "warmup_steps": ("warmup_steps", int), "weight_decay": ("weight_decay", float),
    "max_grad_norm": ("max_grad_norm", float), "seed": ("seed", int), "eval_strategy": ("eval_strategy", str),
    "evaluation_strategy": ("eval_strategy", str), "eval_steps": ("eval_steps", int),
    "load_best_model_at_end": ("load_best_model_at_end", bool), "lora_rank": ("lora_r", int),
    "lora_alpha": ("lora_alpha", float), "lora_dropout": ("lora_dropout", float), "lora_target": ("lora_target", str),
    "resume_from_checkpoint": ("resume_from_checkpoint", str), "train_on_prompt": ("train_on_inputs", bool),
    "dataloader_num_workers": ("dataloader_num_workers", int), "disable_tqdm": ("disable_tqdm", bool),
    "lenient": ("lenient", bool),
}
# Accepted and without effect here (caches, workers, timeouts: labkit tokenizes in memory).
HARMLESS = {"overwrite_cache", "preprocessing_num_workers", "preprocessing_batch_size", "ddp_timeout",
            "logging_first_step", "use_fast_tokenizer", "ignore_pad_token_for_loss", "flash_attn",
            "disable_gradient_checkpointing", "low_cpu_mem_usage", "print_param_status", "do_eval", "cache_dir",
            "save_safetensors", "ddp_find_unused_parameters", "optim", "double_quantization", "quantization_type",
            "quantization_method", "upcast_layernorm", "logging_dir"}
HANDLED = {"stage", "do_train", "do_predict", "finetuning_type", "bf16", "fp16", "quantization_bit",
           "trust_remote_code", "save_only_model", "packing", "neat_packing"}
MULTIMODAL = {"image_max_pixels", "image_min_pixels", "image_do_pan_and_scan", "crop_to_patches", "video_max_pixels",
              "video_min_pixels", "video_fps", "video_maxlen", "use_audio_in_video", "audio_sampling_rate",
              "freeze_vision_tower", "freeze_multi_modal_projector", "freeze_language_model", "media_dir",
              "image_dir"}
# Known LF keys that change what is trained in ways labkit does not implement.
UNSUPPORTED = {
    "eval_dataset": "held-out data comes from val_size", "mask_history": "every turn is trained",
    "deepspeed": "use torchrun / accelerate launch (README: Multi-node)", "use_dora": "plain LoRA only",
    "use_rslora": "plain LoRA only", "pissa_init": "plain LoRA only", "loraplus_lr_ratio": "plain LoRA only",
    "additional_target": "LoRA modules only", "use_galore": "LoRA only", "use_apollo": "LoRA only",
    "use_badam": "LoRA only", "use_llama_pro": "LoRA only", "adapter_name_or_path": "start from the base model "
    "(--resume_from_checkpoint continues a labkit run)", "tool_format": "tool calls are refused",
    "streaming": "datasets are read into memory", "tokenized_path": "labkit tokenizes every run",
    "mix_strategy": "datasets are concatenated", "interleave_probs": "datasets are concatenated",
    "rope_scaling": "the base's own position encoding only", "use_unsloth": "HF Trainer + peft only",
    "enable_liger_kernel": "HF Trainer + peft only", "default_system": "set the system prompt in the data",
}
STAGES_OK = ("sft",)
REPORTERS = ("none", "tensorboard", "wandb")
_BOOL = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def known_keys() -> list[str]:
    """Every LF key labkit recognises (taken, or refused with a reason)."""
    return sorted(set(DIRECT) | HARMLESS | HANDLED | MULTIMODAL | set(UNSUPPORTED))


def supported_keys() -> list[str]:
    """The LF keys labkit takes."""
    return sorted(set(DIRECT) | HARMLESS | HANDLED)


def _coerce(value: Any, tp: type, key: str, source: str) -> Any:
    """A YAML value or a command-line string as `tp`; LabkitError naming the key otherwise."""
    bad = LabkitError(f"{source}: {key}: expected {tp.__name__}, got {value!r}; fix the value")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _BOOL:
            return _BOOL[value.lower()]
        raise bad
    if tp is str:
        if isinstance(value, (list, tuple)):
            return ",".join(str(v).strip() for v in value)
        if isinstance(value, bool) or value is None:
            raise bad
        return str(value).strip()
    if isinstance(value, bool):
        raise bad
    try:
        num = float(value)
    except (TypeError, ValueError):
        raise bad from None
    if tp is int:
        if not num.is_integer():
            raise bad
        return int(num)
    return num


def _refuse_unsupported(key: str, value: Any, source: str) -> None:
    if key in MULTIMODAL:
        raise LabkitError(f"{source}: {key}: multimodal training is not supported; labkit trains text-only "
                          "LLaMA / Baichuan models (remove the key)")
    if key in UNSUPPORTED and value not in (None, False, "", 0):
        raise LabkitError(f"{source}: {key}: not supported ({UNSUPPORTED[key]}); remove the key")


def _handled(key: str, value: Any, out: dict, notices: list[str], source: str) -> None:
    """Keys whose value selects a mode: refused unless labkit does exactly that."""
    if key == "stage":
        if str(value) not in STAGES_OK:
            raise LabkitError(f"{source}: stage: {value}: not supported; labkit train does supervised fine-tuning "
                              f"(stage: {', '.join(STAGES_OK)}), not pt/rm/ppo/dpo/kto")
    elif key == "finetuning_type":
        if str(value) != "lora":
            raise LabkitError(f"{source}: finetuning_type: {value}: not supported; labkit trains LoRA adapters "
                              "(finetuning_type: lora), not full/freeze/oft")
    elif key == "do_train":
        if not _coerce(value, bool, key, source):
            raise LabkitError(f"{source}: do_train: false: nothing to do; `labkit train` trains (set do_train: true)")
    elif key == "do_predict":
        if _coerce(value, bool, key, source):
            raise LabkitError(f"{source}: do_predict: not supported by labkit train; use `labkit generate`")
    elif key in ("bf16", "fp16"):
        if _coerce(value, bool, key, source):
            out["_amp"] = key
    elif key == "quantization_bit":
        if value is not None:
            bits = _coerce(value, int, key, source)
            if bits not in (4, 8):
                raise LabkitError(f"{source}: quantization_bit: {value}: only 8 (int8) and 4 (nf4) are supported")
            out["_quant"] = "int8" if bits == 8 else "nf4"
    elif key == "trust_remote_code":
        if _coerce(value, bool, key, source):
            notices.append("trust_remote_code: true accepted and not honoured: labkit never runs a model's remote "
                           "code (LLaMA and Baichuan are implemented natively)")
    elif key == "save_only_model":
        if _coerce(value, bool, key, source):
            notices.append("save_only_model: true ignored: labkit checkpoints keep the optimizer state so "
                           "--resume_from_checkpoint continues exactly")
    elif key in ("packing", "neat_packing") and value is not None:
        out["packing"] = _coerce(value, bool, key, source)
        if out["packing"]:
            notices.append(f"{key}: true: labkit packs rows but keeps the samples of each optimizer step; "
                           "LLaMA-Factory counts packed rows as samples, so its step count differs")


def _report_to(value: Any, source: str) -> str:
    names = value if isinstance(value, (list, tuple)) else str(value).split(",")
    names = [str(n).strip() for n in names if str(n).strip()]
    for n in names:
        if n not in REPORTERS:
            raise LabkitError(f"{source}: report_to: {n}: not supported; use {', '.join(REPORTERS)}")
    return ",".join(names) or "none"


def lf_values(data: Mapping[str, Any], source: str) -> tuple[dict, list[str]]:
    """LF keys -> (TrainConfig values, notices). Unknown keys name the closest; unsupported values are refused."""
    out: dict[str, Any] = dict(LF_DEFAULTS)
    notices: list[str] = []
    valid = known_keys()
    for key, value in data.items():
        if key not in valid:
            hint = closest(str(key), valid)
            raise LabkitError(f"{source}: unknown key {key!r}" + (f" (did you mean {hint!r}?)" if hint else "")
                              + "; `labkit train --help` lists the LLaMA-Factory keys labkit takes")
        _refuse_unsupported(key, value, source)
        if key in HANDLED:
            _handled(key, value, out, notices, source)
        elif key in DIRECT and value is not None:
            name, tp = DIRECT[key]
            out[name] = _report_to(value, source) if key == "report_to" else _coerce(value, tp, key, source)
    if "lora_alpha" not in out:
        out["lora_alpha"] = 2 * out["lora_r"]  # LLaMA-Factory: lora_alpha defaults to lora_rank * 2
    idle = sorted(k for k in data if k in HARMLESS)
    if idle:
        notices.append(f"accepted without effect here: {', '.join(idle)} (labkit tokenizes in memory, one process "
                       "per device)")
    _require(out, data, source)
    return out, notices


def _require(out: dict, data: Mapping[str, Any], source: str) -> None:
    if data.get("model_name_or_path") is None:
        raise LabkitError(f"{source}: model_name_or_path: missing; name the base model folder (or tiny-llama / "
                          "tiny-baichuan)")
    if not data.get("dataset"):
        raise LabkitError(f"{source}: dataset: missing; name the datasets of dataset_dir/dataset_info.json to "
                          "train on (e.g. dataset: alpaca_en_demo)")
    if not data.get("template"):
        from labkit.data.templates import template_names

        names = [n.split("/", 1)[1] for n in template_names("llamafactory")]
        raise LabkitError(f"{source}: template: missing; LLaMA-Factory needs the chat template of the model, "
                          f"e.g. template: llama3 (its names here: {', '.join(names)})")
    if out.get("eval_strategy", "no") != "no" and not out.get("val_set_size"):
        raise LabkitError(f"{source}: eval_strategy: {out['eval_strategy']} needs held-out data; set val_size "
                          "(e.g. 0.1) or eval_strategy: no")


def read_yaml(path: str | Path) -> dict:
    """The mapping of an LF config file; LabkitError naming the file when it cannot be used."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise LabkitError(f"{path}: no such file; pass the path of a LLaMA-Factory YAML config")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as err:
        raise LabkitError(f"{path}: not valid UTF-8 (byte {err.start}); save it as UTF-8") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise LabkitError(f"{path}: invalid YAML{where}: {getattr(err, 'problem', err)}; fix the file") from None
    if not isinstance(data, dict):
        raise LabkitError(f"{path}: expected a mapping of key: value (LLaMA-Factory config), got "
                          f"{type(data).__name__}")
    return data


def overrides(argv: list[str], source: str) -> dict:
    """`key=value` and `--key value` / `--key=value` after the config file (values as strings)."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok.startswith("--"):
            key, eq, val = tok[2:].partition("=")
            if not eq:
                if i + 1 < len(argv) and not argv[i + 1].startswith("--") and "=" not in argv[i + 1]:
                    val, i = argv[i + 1], i + 1
                else:
                    val = "true"
        elif "=" in tok:
            key, _, val = tok.partition("=")
        else:
            raise LabkitError(f"{source}: unexpected argument {tok!r} after the config; use key=value or --key value")
        key = key.replace("-", "_")
        if key in out:
            raise LabkitError(f"{source}: {key} given twice after the config; keep one")
        out[key] = val
        i += 1
    return out


def config_values(path: str | Path, extra: list[str] = ()) -> tuple[dict, list[str]]:
    """TrainConfig values and notices from an LF YAML file plus command-line overrides."""
    data = read_yaml(path)
    data.update(overrides(list(extra), f"{path} (overrides)"))
    return lf_values(data, str(path))

"""Seed command lines -> TrainConfig: alpaca-lora finetune.py and LLaMA-Efficient-Tuning train_sft.py flags."""

from __future__ import annotations

import dataclasses
import os
import typing
from typing import Any, Callable

from labkit.config import unknown_key_message
from labkit.errors import LabkitError
from labkit.train.config import TrainConfig

# alpaca-lora finetune.py defaults (fire signature + its TrainingArguments call).
ALPACA_LORA_DEFAULTS: dict[str, Any] = {
    "num_epochs": 3.0, "learning_rate": 3e-4, "cutoff_len": 256, "val_set_size": 2000, "lora_r": 8,
    "lora_alpha": 16, "lora_dropout": 0.05, "lora_target": "q_proj,v_proj", "train_on_inputs": True,
    "group_by_length": False, "warmup_steps": 100, "logging_steps": 10, "save_steps": 200,
    "eval_steps": 200, "save_total_limit": 3, "lr_scheduler_type": "linear", "template": "alpaca",
    "precision": "int8",  # load_in_8bit=True, fp16=True
}
ALPACA_LORA_BATCH = (128, 4)  # batch_size, micro_batch_size
# LLaMA-Efficient-Tuning train_sft.py defaults (its FinetuningArguments + HF TrainingArguments).
LLAMA_EFFICIENT_DEFAULTS: dict[str, Any] = {
    "num_epochs": 3.0, "learning_rate": 5e-5, "lr_scheduler_type": "linear", "lora_r": 8, "lora_alpha": 32,
    "lora_dropout": 0.1, "lora_target": "q_proj,v_proj", "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 8, "logging_steps": 500, "save_steps": 500, "cutoff_len": 1024,
    "datasets": "alpaca_zh", "template": "chat", "train_on_inputs": False, "plot_loss": False,
    "precision": "fp32",
}
# LLaMA-Efficient-Tuning / LLaMA-Factory template names -> labkit templates.
TEMPLATE_ALIASES = {"default": "chat", "vanilla": "chat", "alpaca": "alpaca", "alpaca_zh": "alpaca_zh",
                    "linly": "linly", "baichuan": "baichuan", "chat": "chat"}

ALPACA_ONLY = {"base_model", "data_path", "num_epochs", "micro_batch_size", "batch_size", "val_set_size",
               "lora_target_modules", "prompt_template_name"}
LLAMA_EFFICIENT_ONLY = {"model_name_or_path", "dataset", "finetuning_type", "lora_rank", "lora_target",
                        "dev_ratio", "num_train_epochs", "quantization_bit", "prompt_template"}

_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _to_bool(text: str, flag: str) -> bool:
    if text.lower() not in _BOOL_WORDS:
        raise LabkitError(f"--{flag}: expected true/false, got {text!r}")
    return _BOOL_WORDS[text.lower()]


def _number(text: str, flag: str) -> float | int:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise LabkitError(f"--{flag}: expected a number, got {text!r}") from None


def _list_spec(text: str) -> str:
    """'[q_proj,v_proj]' / "['q_proj', 'v_proj']" / q_proj,v_proj -> 'q_proj,v_proj'."""
    inner = text.strip().strip("'\"").strip("[]")
    parts = [p.strip().strip("'\"") for p in inner.split(",")]
    return ",".join(p for p in parts if p)


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _convert(value: str | bool, tp: Any, flag: str) -> Any:
    if isinstance(value, bool):
        return value
    origin_args = typing.get_args(tp)
    if tp is bool:
        return _to_bool(value, flag)
    if tp is int or (int in origin_args and float not in origin_args):
        if value.lower() in ("none", "null") and type(None) in origin_args:
            return None
        n = _number(value, flag)
        if isinstance(n, float):
            if not n.is_integer():
                raise LabkitError(f"--{flag}: expected an integer, got {value!r}")
            n = int(n)
        return n
    if tp is float:
        return _number(value, flag)
    return value


# Flags that need more than "same name, convert the type". handler(value, state) -> None.
Handler = Callable[[Any, "_State"], None]


@dataclasses.dataclass
class _State:
    values: dict[str, Any] = dataclasses.field(default_factory=dict)
    notices: list[str] = dataclasses.field(default_factory=list)
    batch_size: int | None = None
    micro_batch_size: int | None = None
    source_len: int | None = None
    target_len: int | None = None
    fp16: bool = False
    bf16: bool = False
    quant: str | None = None


def _set(field_name: str, conv: Callable[[Any], Any] | None = None) -> tuple[Handler, bool]:
    tp = _field_types()[field_name]

    def handler(value: Any, st: _State) -> None:
        v = conv(value) if conv else _convert(value, tp, field_name)
        st.values[field_name] = v

    return handler, tp is bool


def _notice(text: str, is_bool: bool = False) -> tuple[Handler, bool]:
    def handler(value: Any, st: _State) -> None:
        st.notices.append(text.format(value=value))

    return handler, is_bool


def _template(value: str, st: _State) -> None:
    if value not in TEMPLATE_ALIASES:
        raise LabkitError(unknown_key_message(value, TEMPLATE_ALIASES, what="template"))
    if TEMPLATE_ALIASES[value] != value:
        st.notices.append(f"notice: template {value!r} -> labkit template {TEMPLATE_ALIASES[value]!r}")
    st.values["template"] = TEMPLATE_ALIASES[value]


def _finetuning_type(value: str, st: _State) -> None:
    if value != "lora":
        raise LabkitError(f"--finetuning_type {value}: labkit trains LoRA adapters only (use --finetuning_type lora)")


def _quant_bit(value: str, st: _State) -> None:
    bits = int(_number(value, "quantization_bit"))
    if bits not in (4, 8):
        raise LabkitError(f"--quantization_bit {value}: only 8 (int8) and 4 (nf4) are supported")
    st.quant = "int8" if bits == 8 else "nf4"


def _flag_attr(name: str) -> Handler:
    def handler(value: Any, st: _State) -> None:
        v = value if isinstance(value, bool) else _to_bool(value, name)
        setattr(st, name, v)

    return handler


def _int_attr(name: str) -> Handler:
    def handler(value: Any, st: _State) -> None:
        setattr(st, name, int(_number(value, name)))

    return handler


def _build_table() -> dict[str, tuple[Handler, bool]]:
    table: dict[str, tuple[Handler, bool]] = {}
    for f in dataclasses.fields(TrainConfig):
        if f.name != "extra":
            table[f.name] = _set(f.name)
    table["template"] = (_template, False)
    table["lora_target"] = _set("lora_target", _list_spec)
    table.update({
        # alpaca-lora finetune.py
        "data_path": _set("data_path"),
        "batch_size": (_int_attr("batch_size"), False),
        "micro_batch_size": (_int_attr("micro_batch_size"), False),
        "lora_target_modules": _set("lora_target", _list_spec),
        "prompt_template_name": (_template, False),
        "add_eos_token": _notice("notice: --add_eos_token {value}: labkit always ends trained responses with EOS", True),
        "wandb_project": _notice("notice: --wandb_project {value} ignored: labkit logs to the output folder (no wandb)"),
        "wandb_run_name": _notice("notice: --wandb_run_name {value} ignored (no wandb)"),
        "wandb_watch": _notice("notice: --wandb_watch {value} ignored (no wandb)"),
        "wandb_log_model": _notice("notice: --wandb_log_model {value} ignored (no wandb)"),
        # LLaMA-Efficient-Tuning train_sft.py
        "model_name_or_path": _set("base_model"),
        "dataset": _set("datasets", _list_spec),
        "do_train": _notice("", True),
        "do_eval": _notice("notice: --do_eval: labkit evaluates when --dev_ratio/--val_set_size > 0", True),
        "finetuning_type": (_finetuning_type, False),
        "lora_rank": _set("lora_r"),
        "num_train_epochs": _set("num_epochs"),
        "dev_ratio": _set("val_set_size"),
        "evaluation_strategy": _set("eval_strategy"),
        "fp16": (_flag_attr("fp16"), True),
        "bf16": (_flag_attr("bf16"), True),
        "load_8bit": (lambda v, st: setattr(st, "quant", "int8") if v is True or _to_bool(str(v), "load_8bit") else None, True),
        "load_in_8bit": (lambda v, st: setattr(st, "quant", "int8") if v is True or _to_bool(str(v), "load_in_8bit") else None, True),
        "quantization_bit": (_quant_bit, False),
        "prompt_template": (_template, False),
        "max_source_length": (_int_attr("source_len"), False),
        "max_target_length": (_int_attr("target_len"), False),
        "overwrite_cache": _notice("notice: --overwrite_cache: labkit tokenizes in memory, nothing cached", True),
        "padding_side": _notice("notice: --padding_side {value} ignored: labkit packs or pads right for training"),
        "use_fast_tokenizer": _notice("notice: --use_fast_tokenizer {value} ignored: labkit picks the tokenizer"),
        "logging_first_step": _notice("", True),
        "report_to": _notice("notice: --report_to {value} ignored: labkit logs to the output folder"),
        "ddp_find_unused_parameters": _notice("notice: --ddp_find_unused_parameters {value}: labkit always sets False for LoRA"),
        "optim": _notice("notice: --optim {value} ignored: labkit uses adamw_torch"),
    })
    return table


def unknown_flag_message(spelled: str, table) -> str:
    from labkit.config import closest

    hint = closest(spelled.lstrip("-").replace("-", "_"), table)
    msg = f"unknown flag {spelled}"
    if hint:
        msg += f" (did you mean --{hint}?)"
    return msg + "; `labkit train --help` lists the flags"


def known_flags() -> list[str]:
    return sorted(_build_table())


def _tokens(argv: list[str]) -> list[tuple[str, str | None, str]]:
    """argv -> [(normalised name, value or None, spelled flag)]; values are taken later by type."""
    out = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if not tok.startswith("--"):
            raise LabkitError(f"unexpected argument {tok!r}: labkit train takes --flag value pairs only")
        name, eq, val = tok[2:].partition("=")
        out.append((name.replace("-", "_"), val if eq else None, tok))
        i += 1
        if not eq and i < len(argv) and not argv[i].startswith("--"):
            out[-1] = (out[-1][0], argv[i], tok)
            i += 1
    return out


def parse_train_args(argv: list[str], *, on_gpu: bool | None = None, world_size: int | None = None
                     ) -> tuple[TrainConfig, list[str]]:
    """Map a pasted seed command line to a TrainConfig; returns (config, one-line notices)."""
    if on_gpu is None:
        import torch

        on_gpu = torch.cuda.is_available()
    world_size = world_size or int(os.environ.get("WORLD_SIZE", "1"))
    table = _build_table()
    toks = _tokens(argv)
    names = {n for n, _, _ in toks}
    st = _State()
    if names & ALPACA_ONLY and not names & LLAMA_EFFICIENT_ONLY:
        st.values.update(ALPACA_LORA_DEFAULTS)
        st.batch_size, st.micro_batch_size = ALPACA_LORA_BATCH
        family = "alpaca-lora finetune.py"
    elif names & LLAMA_EFFICIENT_ONLY:
        st.values.update(LLAMA_EFFICIENT_DEFAULTS)
        family = "LLaMA-Efficient-Tuning train_sft.py"
    else:
        family = "labkit"
    st.notices.append(f"notice: reading the command as {family} flags")
    alpaca_quant_default = family.startswith("alpaca")
    for name, value, spelled in toks:
        if name not in table:
            raise LabkitError(unknown_flag_message(spelled.split("=")[0], table))
        handler, is_bool = table[name]
        if value is None:
            if not is_bool:
                raise LabkitError(f"{spelled} needs a value")
            value = True
        handler(value, st)
        if name in ("precision", "quantization_bit", "load_8bit", "load_in_8bit"):
            alpaca_quant_default = False
    _finish(st, on_gpu, world_size, alpaca_quant_default)
    cfg = TrainConfig.from_dict(st.values, source="labkit train flags")
    return cfg, [n for n in st.notices if n]


def _finish(st: _State, on_gpu: bool, world_size: int, alpaca_quant_default: bool) -> None:
    v = st.values
    if st.micro_batch_size is not None:  # alpaca-lora: global batch_size, per-device micro_batch_size
        v["per_device_train_batch_size"] = st.micro_batch_size
        v.setdefault("per_device_eval_batch_size", st.micro_batch_size)
        accum = max(1, (st.batch_size or st.micro_batch_size) // st.micro_batch_size // world_size)
        v["gradient_accumulation_steps"] = accum
    if st.source_len or st.target_len:
        v["cutoff_len"] = (st.source_len or 512) + (st.target_len or 512)
        st.notices.append(f"notice: --max_source_length + --max_target_length -> cutoff_len {v['cutoff_len']}")
    if alpaca_quant_default and not on_gpu:
        v["precision"] = "fp32"
        st.notices.append("notice: alpaca-lora loads the base in 8-bit with fp16; no GPU here, so fp32 "
                          "(pass --precision int8 to force 8-bit on CPU)")
    if st.quant:
        v["precision"] = st.quant
    elif st.bf16:
        v["precision"] = "bf16"
    elif st.fp16:
        if on_gpu:
            v["precision"] = "fp16"
        else:
            v["precision"] = "fp32"
            st.notices.append("notice: --fp16 needs a CUDA GPU; training in fp32 on CPU (LoRA weights stay fp32 either way)")
    if v.get("val_set_size", 0) and "eval_strategy" not in v and st.micro_batch_size is not None:
        v["eval_strategy"] = "steps"  # alpaca-lora evaluates every eval_steps when val_set_size > 0
        v.setdefault("load_best_model_at_end", True)
    if not v.get("val_set_size"):
        if v.get("eval_strategy", "no") != "no" or v.get("load_best_model_at_end"):
            st.notices.append("notice: no held-out data (val_set_size/dev_ratio 0): evaluation and "
                              "load_best_model_at_end turned off")
        v["eval_strategy"] = "no"
        v["load_best_model_at_end"] = False
    if v.get("data_path"):
        v.pop("datasets", None)
        v["datasets"] = ""

"""Pasted command lines -> TrainConfig: the dialect (alpaca-lora, LET train_sft.py, LLaMA-Factory) and its defaults."""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import Any, Callable

from labkit.errors import LabkitError
from labkit.train.config import DIALECTS, TrainConfig

# alpaca-lora finetune.py defaults (fire signature + its TrainingArguments call).
ALPACA_LORA_DEFAULTS: dict[str, Any] = {
    "dialect": "alpaca-lora", "num_epochs": 3.0, "learning_rate": 3e-4, "cutoff_len": 256, "val_set_size": 2000,
    "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "lora_target": "q_proj,v_proj", "train_on_inputs": True,
    "add_eos_token": False, "group_by_length": False, "warmup_steps": 100, "logging_steps": 10, "save_steps": 200,
    "eval_steps": 200, "save_total_limit": 3, "lr_scheduler_type": "linear", "template": "alpaca",
    "precision": "int8",  # load_in_8bit=True, fp16=True
}
ALPACA_LORA_BATCH = (128, 4)  # batch_size, micro_batch_size
ALPACA_LORA_DATA = "yahma/alpaca-cleaned"
# LLaMA-Efficient-Tuning train_sft.py (fa06b168a) defaults: its config.py + HF Seq2SeqTrainingArguments.
LET_DEFAULTS: dict[str, Any] = {
    "dialect": "let", "num_epochs": 3.0, "learning_rate": 5e-5, "lr_scheduler_type": "linear", "lora_r": 8,
    "lora_alpha": 32, "lora_dropout": 0.1, "lora_target": "q_proj,v_proj", "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 8, "logging_steps": 500, "save_steps": 500, "max_source_length": 512,
    "max_target_length": 512, "template": "default", "train_on_inputs": False, "plot_loss": False,
    "precision": "fp32", "dataset_dir": "data", "warmup_steps": 0, "save_total_limit": None,
}
LET_DATA = "alpaca_zh"
DEFAULTS = {"alpaca-lora": ALPACA_LORA_DEFAULTS, "let": LET_DEFAULTS}
TOOL_NAMES = {"alpaca-lora": "alpaca-lora finetune.py", "let": "LLaMA-Efficient-Tuning train_sft.py",
              "llamafactory": "LLaMA-Factory", "labkit": "labkit"}

# Which flags show whose command line it is (labkit's own TrainConfig names are accepted in every dialect).
ALPACA_MARKERS = {"base_model", "data_path", "num_epochs", "micro_batch_size", "batch_size", "val_set_size",
                  "lora_target_modules", "prompt_template_name", "add_eos_token", "wandb_project", "wandb_run_name",
                  "wandb_watch", "wandb_log_model"}
LET_MARKERS = {"model_name_or_path", "dataset", "finetuning_type", "lora_rank", "lora_target", "dev_ratio",
               "num_train_epochs", "quantization_bit", "prompt_template", "max_source_length", "max_target_length",
               "do_train"}
LF_MARKERS = {"stage", "template"}
ALPACA_ONLY = {"micro_batch_size", "batch_size", "lora_target_modules", "prompt_template_name", "wandb_project",
               "wandb_run_name", "wandb_watch", "wandb_log_model", "add_eos_token"}
LET_ONLY = {"prompt_template", "dev_ratio", "max_source_length", "max_target_length"}

_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
CONFIG_SUFFIXES = (".yaml", ".yml")


def _to_bool(text: str, flag: str) -> bool:
    if text.lower() not in _BOOL_WORDS:
        raise LabkitError(f"--{flag}: expected true/false, got {text!r}; pass --{flag} true or false")
    return _BOOL_WORDS[text.lower()]


def _number(text: str, flag: str) -> float | int:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise LabkitError(f"--{flag}: expected a number, got {text!r}; pass a number") from None


def _list_spec(text: str) -> str:
    """'[q_proj,v_proj]' / "['q_proj', 'v_proj']" / q_proj,v_proj -> 'q_proj,v_proj'."""
    inner = text.strip().strip("'\"").strip("[]")
    parts = [p.strip().strip("'\"") for p in inner.split(",")]
    return ",".join(p for p in parts if p)


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
                raise LabkitError(f"--{flag}: expected an integer, got {value!r}; pass a whole number")
            n = int(n)
        return n
    if tp is float:
        return _number(value, flag)
    return value


Handler = Callable[[Any, "_State"], None]


@dataclasses.dataclass
class _State:
    values: dict[str, Any] = dataclasses.field(default_factory=dict)
    notices: list[str] = dataclasses.field(default_factory=list)
    given: dict[str, str] = dataclasses.field(default_factory=dict)  # TrainConfig field -> flag that set it
    batch_size: int | None = None
    micro_batch_size: int | None = None
    fp16: bool = False
    bf16: bool = False
    quant: str | None = None


def _set(field_name: str, conv: Callable[[Any], Any] | None = None) -> tuple[Handler, bool]:
    tp = typing.get_type_hints(TrainConfig)[field_name]

    def handler(value: Any, st: _State) -> None:
        st.values[field_name] = conv(value) if conv else _convert(value, tp, field_name)

    return handler, tp is bool


def _notice(text: str, is_bool: bool = False) -> tuple[Handler, bool]:
    def handler(value: Any, st: _State) -> None:
        if text:
            st.notices.append(text.format(value=value))

    return handler, is_bool


def _finetuning_type(value: str, st: _State) -> None:
    if value != "lora":
        raise LabkitError(f"--finetuning_type {value}: not supported; labkit trains LoRA adapters "
                          "(--finetuning_type lora)")


def _quant_bit(value: str, st: _State) -> None:
    bits = int(_number(value, "quantization_bit"))
    if bits not in (4, 8):
        raise LabkitError(f"--quantization_bit {value}: not supported; pass 8 (int8) or 4 (nf4)")
    st.quant = "int8" if bits == 8 else "nf4"


def _attr(name: str, kind: str = "bool") -> Handler:
    def handler(value: Any, st: _State) -> None:
        if kind == "bool":
            setattr(st, name, value if isinstance(value, bool) else _to_bool(value, name))
        else:
            setattr(st, name, int(_number(value, name)))

    return handler


def _load_8bit(value: Any, st: _State) -> None:
    if value is True or _to_bool(str(value), "load_8bit"):
        st.quant = "int8"


# flag -> TrainConfig field it sets (for "given twice" and "was it given" checks)
_ALIASES = {"model_name_or_path": "base_model", "dataset": "datasets", "lora_target_modules": "lora_target",
            "lora_rank": "lora_r", "num_train_epochs": "num_epochs", "dev_ratio": "val_set_size",
            "evaluation_strategy": "eval_strategy", "prompt_template": "template", "prompt_template_name": "template",
            "wandb_run_name": "run_name"}


def _build_table() -> dict[str, tuple[Handler, bool]]:
    table: dict[str, tuple[Handler, bool]] = {}
    for f in dataclasses.fields(TrainConfig):
        if f.name != "extra":
            table[f.name] = _set(f.name)
    table["lora_target"] = _set("lora_target", _list_spec)
    table.update({
        # alpaca-lora finetune.py
        "batch_size": (_attr("batch_size", "int"), False),
        "micro_batch_size": (_attr("micro_batch_size", "int"), False),
        "lora_target_modules": _set("lora_target", _list_spec),
        "prompt_template_name": _set("template"),
        "wandb_project": _set("wandb_project"),
        "wandb_run_name": _set("run_name"),
        "wandb_watch": _notice("--wandb_watch {value} ignored: wandb runs offline here, nothing is watched"),
        "wandb_log_model": _notice("--wandb_log_model {value} ignored: the adapter is in the output folder"),
        # LLaMA-Efficient-Tuning train_sft.py (and HF TrainingArguments spellings)
        "model_name_or_path": _set("base_model"),
        "dataset": _set("datasets", _list_spec),
        "do_train": _notice("", True),
        "do_eval": _notice("--do_eval: labkit evaluates when --dev_ratio/--val_set_size > 0", True),
        "finetuning_type": (_finetuning_type, False),
        "lora_rank": _set("lora_r"),
        "num_train_epochs": _set("num_epochs"),
        "dev_ratio": _set("val_set_size"),
        "evaluation_strategy": _set("eval_strategy"),
        "prompt_template": _set("template"),
        "fp16": (_attr("fp16"), True),
        "bf16": (_attr("bf16"), True),
        "load_8bit": (_load_8bit, True),
        "load_in_8bit": (_load_8bit, True),
        "quantization_bit": (_quant_bit, False),
        "overwrite_cache": _notice("--overwrite_cache: labkit tokenizes in memory, nothing cached", True),
        "padding_side": _notice("--padding_side {value} ignored: labkit packs or pads right for training"),
        "use_fast_tokenizer": _notice("--use_fast_tokenizer {value} ignored: labkit picks the tokenizer"),
        "logging_first_step": _notice("", True),
        "ddp_find_unused_parameters": _notice("--ddp_find_unused_parameters {value}: always False for LoRA here"),
        "optim": _notice("--optim {value} ignored: labkit uses adamw_torch"),
    })
    return table


def unknown_flag_message(spelled: str, table) -> str:
    from labkit.config import closest

    hint = closest(spelled.lstrip("-").replace("-", "_"), table)
    msg = f"{spelled}: unknown flag"
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
            raise LabkitError(f"{tok}: unexpected argument; labkit train takes --flag value pairs (or a "
                              "LLaMA-Factory config.yaml first)")
        name, eq, val = tok[2:].partition("=")
        out.append((name.replace("-", "_"), val if eq else None, tok.split("=")[0]))
        i += 1
        if not eq and i < len(argv) and not argv[i].startswith("--"):
            out[-1] = (out[-1][0], argv[i], out[-1][2])
            i += 1
    return out


def detect_dialect(names: set[str], explicit: str | None = None) -> str:
    """Whose command line this is: `--stage` (or `--template` among no other tool's flags) is LLaMA-Factory's,
    then LLaMA-Efficient-Tuning's flags, then alpaca-lora's; labkit otherwise. `--dialect` overrides."""
    if explicit:
        if explicit not in DIALECTS:
            raise LabkitError(f"--dialect {explicit}: unknown; choose one of {', '.join(DIALECTS)}")
        return explicit
    if "stage" in names:
        mixed = sorted(names & (ALPACA_ONLY | LET_ONLY))
        if mixed:
            raise LabkitError(f"--{mixed[0]}: not a LLaMA-Factory flag, but --stage is: flags of two tools mixed; "
                              "use one tool's flags, or --dialect labkit for labkit's own names")
        return "llamafactory"
    if "template" in names and not names & (ALPACA_MARKERS | LET_ONLY):
        return "llamafactory"
    if names & LET_MARKERS:
        mixed = sorted(names & ALPACA_ONLY)
        if mixed:
            theirs = sorted(names & LET_MARKERS)[0]
            raise LabkitError(f"--{mixed[0]}: an alpaca-lora flag among LLaMA-Efficient-Tuning flags (--{theirs}); "
                              "use one tool's flags, or --dialect labkit for labkit's own names")
        return "let"
    if names & ALPACA_MARKERS:
        return "alpaca-lora"
    return "labkit"


def parse_train_args(argv: list[str], *, on_gpu: bool | None = None, world_size: int | None = None
                     ) -> tuple[TrainConfig, list[str]]:
    """Map a pasted command line (or an LF config.yaml + overrides) to a TrainConfig; returns (config, notices)."""
    if on_gpu is None:
        import torch

        on_gpu = torch.cuda.is_available()
    world_size = world_size or int(os.environ.get("WORLD_SIZE", "1"))
    if argv and is_config_file(argv[0]):
        from labkit.train.lfconfig import config_values

        values, notices = config_values(argv[0], argv[1:])
        return _lf_config(values, notices, on_gpu, argv[0])
    toks = _tokens(argv)
    names = {n for n, _, _ in toks}
    explicit = next((v for n, v, _ in toks if n == "dialect"), None)
    dialect = detect_dialect(names, explicit)
    if dialect == "llamafactory":
        from labkit.train.lfconfig import lf_values

        data, again = {}, []
        for name, value, spelled in toks:
            if name in data:
                again.append(f"{spelled} given more than once: the last value applies")
            data[name] = True if value is None else value
        data.pop("dialect", None)
        values, notices = lf_values(data, "command line")
        return _lf_config(values, again + notices, on_gpu, "command line")
    return _flags_config(toks, dialect, on_gpu, world_size)


def _flags_config(toks, dialect: str, on_gpu: bool, world_size: int) -> tuple[TrainConfig, list[str]]:
    table = _build_table()
    st = _State()
    st.values.update(DEFAULTS.get(dialect, {}))
    st.values["dialect"] = dialect
    if dialect == "alpaca-lora":
        st.batch_size, st.micro_batch_size = ALPACA_LORA_BATCH
    st.notices.append(f"reading the command as {TOOL_NAMES[dialect]} flags"
                      + (" (its defaults apply; --dialect labkit for labkit's own)" if dialect != "labkit" else ""))
    default_quant = dialect == "alpaca-lora"
    for name, value, spelled in toks:
        if name not in table:
            raise LabkitError(unknown_flag_message(spelled, table))
        target = _ALIASES.get(name, name)
        if st.given.get(target, name) != name:
            raise LabkitError(f"{spelled}: given twice (also as --{st.given[target]}); keep one")
        if target in st.given:
            st.notices.append(f"{spelled} given more than once: the last value applies")
        st.given[target] = name
        if dialect == "let" and name == "cutoff_len":
            raise LabkitError("--cutoff_len: not a LLaMA-Efficient-Tuning flag; it truncates by "
                              "--max_source_length and --max_target_length (512 each by default)")
        handler, is_bool = table[name]
        if value is None:
            if not is_bool:
                raise LabkitError(f"{spelled}: needs a value; pass {spelled} VALUE")
            value = True
        handler(value, st)
        if name in ("precision", "quantization_bit", "load_8bit", "load_in_8bit"):
            default_quant = False
    _finish(st, on_gpu, world_size, default_quant)
    _require_data(st, dialect)
    cfg = _config(st, "labkit train flags")
    _resolve_template(cfg, _template_flag(st, dialect))
    return cfg, [n for n in st.notices if n]


def _lf_config(values: dict, notices: list[str], on_gpu: bool, source: str) -> tuple[TrainConfig, list[str]]:
    st = _State(values=values, notices=[f"reading {source} as LLaMA-Factory settings (its defaults apply)"]
                + notices)
    from labkit.train.lfconfig import DIRECT

    st.given = {name: key for key, (name, _) in reversed(DIRECT.items())}  # field -> LF key, for messages
    amp, st.quant = values.pop("_amp", None), values.pop("_quant", None)
    st.bf16, st.fp16 = amp == "bf16", amp == "fp16"
    _finish(st, on_gpu, 1, False)
    cfg = _config(st, source)
    _resolve_template(cfg, f"{source}: template" if source != "command line" else "--template")
    return cfg, st.notices


def _config(st: _State, source: str) -> TrainConfig:
    """TrainConfig of the values; a check that fails names the flag the user wrote ("--lora_rank 0: ...")."""
    import re

    try:
        return TrainConfig.from_dict(st.values, source=source)
    except LabkitError as err:
        m = re.match(r"TrainConfig\.(\w+)=(.*?): (.*)", str(err), re.S)
        if not m:
            raise
        name, value, why = m.groups()
        flag = st.given.get(name, name)
        if source.endswith((".yaml", ".yml")):
            raise LabkitError(f"{source}: {flag}: {value}: {why}") from None
        raise LabkitError(f"--{flag} {value.strip(chr(39))}: {why}") from None


def _template_flag(st: _State, dialect: str) -> str:
    flag = st.given.get("template")
    if flag:
        return "--" + flag
    return f"the default template of {TOOL_NAMES[dialect]}"


def _resolve_template(cfg: TrainConfig, where: str) -> None:
    """cfg.template -> its qualified name (unqualified names resolve by the dialect); LabkitError naming the flag."""
    from labkit.data.templates import get_template

    try:
        cfg.template = get_template(cfg.template, cfg.dialect).qualified_name
    except LabkitError as err:
        raise LabkitError(f"{where} {cfg.template!r}: {err}") from None


def _require_data(st: _State, dialect: str) -> None:
    """The tools' default datasets are not here: say so instead of training on something else."""
    v = st.values
    if dialect == "alpaca-lora" and "data_path" not in st.given and "datasets" not in st.given:
        raise LabkitError(f"--data_path: not given; alpaca-lora's default is the hub dataset {ALPACA_LORA_DATA} "
                          "(not available offline): download it and pass --data_path FILE.json")
    if dialect == "let" and "datasets" not in st.given and "data_path" not in st.given:
        raise LabkitError(f"--dataset: not given; LLaMA-Efficient-Tuning's default is {LET_DATA} (its own "
                          "data/alpaca_data_zh_51k.json, not bundled with labkit): pass --dataset NAME of "
                          "--dataset_dir/dataset_info.json")
    if dialect != "labkit" and "base_model" not in st.given:  # both tools require it
        flag = {"alpaca-lora": "--base_model", "let": "--model_name_or_path"}[dialect]
        raise LabkitError(f"{flag}: not given; pass the base model folder (or tiny-llama / tiny-baichuan)")
    if v.get("data_path"):
        v["datasets"] = ""


def _finish(st: _State, on_gpu: bool, world_size: int, default_quant: bool) -> None:
    v = st.values
    if st.micro_batch_size is not None:  # alpaca-lora: global batch_size, per-device micro_batch_size
        v["per_device_train_batch_size"] = st.micro_batch_size
        v.setdefault("per_device_eval_batch_size", st.micro_batch_size)
        accum = max(1, (st.batch_size or st.micro_batch_size) // st.micro_batch_size // world_size)
        v["gradient_accumulation_steps"] = accum
    if v.get("dialect") == "alpaca-lora" and (v.get("wandb_project") or os.environ.get("WANDB_PROJECT")):
        names = [n for n in str(v.get("report_to", "none")).split(",") if n.strip() not in ("", "none")]
        v["report_to"] = ",".join(names + ["wandb"] if "wandb" not in names else names)  # alpaca-lora's use_wandb
    if v.get("warmup_ratio") and "warmup_steps" not in v:
        v["warmup_steps"] = 0  # a ratio asked for alone replaces labkit's default warmup_steps (steps win in HF)
    if v.get("max_source_length") or v.get("max_target_length"):
        v["cutoff_len"] = v.get("max_source_length", 0) + v.get("max_target_length", 0)
    if default_quant and not on_gpu:
        v["precision"] = "fp32"
        st.notices.append("alpaca-lora loads the base in 8-bit with fp16; no GPU here, so fp32 "
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
            st.notices.append("--fp16 needs a CUDA GPU; training in fp32 on CPU (LoRA weights stay fp32 either way)")
    if v.get("val_set_size", 0) and "eval_strategy" not in v and st.micro_batch_size is not None:
        v["eval_strategy"] = "steps"  # alpaca-lora evaluates every eval_steps when val_set_size > 0
        v.setdefault("load_best_model_at_end", True)
    if not v.get("val_set_size"):
        if v.get("eval_strategy", "no") != "no" or v.get("load_best_model_at_end"):
            st.notices.append("no held-out data (val_set_size/dev_ratio 0): evaluation and "
                              "load_best_model_at_end turned off")
        v["eval_strategy"] = "no"
        v["load_best_model_at_end"] = False


def is_config_file(arg: str) -> bool:
    """A first argument naming a YAML file: `labkit train config.yaml ...`."""
    return not arg.startswith("--") and Path(arg).suffix.lower() in CONFIG_SUFFIXES

"""LoRA targeting: per-architecture presets, the seed commands' target spellings, attach (kbit too), parameter table."""

from __future__ import annotations

import re

from labkit.errors import LabkitError

PRESETS = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],  # Linly / LLaMA (alpaca-lora's full attention set)
    "baichuan": ["W_pack"],  # Baichuan-7B: q/k/v are one fused linear (LLaMA-Efficient-Tuning's --lora_target W_pack)
}
MLP = ["gate_proj", "up_proj", "down_proj"]
# every linear layer of a decoder block, per architecture (what `lora_target: all` means)
ARCH_LINEARS = {"llama": ["q_proj", "k_proj", "v_proj", "o_proj", *MLP], "baichuan": ["W_pack", "o_proj", *MLP]}


def preset_targets(arch: str, o_proj: bool = False, mlp: bool = False) -> list[str]:
    """Default LoRA targets of an architecture; for Baichuan, o_proj and the MLP can be added."""
    from labkit.models.load import arch_of

    key = arch if arch in PRESETS else arch_of(arch)
    targets = list(PRESETS[key])
    if o_proj and "o_proj" not in targets:
        targets.append("o_proj")
    if mlp:
        targets += [m for m in MLP if m not in targets]
    return targets


def parse_targets(spec) -> list[str]:
    """Target module names from the spellings seed commands use.

    `'[q_proj,v_proj,k_proj,o_proj]'`, `"['q_proj', 'v_proj']"`, `W_pack`, `q_proj,v_proj`, `q_proj v_proj`, or a list.
    Order is kept, duplicates dropped.
    """
    if spec is None:
        raise LabkitError("no LoRA target modules given (e.g. '[q_proj,v_proj]' or W_pack)")
    items = list(spec) if isinstance(spec, (list, tuple, set)) else [str(spec)]
    names: list[str] = []
    for item in items:
        for part in re.split(r"[\s,]+", str(item).strip().strip("[]()")):
            part = part.strip().strip("'\"[]()")
            if part and part not in names:
                if not re.fullmatch(r"[A-Za-z_][\w.]*", part):
                    raise LabkitError(f"LoRA target {part!r} is not a module name (from {spec!r})")
                names.append(part)
    if not names:
        raise LabkitError(f"no LoRA target modules in {spec!r} (e.g. '[q_proj,v_proj]' or W_pack)")
    return names


def linear_modules(model) -> dict[str, str]:
    """Full name -> short name of every linear layer (bitsandbytes' too), lm_head excluded."""
    import torch

    out = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not name.split(".")[-1] in ("lm_head",) and ".lora_" not in name \
                and not name.endswith("base_layer"):
            out[name] = name.split(".")[-1]
    return out


def linear_module_names(model) -> list[str]:
    """Distinct short names of the model's linear layers (what `target_modules` can name)."""
    return sorted(set(linear_modules(model).values()))


def is_all(spec) -> bool:
    """True for LLaMA-Factory's `lora_target: all` (every linear layer except lm_head)."""
    return isinstance(spec, str) and spec.strip().strip("[]'\"").strip().lower() in ("all", "all-linear")


def check_targets_for_arch(spec, arch: str, flag: str = "--lora_target") -> list[str]:
    """The targets of `spec` for an `arch` base, checked against its linear layers before the model loads."""
    valid = ARCH_LINEARS.get(arch)
    if valid is None or is_all(spec):
        return list(valid or [])
    targets = parse_targets(spec)
    bad = [t for t in targets if t.split(".")[-1] not in valid]
    if bad:
        hint = ""
        if arch == "baichuan" and any(t in ("q_proj", "k_proj", "v_proj") for t in bad):
            hint = " (Baichuan fuses q/k/v into one linear: W_pack)"
        elif arch == "llama" and "W_pack" in bad:
            hint = " (W_pack is Baichuan's fused q/k/v; LLaMA has q_proj, k_proj, v_proj)"
        raise LabkitError(f"{flag} {spec}: {', '.join(bad)} is no linear layer of this {arch} model{hint}; use "
                          f"some of {', '.join(valid)} (or all)")
    return targets


def resolve_targets(model, spec) -> list[str]:
    """Target names for `model`: `all` -> every linear layer but lm_head (in model order), else parse_targets."""
    if is_all(spec):
        names: list[str] = []
        for short in linear_modules(model).values():
            if short not in names:
                names.append(short)
        return names
    return parse_targets(spec)


def _matches(full: str, target: str) -> bool:
    return full == target or full.endswith("." + target)


def check_targets(model, targets: list[str]) -> None:
    """LabkitError if a target matches no linear module; the message lists the modules the model has."""
    full = list(linear_modules(model))
    bad = [t for t in targets if not any(_matches(f, t) for f in full)]
    if bad:
        from labkit.models.load import arch_of

        hint = ""
        try:
            arch = arch_of(model)
            if arch == "baichuan" and any(t in ("q_proj", "k_proj", "v_proj") for t in bad):
                hint = " Baichuan fuses q/k/v into one linear: target W_pack."
            elif arch == "llama" and "W_pack" in bad:
                hint = " W_pack is Baichuan's fused q/k/v; LLaMA has q_proj, k_proj, v_proj."
        except LabkitError:
            pass
        raise LabkitError(f"LoRA target module(s) {', '.join(bad)} match no linear layer of this model; "
                          f"its linear modules are: {', '.join(linear_module_names(model))}.{hint}")


def _is_quantized(model) -> bool:
    return bool(getattr(model, "is_loaded_in_8bit", False) or getattr(model, "is_loaded_in_4bit", False)
                or getattr(model, "hf_quantizer", None) is not None)


def attach_lora(model, targets=None, r: int = 8, alpha: int = 16, dropout: float = 0.05,
                gradient_checkpointing: bool = False):
    """Wrap `model` in a PeftModel with LoRA on `targets` (preset of its architecture when None).

    int8 / nf4 bases go through peft's `prepare_model_for_kbit_training` first.
    """
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from labkit.models.load import arch_of

    targets = preset_targets(arch_of(model)) if targets is None else resolve_targets(model, targets)
    if r < 1:
        raise LabkitError(f"lora_r must be >= 1, got {r}")
    check_targets(model, targets)
    if _is_quantized(model):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    cfg = LoraConfig(task_type="CAUSAL_LM", r=r, lora_alpha=alpha, lora_dropout=dropout,
                     target_modules=targets, bias="none")
    return get_peft_model(model, cfg)


def _module_type(param_name: str) -> str:
    parts = [p for p in param_name.split(".") if p not in ("default", "base_layer", "base_model", "model")]
    parts = [p for p in parts if not p.isdigit()]
    for tag in ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B"):
        if tag in parts:
            i = parts.index(tag)
            return f"{parts[i - 1]}.{tag}" if i else tag
    return parts[-2] if len(parts) >= 2 else parts[0]


def _numel(p) -> int:
    n = p.numel()
    if p.__class__.__name__ == "Params4bit":  # two 4-bit values per stored byte
        n *= 2 * getattr(getattr(p, "quant_storage", None), "itemsize", 1)
    return n


def trainable_table(model):
    """DataFrame: per module type (W_pack, W_pack.lora_A, o_proj, embed_tokens, ...) total and trainable parameters."""
    import pandas as pd

    rows: dict[str, dict] = {}
    for name, p in model.named_parameters():
        key = _module_type(name)
        row = rows.setdefault(key, {"module": key, "tensors": 0, "parameters": 0, "trainable": 0})
        n = _numel(p)
        row["tensors"] += 1
        row["parameters"] += n
        row["trainable"] += n if p.requires_grad else 0
    df = pd.DataFrame(list(rows.values()), columns=["module", "tensors", "parameters", "trainable"])
    total = pd.DataFrame([{"module": "TOTAL", "tensors": int(df["tensors"].sum()),
                           "parameters": int(df["parameters"].sum()), "trainable": int(df["trainable"].sum())}])
    df = pd.concat([df, total], ignore_index=True)
    df["trainable_%"] = (100.0 * df["trainable"] / df["parameters"].clip(lower=1)).round(4)
    return df

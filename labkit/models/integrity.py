"""Adapter integrity: a saved adapter holds A and B for every targeted module of every layer; a loaded one is applied.

Guards against the "empty adapter" bug (a ~443-byte adapter_model that holds no LoRA tensors, so the
"fine-tuned" model answers like the base) and against adapters whose keys silently do not match the model.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from labkit.errors import LabkitError

_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.(?P<ab>lora_A|lora_B)(?:\.[^.]+)?\.weight$")
_LAYER = re.compile(r"\.layers\.(\d+)\.")


def _read_adapter(folder: Path) -> tuple[dict, dict, Path]:
    cfg_path = folder / "adapter_config.json"
    if not folder.is_dir():
        raise LabkitError(f"{folder}: no such adapter folder")
    if not cfg_path.is_file():
        raise LabkitError(f"{folder}: not a LoRA adapter folder (no adapter_config.json)")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    st, pt = folder / "adapter_model.safetensors", folder / "adapter_model.bin"
    if st.is_file():
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(st))
        except Exception as err:  # noqa: BLE001 - a truncated or corrupt file
            raise LabkitError(f"{st}: unreadable adapter weights ({err})") from None
        return cfg, tensors, st
    if pt.is_file():
        import torch

        return cfg, torch.load(str(pt), map_location="cpu", weights_only=True), pt
    raise LabkitError(f"{folder}: no adapter weights (adapter_model.safetensors)")


def _targets(cfg: dict) -> list[str]:
    t = cfg.get("target_modules") or []
    if isinstance(t, str):  # a regex in peft; keep it as one pattern
        return [t]
    return sorted(t)


def _target_matches(name: str, targets: list[str], regex: bool) -> bool:
    if regex:
        return re.fullmatch(targets[0], name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def _expected_from_model(model, targets: list[str], regex: bool) -> dict[str, tuple[int, int]]:
    """module name -> (in_features, out_features) for every linear the adapter's targets select."""
    from labkit.models.lora import linear_modules

    base = model
    if hasattr(base, "get_base_model"):
        base = base.get_base_model()
    out = {}
    for name in linear_modules(base):
        if _target_matches(name, targets, regex):
            mod = base.get_submodule(name)
            mod = getattr(mod, "base_layer", mod)
            out[name] = (int(mod.in_features), int(mod.out_features))
    return out


def _expected_from_config(config, targets: list[str]) -> dict[str, tuple[int, int]]:
    """Same as _expected_from_model but from a LLaMA / Baichuan config (no weights needed)."""
    d, i, n = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    hd = getattr(config, "head_dim", None) or d // config.num_attention_heads
    kv = (getattr(config, "num_key_value_heads", None) or config.num_attention_heads) * hd
    shapes = {"self_attn.q_proj": (d, config.num_attention_heads * hd), "self_attn.k_proj": (d, kv),
              "self_attn.v_proj": (d, kv), "self_attn.o_proj": (config.num_attention_heads * hd, d),
              "mlp.gate_proj": (d, i), "mlp.up_proj": (d, i), "mlp.down_proj": (i, d)}
    if config.model_type == "baichuan":
        shapes = {k: v for k, v in shapes.items() if not k.split(".")[-1] in ("q_proj", "k_proj", "v_proj")}
        shapes["self_attn.W_pack"] = (d, 3 * d)
    out = {}
    for layer in range(n):
        for suffix, shape in shapes.items():
            name = f"model.layers.{layer}.{suffix}"
            if _target_matches(name, targets, False):
                out[name] = shape
    return out


def _base_config(cfg: dict):
    base = cfg.get("base_model_name_or_path")
    if base and (Path(base) / "config.json").is_file():
        from labkit.models.load import _config

        try:
            return _config(Path(base))
        except LabkitError:
            return None
    return None


def verify_adapter_dir(path, model=None, require_trained: bool = False) -> dict:
    """Check a saved adapter: lora_A [r, in] and lora_B [out, r] for every targeted module of every layer.

    The expected modules come from `model` when given, else from the base config named in adapter_config.json,
    else from the layers present in the file. Fails (LabkitError) on an empty adapter, missing modules, wrong
    shapes or non-finite values; with `require_trained`, also when every lora_B is still zero. Returns a summary.
    """
    import torch

    folder = Path(path)
    cfg, tensors, file = _read_adapter(folder)
    if cfg.get("peft_type", "LORA") != "LORA":
        raise LabkitError(f"{folder}: adapter type {cfg.get('peft_type')!r}, labkit checks LoRA adapters")
    r = int(cfg.get("r", 0))
    targets = _targets(cfg)
    regex = isinstance(cfg.get("target_modules"), str)
    found: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        m = _KEY.match(key)
        if m:
            found.setdefault(m.group("module"), {})[m.group("ab")] = t
    size = file.stat().st_size
    if not found:
        raise LabkitError(f"{file}: holds no LoRA tensors ({size} bytes, {len(tensors)} tensors) - the adapter was "
                          f"saved empty; its targets {targets} were never wrapped or the state dict was lost on save")
    if model is not None:
        expected = _expected_from_model(model, targets, regex)
        source = "model"
    elif (config := _base_config(cfg)) is not None and not regex:
        expected = _expected_from_config(config, targets)
        source = "base config"
    else:
        layers = sorted({int(m.group(1)) for name in found if (m := _LAYER.search(name + "."))})
        kinds = sorted({re.sub(r"^.*\.layers\.\d+\.", "", n) for n in found})
        expected = {}
        for layer in range(max(layers) + 1 if layers else 0):
            for kind in kinds:
                name = f"model.layers.{layer}.{kind}"
                shape = next(((int(v["lora_A"].shape[1]), int(v["lora_B"].shape[0])) for k, v in found.items()
                              if k.endswith("." + kind) and "lora_A" in v and "lora_B" in v), None)
                expected[name] = shape
        source = "file"
    if not expected:
        raise LabkitError(f"{folder}: target_modules {targets} select no linear layer of the base ({source})")
    missing, bad_shape, nonfinite = [], [], []
    b_nonzero = 0
    for name, shape in expected.items():
        ab = found.get(name, {})
        for part in ("lora_A", "lora_B"):
            if part not in ab:
                missing.append(f"{name}.{part}")
        if "lora_A" in ab and "lora_B" in ab and shape is not None:
            fan_in, fan_out = shape
            if tuple(ab["lora_A"].shape) != (r, fan_in):
                bad_shape.append(f"{name}.lora_A {tuple(ab['lora_A'].shape)} != {(r, fan_in)}")
            if tuple(ab["lora_B"].shape) != (fan_out, r):
                bad_shape.append(f"{name}.lora_B {tuple(ab['lora_B'].shape)} != {(fan_out, r)}")
        for part, t in ab.items():
            if not torch.isfinite(t.float()).all():
                nonfinite.append(f"{name}.{part}")
        if "lora_B" in ab and bool(ab["lora_B"].abs().sum() > 0):
            b_nonzero += 1
    extra = sorted(set(found) - set(expected))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensor(s): {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if bad_shape:
        problems.append(f"wrong shapes: {'; '.join(bad_shape[:6])}")
    if nonfinite:
        problems.append(f"non-finite values in {', '.join(nonfinite[:6])}")
    if extra:
        problems.append(f"{len(extra)} module(s) in the file that the targets do not select: {', '.join(extra[:6])}")
    if require_trained and b_nonzero == 0:
        problems.append("every lora_B is zero: the adapter is untrained and leaves the output unchanged")
    if problems:
        raise LabkitError(f"{file}: adapter check failed ({source}: {len(expected)} modules expected, targets "
                          f"{targets}, r={r}): " + "; ".join(problems))
    return {"path": str(folder), "file": file.name, "bytes": size, "r": r, "target_modules": targets,
            "modules": len(expected), "tensors": 2 * len(expected), "checked_against": source,
            "modules_with_nonzero_B": b_nonzero, "trained": b_nonzero > 0}


def load_adapter(base_model, path, check_output: bool = True, is_trainable: bool = False):
    """PeftModel.from_pretrained with checks: every adapter tensor applied (missing / unexpected keys listed,
    values equal to the file), and, where some lora_B != 0, the output differs from the base's."""
    import torch
    from peft import PeftModel

    folder = Path(path)
    summary = verify_adapter_dir(folder, model=base_model)
    _, tensors, file = _read_adapter(folder)
    model = PeftModel.from_pretrained(base_model, str(folder), is_trainable=is_trainable)
    adapter = model.active_adapter if isinstance(model.active_adapter, str) else model.active_adapters[0]
    state = {k: v for k, v in model.state_dict().items() if ".lora_" in k}
    applied = {}
    for key in tensors:
        m = _KEY.match(key)
        if not m:
            continue
        applied[key] = f"base_model.model.{m.group('module')}.{m.group('ab')}.{adapter}.weight"
    missing_in_model = sorted(k for k, mk in applied.items() if mk not in state)
    not_in_file = sorted(set(state) - set(applied.values()))
    changed = [k for k, mk in applied.items() if mk in state and
               not torch.equal(state[mk].detach().cpu().float(), tensors[k].float())]
    if missing_in_model or not_in_file or changed:
        raise LabkitError(
            f"{file}: adapter not fully applied - unexpected keys (in the file, not in the model): "
            f"{missing_in_model[:6] or 'none'}; missing keys (in the model, not in the file): {not_in_file[:6] or 'none'}; "
            f"values that differ after loading: {changed[:6] or 'none'}")
    summary["applied_tensors"] = len(applied)
    if check_output and summary["trained"]:
        summary["output_max_abs_change"] = output_change(model)
        if summary["output_max_abs_change"] <= 0.0:
            raise LabkitError(f"{file}: lora_B is non-zero but the adapter does not change the model's output "
                              f"(is it attached to the modules the forward pass uses?)")
    model.labkit_adapter_check = summary
    return model


@__import__("torch").no_grad()
def output_change(peft_model, input_ids=None) -> float:
    """Max |logits(adapter) - logits(base)| on a short probe input."""
    import torch

    cfg = peft_model.get_base_model().config
    if input_ids is None:
        gen = torch.Generator().manual_seed(0)
        input_ids = torch.randint(4, max(5, cfg.vocab_size), (1, 16), generator=gen)
    device = next(peft_model.parameters()).device
    input_ids = input_ids.to(device)
    was_training = peft_model.training
    peft_model.eval()
    with_adapter = peft_model(input_ids=input_ids).logits.float()
    with peft_model.disable_adapter():
        base = peft_model(input_ids=input_ids).logits.float()
    peft_model.train(was_training)
    return float((with_adapter - base).abs().max())

"""Merge a LoRA adapter into its base and export safetensors, checked: merged logits == base + adapter logits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from labkit.errors import LabkitError


def _probe(config, n: int = 24):
    import torch

    gen = torch.Generator().manual_seed(0)
    return torch.randint(4, max(5, config.vocab_size), (2, n), generator=gen)  # (2, n)


def merge_and_export(base_path, lora_path, output_dir, precision: str = "fp32", atol: float = 1e-4,
                     reload_check: bool = True) -> dict:
    """Load base (fp32 by default) + adapter (checked), merge, save safetensors + tokenizer into `output_dir`.

    Checks that the merged model's logits equal base+adapter within `atol` (before saving and, with
    `reload_check`, after reloading the export: LLaMA through plain transformers, Baichuan through labkit).
    Returns a summary with the measured differences.
    """
    import torch

    from labkit.models.integrity import load_adapter
    from labkit.models.load import load_model, load_tokenizer

    if precision not in ("fp32", "bf16", "fp16"):
        raise LabkitError(f"export precision {precision!r}: merge into fp32, bf16 or fp16 weights, not a quantized base")
    out = Path(output_dir).expanduser().resolve()
    base_dir, lora_dir = Path(base_path).resolve(), Path(lora_path).resolve()
    if out in (base_dir, lora_dir):
        raise LabkitError(f"--output_dir {out} is the base or adapter folder; choose a new folder")
    if out.exists() and any(out.iterdir()):
        raise LabkitError(f"{out}: output folder exists and is not empty")
    base = load_model(base_dir, precision=precision, device_map="cpu", attn_implementation="eager")
    arch = base.config.model_type
    probe = _probe(base.config)
    model = load_adapter(base, lora_dir)
    with torch.no_grad():
        ref = model(input_ids=probe).logits.float()  # (2, n, V)
    merged = model.merge_and_unload()
    with torch.no_grad():
        got = merged(input_ids=probe).logits.float()
    diff = float((got - ref).abs().max())
    if diff > atol:
        raise LabkitError(f"merged logits differ from base+adapter by {diff:.3g} (> {atol}); nothing exported")
    tmp = out.parent / f".tmp-export-{out.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    merged.config.architectures = ["BaiChuanForCausalLM" if arch == "baichuan" else "LlamaForCausalLM"]
    if hasattr(merged.config, "auto_map"):
        del merged.config.auto_map
    merged.save_pretrained(tmp, safe_serialization=True)
    try:
        load_tokenizer(base_dir).save_pretrained(tmp)
    except LabkitError:
        pass  # a base folder without tokenizer files: the export has none either
    (tmp / "labkit_export.json").write_text(json.dumps(
        {"base_model": str(base_dir), "lora_weights": str(lora_dir), "arch": arch, "precision": precision,
         "merge_max_abs_diff": diff, "adapter": model.labkit_adapter_check}, indent=1, default=str))
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    summary = {"output_dir": str(out), "arch": arch, "merge_max_abs_diff": diff,
               "adapter_output_change": model.labkit_adapter_check.get("output_max_abs_change")}
    if reload_check:
        if arch == "llama":
            from transformers import AutoModelForCausalLM

            again = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32, attn_implementation="eager")
        else:
            again = load_model(out, precision="fp32", device_map="cpu", attn_implementation="eager")
        with torch.no_grad():
            re_logits = again.eval()(input_ids=probe).logits.float()
        summary["reload_max_abs_diff"] = float((re_logits.to(ref.dtype) - ref.to(re_logits.device)).abs().max())
        if summary["reload_max_abs_diff"] > atol:
            raise LabkitError(f"{out}: reloaded export differs from base+adapter by "
                              f"{summary['reload_max_abs_diff']:.3g} (> {atol})")
    return summary

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


def _merged_bytes(base_dir: Path, precision: str) -> int:
    """About how many bytes the merged safetensors take: the base's weight files, rescaled to `precision`."""
    files = [p for p in base_dir.iterdir() if p.is_file() and p.suffix in (".safetensors", ".bin")]
    size = sum(p.stat().st_size for p in files)
    return size // 2 if precision in ("bf16", "fp16") else size


def _check_output(out: Path, base_dir: Path, lora_dir: Path, precision: str) -> None:
    """The output folder is new (or empty), not an input, and its disk is writable with room for the export."""
    from labkit.paths import writable_folder

    if out in (base_dir, lora_dir):
        raise LabkitError(f"--output_dir {out} is the base or adapter folder; choose a new folder")
    if out.is_file():
        raise LabkitError(f"--output_dir {out}: is a file; choose a new folder")
    if out.exists() and any(out.iterdir()):
        raise LabkitError(f"--output_dir {out}: output folder exists and is not empty; choose a new folder")
    writable_folder(out, "--output_dir", need_bytes=_merged_bytes(base_dir, precision) + (1 << 20))


def _save(merged, model, base_dir: Path, lora_dir: Path, tmp: Path, arch: str, precision: str, diff: float,
          load_tokenizer) -> None:
    """Merged weights (safetensors), the base's tokenizer and labkit_export.json into the fresh folder `tmp`."""
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


def merge_and_export(base_path, lora_path, output_dir, precision: str = "fp32", atol: float = 1e-4,
                     reload_check: bool = True, allow_empty: bool = False, allow_pickle: bool = False) -> dict:
    """Load base (fp32 by default) + adapter (checked), merge, save safetensors + tokenizer into `output_dir`.

    `base_path` follows labkit.models.resolve_base (a folder, or tiny-llama / tiny-baichuan). Checks that the
    merged model's logits equal base+adapter within `atol` (before saving and, with `reload_check`, after
    reloading the export: LLaMA through plain transformers, Baichuan through labkit). An adapter whose every
    lora_B is zero (a merge identical to the base) is refused unless `allow_empty`. The output is written to a
    temporary folder beside `output_dir` and renamed into place, so a failure leaves nothing half-written.
    Returns a summary with the measured differences.
    """
    import torch

    from labkit.models.integrity import load_adapter
    from labkit.models.load import load_model, load_tokenizer, model_folder, resolve_base

    if precision not in ("fp32", "bf16", "fp16"):
        raise LabkitError(f"export precision {precision!r}: merge into fp32, bf16 or fp16 weights, not a quantized base")
    out = Path(output_dir).expanduser().resolve()
    base_dir = model_folder(resolve_base(base_path))
    lora_dir = Path(lora_path).expanduser().resolve()
    _check_output(out, base_dir, lora_dir, precision)
    base = load_model(base_dir, precision=precision, device_map="cpu", attn_implementation="eager",
                      allow_pickle=allow_pickle)
    arch = base.config.model_type
    probe = _probe(base.config)
    model = load_adapter(base, lora_dir, allow_empty=allow_empty)
    with torch.no_grad():
        ref = model(input_ids=probe).logits.float()  # (2, n, V)
    merged = model.merge_and_unload()
    with torch.no_grad():
        got = merged(input_ids=probe).logits.float()
    diff = float((got - ref).abs().max())
    if diff > atol:
        raise LabkitError(f"merged logits differ from base+adapter by {diff:.3g} (> {atol}); nothing exported")
    tmp = out.parent / f".tmp-export-{out.name}"
    try:
        _save(merged, model, base_dir, lora_dir, tmp, arch, precision, diff, load_tokenizer)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except OSError as err:  # a disk that filled up or went read-only while writing
        shutil.rmtree(tmp, ignore_errors=True)
        raise LabkitError(f"--output_dir {out}: writing the export failed ({err.strerror or err}); nothing was "
                          f"exported: free space or choose another folder") from None
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

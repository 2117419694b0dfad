"""Load a model folder safely: precision (fp32/bf16/fp16/int8/nf4), device placement, no remote code, clear errors."""

from __future__ import annotations

from pathlib import Path

from labkit.errors import LabkitError

PRECISIONS = ("fp32", "bf16", "fp16", "int8", "nf4")


def arch_of(model_or_config) -> str:
    """'llama' | 'baichuan' for a model, PeftModel, config, or model folder path."""
    cfg = model_or_config
    if isinstance(cfg, (str, Path)):
        import json

        p = Path(cfg) / "config.json"
        if not p.is_file():
            raise LabkitError(f"{cfg}: not a model folder (no config.json)")
        mt = json.loads(p.read_text(encoding="utf-8")).get("model_type", "")
    else:
        while hasattr(cfg, "config") and not hasattr(cfg, "model_type"):
            cfg = cfg.config
        mt = getattr(cfg, "model_type", "")
    mt = str(mt).lower()
    if mt == "baichuan":
        return "baichuan"
    if mt == "llama":
        return "llama"
    raise LabkitError(f"unsupported model_type {mt!r}: labkit handles 'llama' and 'baichuan'")


def load_tokenizer(path):
    """A tokenizer for a model folder (stub; full version in a later commit)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def load_model(path, precision: str = "fp32", device_map=None, attn_implementation: str = "sdpa",
               allow_pickle: bool = False):
    """Load a LLaMA or Baichuan folder (stub; full version in a later commit)."""
    import torch
    from transformers import AutoModelForCausalLM

    import labkit.models  # noqa: F401  (registers baichuan)

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32,
                                                attn_implementation=attn_implementation).eval()

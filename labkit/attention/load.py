"""Models for notebook 05: a base (tiny default) and, when one exists, the LoRA adapter of notebooks 02/03."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.errors import LabkitError
from labkit.paths import resolve_adapter



@dataclass
class Loaded:
    """A model ready for attention work (eager), its tokenizer, and where they came from."""

    arch: str
    model: Any  # PreTrainedModel or PeftModel
    tokenizer: Any
    base_path: str
    adapter_path: str | None
    note: str

    @property
    def has_adapter(self) -> bool:
        return self.adapter_path is not None

    @property
    def adapter_states(self) -> tuple:
        """(True, False) with an adapter (enabled, disabled); (None,) for a bare base."""
        return (True, False) if self.has_adapter else (None,)


def _trained_base(adapter: Path | None) -> str:
    """The base a labkit adapter was trained on (labkit_train.json), if recorded."""
    if adapter is None or not (adapter / "labkit_train.json").is_file():
        return ""
    try:
        return str(json.loads((adapter / "labkit_train.json").read_text(encoding="utf-8")).get("base_model") or "")
    except (OSError, json.JSONDecodeError):
        return ""


def load_for_attention(arch: str, model_path: str = "", adapter_path: str = "", precision: str = "fp32",
                       allow_pickle: bool = False) -> Loaded:
    """Load `arch`'s base (model_path, else the adapter's recorded base, else the tiny model) with eager
    attention at `precision`, plus its adapter (not merged, so it can be switched off). `allow_pickle` reads
    pytorch_model*.bin weights (the official Baichuan-7B release) with torch.load(weights_only=True)."""
    from labkit.models import load_model, load_tokenizer

    adapter, note = resolve_adapter(arch, adapter_path)
    if adapter is None:
        note += "; showing the base model only"
    base = model_path or _trained_base(adapter)
    if base and not Path(base).is_dir():
        if model_path:
            raise LabkitError(f"{arch}_model={model_path!r}: no such folder")
        raise LabkitError(f"{adapter}/labkit_train.json: the adapter was trained on {base}, which is not a folder "
                          f"here (moved?); pass {arch}_model=<the base folder>")
    if not base:
        from labkit.models.tiny import tiny_model_path

        base = str(tiny_model_path(arch))
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # tqdm bars are widgets in a kernel: empty boxes in the HTML report
    try:
        model = load_model(base, precision=precision, attn_implementation="eager", allow_pickle=allow_pickle)
        tokenizer = load_tokenizer(base)
        if adapter is not None:
            from labkit.models.integrity import load_adapter

            model = load_adapter(model, adapter)  # refuses an empty adapter (every lora_B zero)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    model.eval()
    return Loaded(arch=arch, model=model, tokenizer=tokenizer, base_path=base,
                  adapter_path=str(adapter) if adapter is not None else None, note=f"{note}; base {base}")

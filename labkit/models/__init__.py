"""Models: tiny defaults, native Baichuan-7B (registered with the Auto classes), loading, LoRA, integrity, export."""

from __future__ import annotations

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from labkit.models.configuration_baichuan import BaiChuanConfig
from labkit.models.modeling_baichuan import BaiChuanForCausalLM, BaiChuanModel


def _register() -> None:
    """Register model_type "baichuan" with AutoConfig / AutoModel / AutoModelForCausalLM (idempotent)."""
    try:
        AutoConfig.register("baichuan", BaiChuanConfig)
    except ValueError:  # already registered (re-import)
        pass
    for auto, cls in ((AutoModel, BaiChuanModel), (AutoModelForCausalLM, BaiChuanForCausalLM)):
        try:
            auto.register(BaiChuanConfig, cls)
        except ValueError:
            pass
    # `architectures` spellings of the published configs resolve to the native class
    import transformers

    for alias in ("BaiChuanForCausalLM", "BaichuanForCausalLM"):
        if not hasattr(transformers, alias):
            setattr(transformers, alias, BaiChuanForCausalLM)


_register()

from labkit.models.load import arch_of, load_model, load_tokenizer, resolve_base  # noqa: E402

__all__ = ["BaiChuanConfig", "BaiChuanForCausalLM", "BaiChuanModel", "arch_of", "load_model", "load_tokenizer",
           "resolve_base"]

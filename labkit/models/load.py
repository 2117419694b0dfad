"""Load a model folder safely: precision (fp32/bf16/fp16/int8/nf4), device placement, no remote code, clear errors."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from labkit.errors import LabkitError

PRECISIONS = ("fp32", "bf16", "fp16", "int8", "nf4")
_ALIASES = {
    "fp32": "fp32", "float32": "fp32", "float": "fp32", "32": "fp32", "full": "fp32",
    "bf16": "bf16", "bfloat16": "bf16",
    "fp16": "fp16", "float16": "fp16", "half": "fp16", "16": "fp16",
    "int8": "int8", "8bit": "int8", "8-bit": "int8", "load_8bit": "int8", "load_in_8bit": "int8",
    "nf4": "nf4", "4bit": "nf4", "4-bit": "nf4", "load_in_4bit": "nf4",
}
SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def _config_dict(folder: Path) -> dict:
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise LabkitError(f"{folder / 'config.json'}: not valid JSON ({err})") from None


def model_folder(path) -> Path:
    """`path` as a model folder (a directory with config.json), else a LabkitError saying what it is."""
    folder = Path(os.fspath(path)).expanduser()
    if not folder.exists():
        raise LabkitError(f"{folder}: no such folder (expected a model folder with config.json and weights)")
    if not folder.is_dir():
        raise LabkitError(f"{folder}: is a file, not a model folder (pass the folder holding config.json)")
    if not (folder / "config.json").is_file():
        if (folder / "adapter_config.json").is_file():
            raise LabkitError(f"{folder}: is a LoRA adapter, not a base model (pass it as the adapter / --lora_weights)")
        raise LabkitError(f"{folder}: not a model folder (no config.json)")
    return folder.resolve()


def weights_format(folder: Path) -> str:
    """'safetensors' or 'pickle' (pytorch_model*.bin); LabkitError when no complete set of weights is there."""
    for fmt, names in (("safetensors", SAFE_WEIGHTS), ("pickle", PICKLE_WEIGHTS)):
        single, index = (folder / n for n in names)
        if single.is_file():
            return fmt
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values()))
            missing = [s for s in shards if not (folder / s).is_file()]
            if missing:
                raise LabkitError(f"{folder}: weight shard(s) listed in {index.name} are missing: {', '.join(missing)}")
            return fmt
    shards = sorted(p.name for p in folder.glob("*.safetensors")) or sorted(p.name for p in folder.glob("pytorch_model*.bin"))
    if shards:
        raise LabkitError(f"{folder}: weight shards {', '.join(shards[:4])} but no index file "
                          f"(model.safetensors.index.json / pytorch_model.bin.index.json)")
    raise LabkitError(f"{folder}: no model weights (expected model.safetensors, sharded safetensors with an index, "
                      f"or pytorch_model*.bin)")


def arch_of(model_or_config) -> str:
    """'llama' | 'baichuan' for a model, PeftModel, config, or model folder path."""
    if isinstance(model_or_config, (str, os.PathLike)):
        mt = _config_dict(model_folder(model_or_config)).get("model_type", "")
    else:
        cfg = model_or_config
        for _ in range(4):  # PeftModel -> base_model -> model -> config
            if hasattr(cfg, "model_type") and not callable(getattr(cfg, "forward", None)):
                break
            cfg = getattr(cfg, "config", None) or cfg
        mt = getattr(cfg, "model_type", "")
    mt = str(mt).lower()
    if mt in ("baichuan", "llama"):
        return mt
    raise LabkitError(f"unsupported model_type {mt!r}: labkit handles 'llama' (LLaMA, Linly) and 'baichuan' (Baichuan-7B)")


def normalize_precision(precision: str) -> str:
    key = str(precision).strip().lower()
    if key not in _ALIASES:
        raise LabkitError(f"unsupported precision / quantization {precision!r}: choose one of {', '.join(PRECISIONS)} "
                          f"(GPTQ/AWQ/int4 other than nf4 have no backend here)")
    return _ALIASES[key]


def _config(folder: Path):
    """The config object, chosen by model_type with labkit's own classes (auto_map and remote code ignored)."""
    from transformers import LlamaConfig

    from labkit.models.configuration_baichuan import BaiChuanConfig

    raw = _config_dict(folder)
    mt = str(raw.get("model_type", "")).lower()
    if not mt:  # very old folders: infer from the architecture name
        archs = " ".join(raw.get("architectures") or []).lower()
        mt = "baichuan" if "baichuan" in archs else "llama" if "llama" in archs else ""
    if mt not in ("llama", "baichuan"):
        raise LabkitError(f"{folder / 'config.json'}: model_type {raw.get('model_type')!r} is not supported "
                          f"(labkit loads 'llama' and 'baichuan')")
    qc = raw.get("quantization_config")
    if qc and qc.get("quant_method") not in (None, "bitsandbytes"):
        raise LabkitError(f"{folder / 'config.json'}: weights quantized with {qc.get('quant_method')!r}; no backend for "
                          f"it here (labkit loads fp32/bf16/fp16 weights and quantizes them with bitsandbytes)")
    cls = BaiChuanConfig if mt == "baichuan" else LlamaConfig
    cfg = cls.from_pretrained(str(folder))
    if mt == "baichuan" and hasattr(cfg, "auto_map"):
        del cfg.auto_map  # the published remote classes are never used
    return cfg


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


class _DropCastNotice:
    """bitsandbytes logs "MatMul8bitLt: inputs will be cast ..." on every int8 matmul with fp32 inputs."""

    def filter(self, record) -> bool:
        return not str(record.msg).startswith("MatMul8bitLt: inputs will be cast")


def _quantization_config(precision: str):
    import logging

    import torch

    bnb_log = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _DropCastNotice) for f in bnb_log.filters):
        bnb_log.addFilter(_DropCastNotice())

    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except Exception as err:  # noqa: BLE001 - any import failure means no backend
        raise LabkitError(f"precision {precision!r} needs bitsandbytes, which does not import here ({err})") from None
    if precision == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = torch.bfloat16 if _cuda() and torch.cuda.is_bf16_supported() else torch.float32
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute)


def default_device_map(precision: str):
    """cuda: the local rank's GPU under torchrun/accelerate, else 'auto' (spread over GPUs); no GPU: 'cpu'."""
    if not _cuda():
        return "cpu"
    if "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return {"": int(os.environ["LOCAL_RANK"])}
    return "auto"


def load_model(path, precision: str = "fp32", device_map=None, attn_implementation: str = "sdpa",
               allow_pickle: bool = False):
    """Load a LLaMA or Baichuan model folder for causal LM, never running remote code.

    precision: fp32 | bf16 | fp16 | int8 | nf4 (the last two through bitsandbytes' BitsAndBytesConfig, CPU too).
    fp16 without a GPU prints a one-line notice and uses fp32. device_map: None = automatic (see
    `default_device_map`), or anything transformers accepts. attn_implementation: "sdpa" (default) or "eager"
    (returns attention weights). Pickle weights (pytorch_model*.bin) are refused unless allow_pickle=True, and then
    read with torch.load(weights_only=True). The model is returned in eval mode; `model.labkit_load_info` says what
    was used.
    """
    import torch
    from transformers import LlamaForCausalLM

    from labkit.models.modeling_baichuan import BaiChuanForCausalLM

    folder = model_folder(path)
    fmt = weights_format(folder)
    if fmt == "pickle" and not allow_pickle:
        raise LabkitError(f"{folder}: weights are only in pickle format (pytorch_model*.bin), which can run code when "
                          f"loaded; pass allow_pickle=True to read them with torch.load(weights_only=True), or convert "
                          f"them to safetensors first")
    requested = normalize_precision(precision)
    used, notice = requested, ""
    if requested == "fp16" and not _cuda():
        used = "fp32"
        notice = "notice: fp16 needs a GPU; no GPU here, so the model is loaded in fp32 instead"
        print(notice, file=sys.stderr)
    if attn_implementation not in ("sdpa", "eager", "flash_attention_2", "flex_attention"):
        raise LabkitError(f"attn_implementation {attn_implementation!r}: use 'sdpa' or 'eager'")
    config = _config(folder)
    cls = BaiChuanForCausalLM if config.model_type == "baichuan" else LlamaForCausalLM
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}.get(used, None)
    kwargs: dict = {"config": config, "attn_implementation": attn_implementation,
                    "use_safetensors": fmt == "safetensors", "weights_only": True,
                    "device_map": device_map if device_map is not None else default_device_map(used)}
    if used in ("int8", "nf4"):
        kwargs["quantization_config"] = _quantization_config(used)
        kwargs["dtype"] = torch.bfloat16 if _cuda() else torch.float32
    else:
        kwargs["dtype"] = dtype
    try:
        model = cls.from_pretrained(str(folder), **kwargs)
    except (OSError, ValueError, KeyError) as err:
        raise LabkitError(f"{folder}: could not load the model ({type(err).__name__}: {err})") from None
    model.eval()
    model.labkit_load_info = {"path": str(folder), "arch": config.model_type, "precision_requested": requested,
                              "precision": used, "weights": fmt, "attn_implementation": attn_implementation,
                              "device": str(next(model.parameters()).device), "notice": notice}
    return model


def load_tokenizer(path):
    """The tokenizer of a LLaMA / Baichuan folder, without remote code.

    Baichuan-7B's folder (tokenizer.model + tokenizer_config.json naming BaiChuanTokenizer) gets labkit's
    sentencepiece BaiChuanTokenizer; everything else goes through AutoTokenizer (trust_remote_code=False).
    A missing pad token is set to unk (LLaMA style) or eos.
    """
    from transformers import AutoTokenizer

    from labkit.models.tokenizer_baichuan import BaiChuanTokenizer

    folder = Path(os.fspath(path)).expanduser()
    if not folder.is_dir():
        raise LabkitError(f"{folder}: not a folder holding a tokenizer")
    tc_path = folder / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text(encoding="utf-8")) if tc_path.is_file() else {}
    has_fast = (folder / "tokenizer.json").is_file()
    has_sp = (folder / "tokenizer.model").is_file()
    if not (has_fast or has_sp or (folder / "vocab.json").is_file()):
        raise LabkitError(f"{folder}: no tokenizer files (tokenizer.json or tokenizer.model)")
    cls_name = str(tc.get("tokenizer_class", "")).lower()
    is_baichuan = "baichuan" in cls_name
    if not is_baichuan and not has_fast and has_sp and (folder / "config.json").is_file():
        is_baichuan = _config_dict(folder).get("model_type") == "baichuan"
    try:
        if is_baichuan and has_sp:
            tok = BaiChuanTokenizer.from_pretrained(str(folder))
        else:
            tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise LabkitError(f"{folder}: could not load the tokenizer ({type(err).__name__}: {err})") from None
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token if tok.unk_token is not None else tok.eos_token
    return tok

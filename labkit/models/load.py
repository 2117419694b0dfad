"""Load a model folder safely: precision (fp32/bf16/fp16/int8/nf4), device placement, no remote code, clear errors."""

from __future__ import annotations

import os
from pathlib import Path

from labkit.errors import LabkitError
from labkit.log import notice

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


_REQUIRED_INTS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers", "vocab_size")
_OPTIONAL_INTS = ("num_key_value_heads", "head_dim", "max_position_embeddings")


def _read_json(path: Path, what: str) -> dict:
    from labkit.models.integrity import read_json

    return read_json(path, what)


def _config_dict(folder: Path) -> dict:
    return _read_json(folder / "config.json", "model config")


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_config(raw: dict, path: Path, model_type: str) -> None:
    """The shape fields a LLaMA / Baichuan model is built from: present, positive integers, consistent.

    Without this a config missing `hidden_size` silently takes the class default (4096) and fails later
    with a message about something else.
    """
    missing = [k for k in _REQUIRED_INTS if k not in raw]
    if missing:
        raise LabkitError(f"{path}: missing field(s) {', '.join(missing)} (a {model_type} config needs "
                          f"{', '.join(_REQUIRED_INTS)}); copy config.json again from the checkpoint's source")
    bad = [f"{k}={raw[k]!r}" for k in (*_REQUIRED_INTS, *_OPTIONAL_INTS)
           if k in raw and not (_is_count(raw[k]) or (k in _OPTIONAL_INTS and raw[k] is None))]
    if bad:
        raise LabkitError(f"{path}: {', '.join(bad)}: expected positive whole numbers; fix config.json")
    heads, kv = raw["num_attention_heads"], raw.get("num_key_value_heads") or raw["num_attention_heads"]
    if not raw.get("head_dim") and raw["hidden_size"] % heads:
        raise LabkitError(f"{path}: hidden_size {raw['hidden_size']} is not a multiple of num_attention_heads "
                          f"{heads}; fix config.json")
    if heads % kv or (model_type == "baichuan" and kv != heads):
        need = "equal to" if model_type == "baichuan" else "a divisor of"
        raise LabkitError(f"{path}: num_key_value_heads {kv} must be {need} num_attention_heads {heads}"
                          f"{' (Baichuan fuses q/k/v in W_pack)' if model_type == 'baichuan' else ''}")
    eps = raw.get("rms_norm_eps", 1e-6)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise LabkitError(f"{path}: rms_norm_eps={eps!r}: expected a small positive number such as 1e-6")


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


TINY_NAMES = {"tiny-llama": "llama", "tiny_llama": "llama", "tiny-baichuan": "baichuan", "tiny_baichuan": "baichuan"}
ARCHS = ("llama", "baichuan")


def resolve_base(spec, arch: str | None = None) -> Path:
    """The ONE rule for `--base_model` / `base_model` everywhere (train, generate, export, notebooks).

    "" (or None) -> labkit's tiny model of `arch`; "tiny-llama" / "tiny-baichuan" -> those tiny models (built
    on first use); an existing folder -> itself. Anything else (a missing path, a file, a hub id such as
    "baichuan-inc/Baichuan-7B": labkit never downloads) is a LabkitError that lists what is accepted.
    """
    accepted = ("accepted: a local model folder (config.json + weights), 'tiny-llama', 'tiny-baichuan', or '' "
                "for the tiny model of the architecture")
    text = "" if spec is None else os.fspath(spec) if isinstance(spec, os.PathLike) else str(spec)
    key = text.strip().lower()
    if key in ("", "tiny") or key in TINY_NAMES:
        tiny_arch = TINY_NAMES.get(key) or (str(arch).lower() if arch else "")
        if tiny_arch not in ARCHS:
            raise LabkitError(f"--base_model {text!r}: which tiny model? arch is {arch!r} (llama or baichuan); "
                              f"{accepted}")
        return _tiny(tiny_arch)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise LabkitError(f"--base_model {text}: is a file, not a model folder; {accepted}")
    looks_remote = "/" in text and not text.startswith((".", "/", "~")) and text.count("/") == 1
    hint = " (labkit never downloads: it looks like a hub id; download the folder yourself)" if looks_remote else ""
    raise LabkitError(f"--base_model {text}: no such folder{hint}; {accepted}")


def _tiny(arch: str) -> Path:
    """The tiny model folder, built on first use; a cache on a read-only or full disk is named, not a traceback."""
    from labkit.models.tiny import tiny_model_path
    from labkit.paths import cache_dir

    try:
        return Path(tiny_model_path(arch))
    except OSError as err:
        where = err.filename or cache_dir()
        raise LabkitError(f"{where}: cannot build the tiny {arch} model in the cache folder {cache_dir()} "
                          f"({err.strerror or err}); set LABKIT_CACHE to a writable folder") from None


def weights_format(folder: Path) -> str:
    """'safetensors' or 'pickle' (pytorch_model*.bin); LabkitError when no complete set of weights is there."""
    for fmt, names in (("safetensors", SAFE_WEIGHTS), ("pickle", PICKLE_WEIGHTS)):
        single, index = (folder / n for n in names)
        if single.is_file():
            return fmt
        if index.is_file():
            weight_map = _read_json(index, "shard index").get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise LabkitError(f"{index}: no \"weight_map\" {{tensor: shard file}} in it; copy it again")
            shards = sorted(set(map(str, weight_map.values())))
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
        folder = model_folder(model_or_config)
        mt = str(_config_dict(folder).get("model_type", "")).lower()
        if mt not in ("baichuan", "llama"):
            raise LabkitError(f"{folder / 'config.json'}: model_type {mt!r} is not supported (labkit handles "
                              f"'llama' (LLaMA, Linly) and 'baichuan' (Baichuan-7B))")
        return mt
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
                          f"(labkit loads 'llama' (LLaMA, Linly) and 'baichuan' (Baichuan-7B))")
    check_config(raw, folder / "config.json", mt)
    qc = raw.get("quantization_config")
    if qc is not None and not isinstance(qc, dict):
        raise LabkitError(f"{folder / 'config.json'}: quantization_config must be an object, found {qc!r}")
    if qc and qc.get("quant_method") not in (None, "bitsandbytes"):
        raise LabkitError(f"{folder / 'config.json'}: weights quantized with {qc.get('quant_method')!r}; no backend for "
                          f"it here (labkit loads fp32/bf16/fp16 weights and quantizes them with bitsandbytes)")
    from huggingface_hub.errors import StrictDataclassError

    cls = BaiChuanConfig if mt == "baichuan" else LlamaConfig
    try:
        cfg = cls.from_pretrained(str(folder))
    except (StrictDataclassError, ValueError, TypeError, KeyError) as err:
        detail = " ".join(str(err).split())
        raise LabkitError(f"{folder / 'config.json'}: not a usable {mt} config ({detail}); fix config.json") from None
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


def _quantization_config(precision: str, skip: list[str] | None = None):
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
    extra = {"llm_int8_skip_modules": ["lm_head", *skip]} if skip else {}  # lm_head: transformers' default skip
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute, **extra)


def nf4_cpu_blocks() -> tuple[int, int]:
    """(row block, quantization block) of bitsandbytes' CPU nf4 kernel, read from bitsandbytes itself.

    Under torch.no_grad() on CPU, bitsandbytes repacks each 4-bit weight [out, in] for its fast kernel; that
    needs out % row block == 0 (`_convert_weight_packed_for_cpu(block_n=...)`, an AssertionError otherwise)
    and in % quantization block == 0 (`Params4bit` blocksize; a reshape error otherwise). (1, 1) = no constraint
    known (a bitsandbytes without that kernel).
    """
    import inspect

    import torch

    try:
        from bitsandbytes.functional import _convert_weight_packed_for_cpu
        from bitsandbytes.nn import Params4bit

        block_n = inspect.signature(_convert_weight_packed_for_cpu).parameters["block_n"].default
        blocksize = Params4bit(torch.zeros(1), quant_type="nf4").blocksize  # not quantized until moved
        return int(block_n), int(blocksize)
    except (ImportError, KeyError, AttributeError, TypeError, ValueError):
        return 1, 1


def _linear_shapes(config) -> dict[str, tuple[int, int]]:
    """Decoder-layer linear name suffix -> (in_features, out_features) of a LLaMA / Baichuan config."""
    d, i, heads = config.hidden_size, config.intermediate_size, config.num_attention_heads
    hd = getattr(config, "head_dim", None) or d // heads
    kv = (getattr(config, "num_key_value_heads", None) or heads) * hd
    attn = {"self_attn.W_pack": (d, 3 * heads * hd)} if config.model_type == "baichuan" else \
        {"self_attn.q_proj": (d, heads * hd), "self_attn.k_proj": (d, kv), "self_attn.v_proj": (d, kv)}
    return {**attn, "self_attn.o_proj": (heads * hd, d), "mlp.gate_proj": (d, i), "mlp.up_proj": (d, i),
            "mlp.down_proj": (i, d)}


def nf4_cpu_skips(config) -> list[str]:
    """Linears that bitsandbytes' CPU nf4 kernel cannot repack (see nf4_cpu_blocks); they stay unquantized."""
    block_n, blocksize = nf4_cpu_blocks()
    return [name for name, (fan_in, fan_out) in _linear_shapes(config).items()
            if fan_out % block_n or fan_in % blocksize]


def _on_cpu(device_map) -> bool:
    if not _cuda():
        return True
    return device_map in ("cpu", {"": "cpu"}) or str(device_map) == "cpu"


def default_device_map(precision: str):
    """cuda: the local rank's GPU under torchrun/accelerate, else 'auto' (spread over GPUs); no GPU: 'cpu'."""
    if not _cuda():
        return "cpu"
    if "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return {"": int(os.environ["LOCAL_RANK"])}
    return "auto"


def readable_weights(path, allow_pickle: bool = False) -> tuple[Path, str]:
    """(model folder, weights format) of `path`; pickle weights (pytorch_model*.bin) are a LabkitError unless
    `allow_pickle` (they can run code when loaded; with it they are read with torch.load(weights_only=True))."""
    folder = model_folder(path)
    fmt = weights_format(folder)
    if fmt == "pickle" and not allow_pickle:
        raise LabkitError(f"{folder}: weights are only in pickle format (pytorch_model*.bin, e.g. the official "
                          f"Baichuan-7B release), which can run code when loaded; pass --allow_pickle "
                          f"(allow_pickle=True / allow_pickle: true in a notebook or profile) to read them with "
                          f"torch.load(weights_only=True), or convert them to safetensors first")
    return folder, fmt


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

    folder, fmt = readable_weights(path, allow_pickle)
    from labkit.models.integrity import check_model_weights

    check_model_weights(folder, fmt)
    requested = normalize_precision(precision)
    used, note = requested, ""
    if requested == "fp16" and not _cuda():
        used = "fp32"
        note = "fp16 needs a GPU; no GPU here, so the model is loaded in fp32 instead"
        notice(note)
    if attn_implementation not in ("sdpa", "eager", "flash_attention_2", "flex_attention"):
        raise LabkitError(f"attn_implementation {attn_implementation!r}: use 'sdpa' or 'eager'")
    config = _config(folder)
    cls = BaiChuanForCausalLM if config.model_type == "baichuan" else LlamaForCausalLM
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}.get(used, None)
    device_map = device_map if device_map is not None else default_device_map(used)
    kwargs: dict = {"config": config, "attn_implementation": attn_implementation,
                    "use_safetensors": fmt == "safetensors", "weights_only": True, "device_map": device_map}
    skip = nf4_cpu_skips(config) if used == "nf4" and _on_cpu(device_map) else []
    if skip:
        block_n, blocksize = nf4_cpu_blocks()
        shapes = _linear_shapes(config)
        notice(f"nf4 on CPU: {', '.join(f'{n} [{shapes[n][1]}x{shapes[n][0]}]' for n in skip)} stay unquantized "
               f"(fp32) in every layer: bitsandbytes' CPU 4-bit kernel needs out_features a multiple of {block_n} "
               f"and in_features a multiple of {blocksize}")
    if used in ("int8", "nf4"):
        kwargs["quantization_config"] = _quantization_config(used, skip)
        kwargs["dtype"] = torch.bfloat16 if _cuda() else torch.float32
    else:
        kwargs["dtype"] = dtype
    _check_generation_config(folder)
    model = _from_pretrained(cls, folder, kwargs)
    model.eval()
    model.labkit_load_info = {"path": str(folder), "arch": config.model_type, "precision_requested": requested,
                              "precision": used, "weights": fmt, "attn_implementation": attn_implementation,
                              "device": str(next(model.parameters()).device), "notice": note,
                              "unquantized": skip}
    return model


def _check_generation_config(folder: Path) -> None:
    """transformers silently skips an unreadable generation_config.json (and its eos / pad ids): say so."""
    path = folder / "generation_config.json"
    if path.is_file():
        try:
            _read_json(path, "generation config")
        except LabkitError as err:
            from labkit.log import warn

            warn(f"{err}; it is ignored, so generation uses the token ids of config.json")


def _from_pretrained(cls, folder: Path, kwargs: dict):
    """cls.from_pretrained with the errors a damaged folder can still raise turned into one LabkitError line."""
    import pickle

    from safetensors import SafetensorError

    try:
        model, info = cls.from_pretrained(str(folder), output_loading_info=True, **kwargs)
    except (OSError, ValueError, KeyError, SafetensorError, pickle.UnpicklingError, EOFError) as err:
        detail = " ".join(str(err).split())[:400]
        raise LabkitError(f"{folder}: could not load the model ({type(err).__name__}: {detail}); check that its "
                          f"weight files are complete and belong to this config.json") from None
    except RuntimeError as err:  # torch.load of a damaged archive, or weights that do not fit the config
        detail = " ".join(str(err).split())[:400]
        raise LabkitError(f"{folder}: weights do not load ({detail}); copy the weight files again, and check "
                          f"that they belong to this config.json") from None
    missing = sorted(info.get("missing_keys") or [])
    mismatched = [str(m[0]) if isinstance(m, (tuple, list)) else str(m) for m in info.get("mismatched_keys") or []]
    if missing or mismatched:  # transformers would fill these with random values and only log it
        what = f"{len(missing)} weight(s) missing from the files (e.g. {', '.join(missing[:3])})" if missing else \
            f"{len(mismatched)} weight(s) with a shape that does not fit config.json (e.g. {', '.join(mismatched[:3])})"
        raise LabkitError(f"{folder}: {what}; they would be random, so nothing is loaded: copy the weight files "
                          f"again, or fix config.json") from None
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
    tc = _read_json(tc_path, "tokenizer config") if tc_path.is_file() else {}
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
    except Exception as err:  # noqa: BLE001 - tokenizers raises bare Exception / KeyError on damaged files
        if (folder / "config.json").is_file():
            _config(folder)  # AutoTokenizer also reads config.json: a bad one is named as such
        files = ", ".join(n for n in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json") if (folder / n).is_file())
        detail = " ".join(str(err).split())[:300]
        raise LabkitError(f"{folder}: could not load the tokenizer from {files} ({type(err).__name__}: {detail}); "
                          f"copy the tokenizer files again") from None
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token if tok.unk_token is not None else tok.eos_token
    return tok

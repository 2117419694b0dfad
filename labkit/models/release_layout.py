"""Model folders laid out like the published Linly-LLaMA and Baichuan-7B releases (random weights; tests, rehearsal)."""

from __future__ import annotations

import io
import json
from pathlib import Path

# What the official Baichuan-7B folder ships besides the weights: remote code that labkit must never run.
REMOTE_CODE = 'raise RuntimeError("the published remote code must never run")\nimport xformers\n'
REMOTE_FILES = ("configuration_baichuan.py", "modeling_baichuan.py", "tokenization_baichuan.py")


def added_token(content: str) -> dict:
    """An `AddedToken` entry as the release's tokenizer_config.json spells it."""
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True, "rstrip": False,
            "single_word": False}


def bundled_texts(limit: int = 20000) -> list[str]:
    """Every string value of the bundled data files (data/*.json, *.jsonl; dataset_info.json excluded)."""
    from labkit.paths import data_dir

    out: list[str] = []

    def walk(obj) -> None:
        if isinstance(obj, str):
            if obj.strip():
                out.append(obj)
        elif isinstance(obj, dict):
            for v in obj.values():
                walk(v)
        elif isinstance(obj, list):
            for v in obj:
                walk(v)

    for path in sorted(data_dir().glob("*.json*")):
        if path.name == "dataset_info.json":
            continue
        text = path.read_text(encoding="utf-8")
        walk([json.loads(x) for x in text.splitlines() if x.strip()] if path.suffix == ".jsonl" else json.loads(text))
    return out[:limit]


def train_sentencepiece(texts: list[str], vocab_size: int, *, dummy_prefix: bool = False, pad_to: int = 0) -> bytes:
    """A BPE sentencepiece model (byte fallback, unk 0 / <s> 1 / </s> 2) trained on `texts`, as bytes.

    `vocab_size` is an upper bound: sentencepiece learns at most what the text supports. pad_to > 0 appends
    user-defined pieces (single private-use characters, never in real text) until the vocabulary has `pad_to`
    entries, so the tokenizer covers every row of a model's embedding as the real releases do.
    dummy_prefix=False is Baichuan-7B's setting, True LLaMA's.
    """
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=buf, vocab_size=vocab_size, model_type="bpe", byte_fallback=True,
        character_coverage=1.0, normalization_rule_name="identity", add_dummy_prefix=dummy_prefix,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2, hard_vocab_limit=False, max_sentence_length=16384)
    if pad_to <= 0:
        return buf.getvalue()
    proto = pb.ModelProto()
    proto.ParseFromString(buf.getvalue())
    for k in range(pad_to - len(proto.pieces)):
        proto.pieces.add(piece=chr(0xF0000 + k), score=0.0, type=pb.ModelProto.SentencePiece.USER_DEFINED)
    return proto.SerializeToString()


def baichuan_config_json(config, torch_dtype: str = "float32") -> dict:
    """config.json of the official Baichuan-7B release (auto_map, BaiChuanForCausalLM) for `config`'s shape."""
    c = config
    return {
        "architectures": ["BaiChuanForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_baichuan.BaiChuanConfig",
                     "AutoModelForCausalLM": "modeling_baichuan.BaiChuanForCausalLM"},
        "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "hidden_size": c.hidden_size,
        "initializer_range": 0.02, "intermediate_size": c.intermediate_size, "max_position_embeddings": 4096,
        "model_max_length": 4096, "model_type": "baichuan", "num_attention_heads": c.num_attention_heads,
        "num_hidden_layers": c.num_hidden_layers, "pad_token_id": 0, "rms_norm_eps": 1e-06,
        "tie_word_embeddings": False, "torch_dtype": torch_dtype, "transformers_version": "4.29.1",
        "use_cache": True, "vocab_size": c.vocab_size}


def write_official_baichuan(folder, config, state_dict: dict, sp_bytes: bytes, fmt: str = "bin") -> Path:
    """Write `folder` exactly as the official Baichuan-7B release: config.json with auto_map, remote .py files,
    `pytorch_model.bin` (fmt "bin") or `model.safetensors` (fmt "safetensors"), rotary inv_freq buffers,
    sentencepiece `tokenizer.model`, tokenizer_config.json naming BaiChuanTokenizer, special_tokens_map.json."""
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True)
    dtypes = {v.dtype for v in state_dict.values()}
    torch_dtype = "float16" if dtypes == {torch.float16} else "float32"
    (folder / "config.json").write_text(json.dumps(baichuan_config_json(config, torch_dtype), indent=2))
    (folder / "generation_config.json").write_text(json.dumps(
        {"_from_model_config": True, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
         "transformers_version": "4.29.1"}))
    for name in REMOTE_FILES:
        (folder / name).write_text(REMOTE_CODE)
    sd = dict(state_dict)
    head_dim = config.hidden_size // config.num_attention_heads
    for layer in range(config.num_hidden_layers):  # the release stores the rotary buffer too
        sd[f"model.layers.{layer}.self_attn.rotary_emb.inv_freq"] = \
            1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))  # (head_dim/2,)
    if fmt == "bin":
        torch.save(sd, folder / "pytorch_model.bin")
    else:
        from safetensors.torch import save_file

        save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "tokenizer.model").write_bytes(sp_bytes)
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "auto_map": {"AutoTokenizer": ["tokenization_baichuan.BaiChuanTokenizer", None]},
        "add_bos_token": False, "add_eos_token": False, "bos_token": added_token("<s>"),
        "clean_up_tokenization_spaces": False, "eos_token": added_token("</s>"),
        "model_max_length": 1000000000000000019884624838656, "sp_model_kwargs": {},
        "tokenizer_class": "BaiChuanTokenizer", "unk_token": added_token("<unk>")}, indent=2))
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": added_token("<s>"), "eos_token": added_token("</s>"), "unk_token": added_token("<unk>")}))
    return folder


def write_llama_folder(folder, config, state_dict: dict, sp_bytes: bytes, shards: int = 2) -> Path:
    """A transformers LLaMA folder as Linly's hub release is used today: config.json, safetensors split in
    `shards` files with model.safetensors.index.json, sentencepiece tokenizer.model + LlamaTokenizer config."""
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True)
    cfg = config.to_dict()
    cfg.update(architectures=["LlamaForCausalLM"], model_type="llama",
               torch_dtype="float16" if {v.dtype for v in state_dict.values()} == {torch.float16} else "float32")
    (folder / "config.json").write_text(json.dumps(cfg, indent=2, default=str))
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2,
                                                               "pad_token_id": 0}))
    names = list(state_dict)
    per = -(-len(names) // max(1, shards))
    weight_map, total = {}, 0
    for i in range(0, len(names), per):
        part = {k: state_dict[k].contiguous() for k in names[i:i + per]}
        shard = f"model-{i // per + 1:05d}-of-{-(-len(names) // per):05d}.safetensors"
        save_file(part, str(folder / shard), metadata={"format": "pt"})
        weight_map.update({k: shard for k in part})
        total += sum(t.numel() * t.element_size() for t in part.values())
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    write_llama_tokenizer(folder, sp_bytes, config.vocab_size)
    return folder


def write_llama_tokenizer(folder, sp_bytes: bytes, vocab_size: int) -> None:
    """LLaMA tokenizer files: sentencepiece `tokenizer.model`, and `tokenizer.json` (fast, as saved by transformers)
    padded with private-use added tokens to `vocab_size`, so every embedding row decodes to something."""
    from tokenizers import AddedToken
    from transformers import LlamaTokenizer

    folder = Path(folder)
    (folder / "tokenizer.model").write_bytes(sp_bytes)
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": added_token("<s>"), "eos_token": added_token("</s>"), "unk_token": added_token("<unk>")}))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "clean_up_tokenization_spaces": False, "legacy": True, "model_max_length": 2048,
        "tokenizer_class": "LlamaTokenizer"}, indent=2))
    tok = LlamaTokenizer.from_pretrained(str(folder))
    pad = vocab_size - len(tok)
    if pad > 0:
        tok.add_tokens([AddedToken(chr(0xF0000 + k), normalized=False, special=False) for k in range(pad)])
    tok.save_pretrained(str(folder))


def random_state_dict(model_on_meta, dtype=None, std: float = 0.02, seed: int = 0) -> dict:
    """Random weights for every parameter of a model built on the meta device: norms 1, the rest N(0, std).

    Tensors are drawn one at a time (no full fp32 copy of the model is ever held when dtype is fp16).
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, p in model_on_meta.named_parameters():
        if name.endswith("norm.weight") or "layernorm" in name:
            t = torch.ones(p.shape)
        else:
            t = torch.randn(p.shape, generator=g).mul_(std)
        out[name] = t.to(dtype) if dtype is not None else t
    return out

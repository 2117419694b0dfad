"""Mid-size LLaMA / Baichuan models (hidden 512, vocab 32000) for throughput and MFU, built like the tiny ones.

The tiny models (hidden 128) are all overhead: a benchmark on them measures Python, not matmuls. The mid
models have the shape of a small real model: `MID` below, vocabulary 32,000 (LLaMA's), untied head. Their
tokenizer is the tiny recipe's byte-level BPE (CJK characters isolated, digits split) trained on the bundled
data plus the benchmark corpora (`data/bench/`), asked for 32,000 tokens (it stops earlier when the text has
no more merges; ids past it are simply never used). Weights are random (seeded): throughput does not depend
on them. `mid_model()` builds one in memory (seconds); `mid_model_path()` saves one into the cache for
`labkit train --base_model`.
"""

from __future__ import annotations

import json
from pathlib import Path

from labkit.models import tiny
from labkit.paths import cache_dir, data_dir

MID: dict = {
    "hidden_size": 512,
    "intermediate_size": 1408,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "initializer_range": 0.02,
    "vocab_size": 32000,
}
SEEDS = {"llama": 2468, "baichuan": 8642}
MID_VERSION = 1


def _bench_texts() -> list[str]:
    texts: list[str] = []
    for f in sorted((data_dir() / "bench").glob("*.json")):
        for rec in tiny._records(f):
            texts.extend(tiny._strings(rec))
    return texts


def _hash(obj) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def _root() -> Path:
    root = cache_dir() / "mid"
    root.mkdir(parents=True, exist_ok=True)
    return root


def mid_tokenizer_path() -> Path:
    """The mid tokenizer folder (HF fast tokenizer), built if missing or its data changed."""
    from transformers import PreTrainedTokenizerFast

    key = _hash({"v": MID_VERSION, "vocab": MID["vocab_size"], "data": tiny.data_hash(),
                 "bench": [len(t) for t in _bench_texts()][:50]})

    def build(tmp: Path) -> None:
        tok = tiny._train_tokenizer(tiny.corpus_texts() + _bench_texts(), vocab_size=MID["vocab_size"])
        PreTrainedTokenizerFast(
            tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>",
            model_max_length=MID["max_position_embeddings"], padding_side="right", clean_up_tokenization_spaces=False,
        ).save_pretrained(tmp)
        (tmp / tiny.MARKER).write_text(json.dumps({"kind": "tokenizer", "vocab_size": MID["vocab_size"]}))

    return tiny._build_atomically(_root() / f"tokenizer-{key}", build)


def mid_config(arch: str, tokenizer):
    """The config of a mid model of `arch` ("llama" | "baichuan") for `tokenizer`."""
    from transformers import LlamaConfig

    from labkit.models.configuration_baichuan import BaiChuanConfig

    fields = dict(MID, vocab_size=max(MID["vocab_size"], len(tokenizer)), bos_token_id=tokenizer.bos_token_id,
                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    if arch == "llama":
        return LlamaConfig(**fields, architectures=["LlamaForCausalLM"])
    return BaiChuanConfig(**fields, architectures=["BaiChuanForCausalLM"])


def mid_model(arch: str = "llama", attn_implementation: str = "sdpa"):
    """(model, tokenizer): a randomly initialised (seeded) mid model of `arch`, in fp32, in memory."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from labkit.errors import LabkitError
    from labkit.models.modeling_baichuan import BaiChuanForCausalLM

    if arch not in tiny.ARCHS:
        raise LabkitError(f"unknown mid architecture {arch!r}: choose one of {', '.join(tiny.ARCHS)}")
    tokenizer = AutoTokenizer.from_pretrained(mid_tokenizer_path())
    config = mid_config(arch, tokenizer)
    config._attn_implementation = attn_implementation
    state = torch.random.get_rng_state()
    torch.manual_seed(SEEDS[arch])
    try:
        model = (LlamaForCausalLM if arch == "llama" else BaiChuanForCausalLM)(config)
    finally:
        torch.random.set_rng_state(state)
    return model.eval(), tokenizer


def mid_model_path(arch: str = "llama") -> Path:
    """A saved mid model of `arch` (model + tokenizer, safetensors) in the cache, built if missing."""
    key = _hash({"v": MID_VERSION, "mid": MID, "seed": SEEDS[arch], "tok": mid_tokenizer_path().name})

    def build(tmp: Path) -> None:
        model, tokenizer = mid_model(arch)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / tiny.MARKER).write_text(json.dumps({"kind": "model", "arch": arch, "mid": MID, "seed": SEEDS[arch],
                                                   "parameters": sum(p.numel() for p in model.parameters())}))

    return tiny._build_atomically(_root() / f"{arch}-{key}", build)

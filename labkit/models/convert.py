"""Weight conversion between Baichuan (fused `W_pack`, rows Q, K, V) and LLaMA (`q_proj`, `k_proj`, `v_proj`)."""

from __future__ import annotations

import re

import torch

_WPACK = re.compile(r"^(.*\.self_attn\.)W_pack\.weight$")
_QKV = re.compile(r"^(.*\.self_attn\.)(q|k|v)_proj\.weight$")


def split_w_pack(w_pack: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[3*D, D] -> (q [D, D], k [D, D], v [D, D]), rows in the published order Q, K, V."""
    if w_pack.dim() != 2 or w_pack.shape[0] != 3 * w_pack.shape[1]:
        raise ValueError(f"W_pack must be [3*hidden, hidden], got {tuple(w_pack.shape)}")
    q, k, v = w_pack.chunk(3, dim=0)
    return q.contiguous(), k.contiguous(), v.contiguous()


def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(q, k, v) each [D, D] -> W_pack [3*D, D]."""
    if not (q.shape == k.shape == v.shape):
        raise ValueError(f"q/k/v shapes differ: {tuple(q.shape)} {tuple(k.shape)} {tuple(v.shape)}")
    return torch.cat([q, k, v], dim=0).contiguous()


def baichuan_to_llama_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Baichuan state dict -> LLaMA state dict (every W_pack split into q/k/v; other names unchanged)."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        m = _WPACK.match(name)
        if m:
            q, k, v = split_w_pack(tensor)
            out[m.group(1) + "q_proj.weight"] = q
            out[m.group(1) + "k_proj.weight"] = k
            out[m.group(1) + "v_proj.weight"] = v
        elif name.endswith("rotary_emb.inv_freq"):
            continue
        else:
            out[name] = tensor
    return out


def llama_to_baichuan_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """LLaMA state dict -> Baichuan state dict (q/k/v fused into W_pack; other names unchanged)."""
    out: dict[str, torch.Tensor] = {}
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in state_dict.items():
        m = _QKV.match(name)
        if m:
            parts.setdefault(m.group(1), {})[m.group(2)] = tensor
        elif name.endswith("rotary_emb.inv_freq"):
            continue
        else:
            out[name] = tensor
    for prefix, qkv in parts.items():
        missing = {"q", "k", "v"} - set(qkv)
        if missing:
            raise ValueError(f"{prefix}: missing {sorted(missing)} projection(s) to fuse into W_pack")
        out[prefix + "W_pack.weight"] = fuse_qkv(qkv["q"], qkv["k"], qkv["v"])
    return out


def llama_config_to_baichuan(config):
    """A LlamaConfig -> the equivalent BaiChuanConfig (no grouped-query attention, no attention bias)."""
    from labkit.models.configuration_baichuan import BaiChuanConfig

    if config.num_key_value_heads != config.num_attention_heads or config.attention_bias:
        raise ValueError("only LLaMA configs without GQA and without attention bias map onto Baichuan's W_pack")
    d = config.to_dict()
    for key in ("model_type", "architectures", "transformers_version", "auto_map", "head_dim", "dtype", "torch_dtype"):
        d.pop(key, None)
    d["architectures"] = ["BaiChuanForCausalLM"]
    return BaiChuanConfig(**d)


def baichuan_config_to_llama(config):
    """A BaiChuanConfig -> the equivalent LlamaConfig."""
    from transformers import LlamaConfig

    d = config.to_dict()
    for key in ("model_type", "architectures", "transformers_version", "auto_map", "model_max_length", "dtype", "torch_dtype"):
        d.pop(key, None)
    d["architectures"] = ["LlamaForCausalLM"]
    return LlamaConfig(**d)


def baichuan_to_llama(model):
    """A BaiChuanForCausalLM -> an equivalent LlamaForCausalLM (same logits), fp32 on CPU."""
    from transformers import LlamaForCausalLM

    llama = LlamaForCausalLM(baichuan_config_to_llama(model.config))
    llama.load_state_dict(baichuan_to_llama_state_dict(model.state_dict()), strict=True)
    return llama


def llama_to_baichuan(model):
    """A LlamaForCausalLM -> an equivalent BaiChuanForCausalLM (same logits)."""
    from labkit.models.modeling_baichuan import BaiChuanForCausalLM

    sd = model.state_dict()
    bc = BaiChuanForCausalLM(llama_config_to_baichuan(model.config))
    if "lm_head.weight" not in sd:  # tied LLaMA: Baichuan's head is untied, copy it
        sd = dict(sd, **{"lm_head.weight": sd["model.embed_tokens.weight"]})
    bc.load_state_dict(llama_to_baichuan_state_dict(sd), strict=True)
    return bc

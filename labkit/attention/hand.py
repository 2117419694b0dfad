"""Attention by hand: the derivation (tokens as columns, A = Kᵀ·Q, softmax per column, O = V·A′) in plain torch.

Layout follows the derivation, not the model: an input I has shape (d, n), column j is token j.
Q = Wq·I, K = Wk·I, V = Wv·I; A = Kᵀ·Q so A[i, j] is how strongly token j's query matches key i;
softmax over each column gives A′; O = V·A′ and column j is token j's output. Real models add the
1/√d_head scale, rotary position embedding on Q and K, a causal mask, several heads concatenated and
projected by Wo. The model stores attention as (query, key), i.e. A′ᵀ; `HandLayer.attn_weights` uses
the model's layout so the two compare directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from labkit.errors import LabkitError

# ----------------------------------------------------------------------------------------------------
# 1. the derivation on a small example


@dataclass
class Derivation:
    """Every intermediate of one attention head on an input I (d, n)."""

    I: torch.Tensor  # (d, n)     columns are tokens
    Wq: torch.Tensor  # (d_k, d)
    Wk: torch.Tensor  # (d_k, d)
    Wv: torch.Tensor  # (d_v, d)
    Q: torch.Tensor  # (d_k, n)
    K: torch.Tensor  # (d_k, n)
    V: torch.Tensor  # (d_v, n)
    A: torch.Tensor  # (n, n)     A[i, j] = key i · query j (scaled, masked)
    A_prime: torch.Tensor  # (n, n)  softmax over each column; columns sum to 1
    O: torch.Tensor  # (d_v, n)   column j = token j's output

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(getattr(self, name).shape) for name in
                ("I", "Wq", "Wk", "Wv", "Q", "K", "V", "A", "A_prime", "O")}


def causal_mask_columns(n: int, dtype=torch.float32) -> torch.Tensor:
    """(n, n) additive mask in the derivation layout: key i may serve query j only if i <= j."""
    keys = torch.arange(n)[:, None]  # (n, 1)
    queries = torch.arange(n)[None, :]  # (1, n)
    return torch.zeros(n, n, dtype=dtype).masked_fill(keys > queries, float("-inf"))


def softmax_columns(A: torch.Tensor) -> torch.Tensor:
    """Softmax over each column (dim 0) of A (n_keys, n_queries)."""
    A = A - A.max(dim=0, keepdim=True).values
    E = torch.exp(A)
    return E / E.sum(dim=0, keepdim=True)


def derive(I: torch.Tensor, Wq: torch.Tensor, Wk: torch.Tensor, Wv: torch.Tensor, *,
           scale: float = 1.0, causal: bool = False) -> Derivation:
    """One head exactly as the derivation writes it (optionally scaled and causal)."""
    Q = Wq @ I  # (d_k, n)
    K = Wk @ I  # (d_k, n)
    V = Wv @ I  # (d_v, n)
    A = (K.T @ Q) * scale  # (n, n)
    if causal:
        A = A + causal_mask_columns(A.shape[0], A.dtype)
    A_prime = softmax_columns(A)  # (n, n)
    O = V @ A_prime  # (d_v, n)
    return Derivation(I=I, Wq=Wq, Wk=Wk, Wv=Wv, Q=Q, K=K, V=V, A=A, A_prime=A_prime, O=O)


def toy_example(n_tokens: int = 4, d: int = 6, seed: int = 0) -> Derivation:
    """The small example of the derivation: 4 tokens of 6 dimensions, random Wq, Wk, Wv (6, 6)."""
    g = torch.Generator().manual_seed(seed)
    I = torch.randn(d, n_tokens, generator=g)  # (6, 4)
    Wq, Wk, Wv = (torch.randn(d, d, generator=g) / math.sqrt(d) for _ in range(3))
    return derive(I, Wq, Wk, Wv)


# ----------------------------------------------------------------------------------------------------
# 2. the weights a real layer uses (LoRA merged, quantized weights dequantized, W_pack split)


def _dequantized(module: nn.Module) -> torch.Tensor:
    """Weight (out, in) of a linear layer as fp32; bitsandbytes int8/nf4 weights are dequantized."""
    weight = module.weight
    if type(weight).__name__ in ("Params4bit", "Int8Params"):
        from peft.utils.integrations import dequantize_module_weight

        weight = dequantize_module_weight(module)
    return weight.detach().to(torch.float32)


def effective_linear(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(W, b) the module applies, in fp32: for a PEFT LoRA layer W + scale·B·A per active adapter.

    Honours `disable_adapter()` (base weight only) and already-merged adapters (base weight holds them).
    """
    base = getattr(module, "base_layer", None)
    if base is None:  # plain (or quantized) Linear
        bias = module.bias.detach().float() if getattr(module, "bias", None) is not None else None
        return _dequantized(module), bias
    W, bias = effective_linear(base)
    if getattr(module, "disable_adapters", False) or getattr(module, "merged", False):
        return W, bias
    for name in module.active_adapters:
        if name not in module.lora_A:
            continue
        if getattr(module, "use_dora", {}).get(name, False):
            raise LabkitError(f"adapter {name!r} uses DoRA; the hand computation covers plain LoRA (W + scale·B·A)")
        A = module.lora_A[name].weight.detach().float()  # (r, in)
        B = module.lora_B[name].weight.detach().float()  # (out, r)
        delta = module.scaling[name] * (B @ A)  # (out, in)
        if getattr(module, "fan_in_fan_out", False):
            delta = delta.T
        W = W + delta
        lora_bias = getattr(module.lora_B[name], "bias", None)
        if lora_bias is not None:
            extra = module.scaling[name] * lora_bias.detach().float()
            bias = extra if bias is None else bias + extra
    return W, bias


def base_model(model: nn.Module) -> nn.Module:
    """The transformers model under a PeftModel (LoRA layers stay injected)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ModuleList of decoder layers (`model.layers` of LLaMA and Baichuan, also under PEFT)."""
    for name, module in base_model(model).named_modules():
        if name.split(".")[-1] == "layers" and isinstance(module, nn.ModuleList):
            return module
    raise LabkitError(f"{type(model).__name__}: no decoder layers found (expected a ModuleList named 'layers')")


def rope_inv_freq(model: nn.Module, head_dim: int) -> tuple[torch.Tensor, float]:
    """Rotary inverse frequencies (head_dim/2,) and cos/sin scaling, from the model's rope base.

    Default RoPE: inv_freq = 1 / base^(2i/d_head), computed here from the config's rope theta. For scaled
    variants (llama3, linear, ...) the model's own rotary module is read, since its table is the definition.
    """
    config = base_model(model).config
    params = getattr(config, "rope_parameters", None) or {}
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type == "default":
        theta = params.get("rope_theta", getattr(config, "rope_theta", 10000.0))
        inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).to(torch.float) / head_dim))
        return inv, 1.0
    for module in base_model(model).modules():
        if hasattr(module, "inv_freq") and hasattr(module, "attention_scaling"):
            return module.inv_freq.detach().float().cpu(), float(module.attention_scaling)
    raise LabkitError(f"rope type {rope_type!r}: no rotary module with inv_freq found in the model")


@dataclass
class LayerWeights:
    """Effective fp32 weights of one decoder layer (rows of Wq: head 0's d_head rows, then head 1's ...)."""

    arch: str  # "llama" | "baichuan"
    layer: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    Wq: torch.Tensor  # (H*dh, d)
    Wk: torch.Tensor  # (Hkv*dh, d)
    Wv: torch.Tensor  # (Hkv*dh, d)
    Wo: torch.Tensor  # (d, H*dh)
    bq: torch.Tensor | None
    bk: torch.Tensor | None
    bv: torch.Tensor | None
    bo: torch.Tensor | None
    inv_freq: torch.Tensor  # (dh/2,)
    rope_scaling: float
    norm1: torch.Tensor  # (d,) input_layernorm weight
    norm2: torch.Tensor  # (d,) post_attention_layernorm weight
    eps: float
    mlp: dict[str, torch.Tensor] = field(default_factory=dict)  # gate (f, d), up (f, d), down (d, f)
    act: str = "silu"

    def head(self, h: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Wq_h, Wk_h, Wv_h), each (dh, d); with GQA head h uses key/value head h // (H / Hkv)."""
        dh, kv = self.head_dim, h // (self.n_heads // self.n_kv_heads)
        return self.Wq[h * dh:(h + 1) * dh], self.Wk[kv * dh:(kv + 1) * dh], self.Wv[kv * dh:(kv + 1) * dh]


def _norm_eps(norm: nn.Module) -> float:
    for attr in ("variance_epsilon", "eps", "epsilon"):
        if hasattr(norm, attr):
            return float(getattr(norm, attr))
    raise LabkitError(f"{type(norm).__name__}: cannot find its epsilon")


def layer_weights(model: nn.Module, layer: int) -> LayerWeights:
    """Read one decoder layer's effective weights; Baichuan's W_pack (3*d, d) is split into rows Q, K, V."""
    layers = decoder_layers(model)
    if not 0 <= layer < len(layers):
        raise LabkitError(f"layer {layer} out of range: the model has {len(layers)} layers (0..{len(layers) - 1})")
    block = layers[layer]
    attn = block.self_attn
    config = base_model(model).config
    n_heads = config.num_attention_heads
    n_kv = getattr(config, "num_key_value_heads", None) or n_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
    if hasattr(attn, "W_pack"):
        arch = "baichuan"
        W, b = effective_linear(attn.W_pack)  # (3*d, d), rows [Q; K; V]
        q_rows, kv_rows = n_heads * head_dim, n_kv * head_dim
        Wq, Wk, Wv = torch.split(W, [q_rows, kv_rows, kv_rows], dim=0)
        bq, bk, bv = torch.split(b, [q_rows, kv_rows, kv_rows]) if b is not None else (None, None, None)
    elif hasattr(attn, "q_proj"):
        arch = "llama"
        (Wq, bq), (Wk, bk), (Wv, bv) = (effective_linear(getattr(attn, n)) for n in ("q_proj", "k_proj", "v_proj"))
    else:
        raise LabkitError(f"layer {layer}: attention {type(attn).__name__} has neither q_proj nor W_pack")
    Wo, bo = effective_linear(attn.o_proj)
    inv_freq, rope_scaling = rope_inv_freq(model, head_dim)
    mlp = {name: effective_linear(getattr(block.mlp, f"{name}_proj"))[0] for name in ("gate", "up", "down")}
    return LayerWeights(
        arch=arch, layer=layer, n_heads=n_heads, n_kv_heads=n_kv, head_dim=head_dim,
        Wq=Wq, Wk=Wk, Wv=Wv, Wo=Wo, bq=bq, bk=bk, bv=bv, bo=bo, inv_freq=inv_freq, rope_scaling=rope_scaling,
        norm1=block.input_layernorm.weight.detach().float(), norm2=block.post_attention_layernorm.weight.detach().float(),
        eps=_norm_eps(block.input_layernorm), mlp=mlp, act=getattr(config, "hidden_act", "silu"),
    )


# ----------------------------------------------------------------------------------------------------
# 3. one real layer by hand


def rms_norm_columns(X: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm of each column (token) of X (d, n): x / sqrt(mean(x²) + eps) * weight."""
    return weight[:, None] * (X * torch.rsqrt(X.pow(2).mean(dim=0, keepdim=True) + eps))


def rope_tables(positions: torch.Tensor, inv_freq: torch.Tensor, scaling: float = 1.0):
    """cos, sin of shape (dh, n): row r of token j is angle positions[j] * inv_freq[r mod dh/2]."""
    freqs = positions[:, None].float() * inv_freq[None, :].float().to(positions.device)  # (n, dh/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (n, dh)  rotate-half layout: pairs (r, r + dh/2)
    return (emb.cos() * scaling).T, (emb.sin() * scaling).T  # (dh, n) each


def rotate_half_rows(X: torch.Tensor) -> torch.Tensor:
    """(dh, n) -> (dh, n): rows [x1; x2] become [-x2; x1] (the rotate-half convention of LLaMA and Baichuan)."""
    half = X.shape[0] // 2
    return torch.cat((-X[half:], X[:half]), dim=0)


def apply_rope(X: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each column of Q or K (dh, n) by its token's position angle."""
    return X * cos + rotate_half_rows(X) * sin


@dataclass
class HeadSteps:
    """One head of a real layer, in the derivation layout."""

    head: int
    kv_head: int
    Q: torch.Tensor  # (dh, n) before RoPE
    K: torch.Tensor  # (dh, n) before RoPE
    Q_rot: torch.Tensor  # (dh, n)
    K_rot: torch.Tensor  # (dh, n)
    V: torch.Tensor  # (dh, n)
    A: torch.Tensor  # (n, n) scaled, masked scores (keys x queries)
    A_prime: torch.Tensor  # (n, n) softmax per column
    O: torch.Tensor  # (dh, n)


@dataclass
class HandLayer:
    """A decoder layer computed by hand. Model-layout tensors are (tokens, hidden)."""

    weights: LayerWeights
    I: torch.Tensor  # (d, n) normed input, columns are tokens
    heads: list[HeadSteps]
    attn_weights: torch.Tensor  # (H, n, n) model layout [head, query, key] = A′ᵀ
    attn_out: torch.Tensor  # (n, d)  Wo · concat(O_h), the attention block's output
    layer_out: torch.Tensor  # (n, d)  x + attn, then + MLP(norm(x + attn))


def _act(name: str):
    if name == "silu":
        return torch.nn.functional.silu
    from transformers.activations import ACT2FN

    return ACT2FN[name]


def hand_layer(model: nn.Module, layer: int, hidden_in: torch.Tensor,
               positions: torch.Tensor | None = None, causal: bool = True) -> HandLayer:
    """Compute decoder layer `layer` by hand on its input hidden states (n, d) or (1, n, d), in fp32."""
    x = hidden_in.detach().float()
    if x.dim() == 3:
        if x.shape[0] != 1:
            raise LabkitError(f"hand_layer takes one sample; got a batch of {x.shape[0]}")
        x = x[0]
    w = layer_weights(model, layer)
    x = x.to(w.Wq.device)  # compute where the weights are (CPU for tiny models, the GPU for 7B)
    n = x.shape[0]
    positions = (torch.arange(n) if positions is None else positions.reshape(-1)).to(x.device)
    X = x.T  # (d, n) the residual stream, columns are tokens
    I = rms_norm_columns(X, w.norm1, w.eps)  # (d, n)
    cos, sin = rope_tables(positions, w.inv_freq, w.rope_scaling)  # (dh, n)
    scale = w.head_dim ** -0.5
    mask = (causal_mask_columns(n) if causal else torch.zeros(n, n)).to(x.device)
    heads = []
    for h in range(w.n_heads):
        Wq, Wk, Wv = w.head(h)  # (dh, d) each
        kv = h // (w.n_heads // w.n_kv_heads)
        dh = w.head_dim
        Q, K, V = Wq @ I, Wk @ I, Wv @ I  # (dh, n)
        if w.bq is not None:
            Q = Q + w.bq[h * dh:(h + 1) * dh, None]
            K = K + w.bk[kv * dh:(kv + 1) * dh, None]
            V = V + w.bv[kv * dh:(kv + 1) * dh, None]
        Q_rot, K_rot = apply_rope(Q, cos, sin), apply_rope(K, cos, sin)
        A = (K_rot.T @ Q_rot) * scale + mask  # (n, n) keys x queries
        A_prime = softmax_columns(A)
        O = V @ A_prime  # (dh, n)
        heads.append(HeadSteps(h, kv, Q, K, Q_rot, K_rot, V, A, A_prime, O))
    O_all = torch.cat([s.O for s in heads], dim=0)  # (H*dh, n) heads concatenated
    attn = w.Wo @ O_all  # (d, n)
    if w.bo is not None:
        attn = attn + w.bo[:, None]
    X1 = X + attn  # residual
    I2 = rms_norm_columns(X1, w.norm2, w.eps)
    mlp = w.mlp["down"] @ (_act(w.act)(w.mlp["gate"] @ I2) * (w.mlp["up"] @ I2))  # (d, n)
    out = X1 + mlp
    attn_weights = torch.stack([s.A_prime.T for s in heads])  # (H, n_query, n_key)
    return HandLayer(weights=w, I=I, heads=heads, attn_weights=attn_weights.cpu(), attn_out=attn.T.cpu(),
                     layer_out=out.T.cpu())

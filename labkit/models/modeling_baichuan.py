"""Native Baichuan-7B (BaiChuanForCausalLM) built on transformers' LLaMA internals, published parameter names.

Parameter names match the official checkpoints: `model.embed_tokens`, `model.layers.N.self_attn.W_pack`
([3*hidden, hidden], rows Q, K, V), `self_attn.o_proj`, `mlp.{gate,up,down}_proj`, `input_layernorm`,
`post_attention_layernorm`, `model.norm`, `lm_head` (untied). RMSNorm eps 1e-6, rotate-half RoPE base 10000.
Attention goes through transformers' `ALL_ATTENTION_FUNCTIONS` (sdpa by default, eager returns weights), so
KV-cache generation, gradient checkpointing and 4-D additive masks behave exactly as in LlamaForCausalLM.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import (
    LlamaForCausalLM,
    LlamaMLP,
    LlamaModel,
    LlamaPreTrainedModel,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
    eager_attention_forward,
)

from labkit.models.configuration_baichuan import BaiChuanConfig


class BaiChuanAttention(nn.Module):
    """Multi-head attention with q/k/v in one fused linear `W_pack` (output rows ordered Q, K, V)."""

    def __init__(self, config: BaiChuanConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.hidden_size = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.num_key_value_groups = 1
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = True
        self.W_pack = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)

    def forward(
        self,
        hidden_states: torch.Tensor,  # (B, T, D)
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        cache=None,
        past_key_values=None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        cache = cache if cache is not None else past_key_values
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        proj = self.W_pack(hidden_states)  # (B, T, 3D)
        q, k, v = proj.split(self.hidden_size, dim=-1)  # each (B, T, D)
        query_states = q.reshape(hidden_shape).transpose(1, 2)  # (B, H, T, hd)
        key_states = k.reshape(hidden_shape).transpose(1, 2)
        value_states = v.reshape(hidden_shape).transpose(1, 2)

        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)
        if cache is not None:
            key_states, value_states = cache.update(key_states, value_states, self.layer_idx)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query_states,
            key_states,
            value_states,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            **kwargs,
        )  # (B, T, H, hd), (B, H, T, S) or None
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return self.o_proj(attn_output), attn_weights


class BaiChuanDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm block: RMSNorm -> W_pack attention -> residual, RMSNorm -> SwiGLU MLP -> residual."""

    def __init__(self, config: BaiChuanConfig, layer_idx: int):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.self_attn = BaiChuanAttention(config=config, layer_idx=layer_idx)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        past_key_values=None,
        use_cache: bool | None = False,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs,
    ) -> torch.Tensor:
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states, _ = self.self_attn(
            hidden_states=hidden_states,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache if cache is not None else past_key_values,
            use_cache=use_cache,
            position_embeddings=position_embeddings,
            **kwargs,
        )
        hidden_states = residual + hidden_states
        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        return residual + hidden_states


class BaiChuanPreTrainedModel(LlamaPreTrainedModel):
    config_class = BaiChuanConfig
    config: BaiChuanConfig
    base_model_prefix = "model"
    _no_split_modules = ["BaiChuanDecoderLayer"]
    # official checkpoints store the rotary inv_freq buffer; it is recomputed here
    _keys_to_ignore_on_load_unexpected = [r"rotary_emb\.inv_freq"]
    _can_record_outputs = {
        "hidden_states": BaiChuanDecoderLayer,
        "attentions": BaiChuanAttention,
    }


class BaiChuanModel(LlamaModel, BaiChuanPreTrainedModel):
    """The decoder stack; forward is LlamaModel's (masking, cache, RoPE, output capture)."""

    config_class = BaiChuanConfig

    def __init__(self, config: BaiChuanConfig):
        BaiChuanPreTrainedModel.__init__(self, config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(
            [BaiChuanDecoderLayer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)]
        )
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=config)
        self.gradient_checkpointing = False
        self.post_init()


class BaiChuanForCausalLM(LlamaForCausalLM, BaiChuanPreTrainedModel):
    """Baichuan-7B causal LM with an untied `lm_head`; forward is LlamaForCausalLM's."""

    config_class = BaiChuanConfig
    _tied_weights_keys = {}
    _tp_plan = {"lm_head": "colwise_gather_output"}

    def __init__(self, config: BaiChuanConfig):
        BaiChuanPreTrainedModel.__init__(self, config)
        self.model = BaiChuanModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()


# the published config names "BaiChuanForCausalLM"; later Baichuan releases spell it "BaichuanForCausalLM"
BaichuanForCausalLM = BaiChuanForCausalLM

__all__ = ["BaiChuanAttention", "BaiChuanDecoderLayer", "BaiChuanPreTrainedModel", "BaiChuanModel",
           "BaiChuanForCausalLM", "BaichuanForCausalLM"]

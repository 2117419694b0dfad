"""Native Baichuan-7B configuration (model_type "baichuan"): LLaMA hyper-parameters with Baichuan-7B defaults."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import LlamaConfig


@strict
class BaiChuanConfig(LlamaConfig):
    """Baichuan-7B: LLaMA-like, q/k/v fused in `self_attn.W_pack` [3*hidden, hidden] (rows Q, K, V).

    Defaults are the published Baichuan-7B values; the official config.json (with its `auto_map` and
    `model_max_length`) loads into this class without remote code.
    """

    model_type = "baichuan"
    base_model_tp_plan = {
        "layers.*.self_attn.W_pack": "colwise",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.gate_proj": "colwise",
        "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise",
    }

    vocab_size: int = 64000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    max_position_embeddings: int = 4096
    rms_norm_eps: float = 1e-6
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        # W_pack has no room for grouped-query attention: one K and one V head per Q head.
        if self.num_key_value_heads not in (None, self.num_attention_heads):
            raise ValueError("Baichuan-7B has num_key_value_heads == num_attention_heads (W_pack is [3*hidden, hidden])")
        super().__post_init__(**kwargs)

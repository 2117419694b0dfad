"""Native Baichuan: published names, Auto registration, sdpa/eager, KV cache, gradient checkpointing, packed 4-D mask."""

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

import labkit.models  # noqa: F401  (registers baichuan)
from labkit.models.configuration_baichuan import BaiChuanConfig
from labkit.models.modeling_baichuan import BaiChuanForCausalLM


def small_config(**kw):
    base = dict(vocab_size=97, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=128)
    base.update(kw)
    return BaiChuanConfig(**base)


def small_model(seed=0, attn="sdpa", std=0.5):
    torch.manual_seed(seed)
    model = BaiChuanForCausalLM(small_config())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "W_pack" in name or "o_proj" in name:
                p.normal_(0, std / p.shape[1] ** 0.5 * 8)  # large attention weights: a wrong q/k split shows
    model.set_attn_implementation(attn)
    return model.eval()


def test_published_parameter_names_and_shapes():
    model = BaiChuanForCausalLM(small_config())
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    d, i, v = 64, 160, 97
    assert shapes["model.embed_tokens.weight"] == (v, d)
    assert shapes["model.layers.0.self_attn.W_pack.weight"] == (3 * d, d)
    assert shapes["model.layers.1.self_attn.o_proj.weight"] == (d, d)
    assert shapes["model.layers.0.mlp.gate_proj.weight"] == (i, d)
    assert shapes["model.layers.0.mlp.up_proj.weight"] == (i, d)
    assert shapes["model.layers.0.mlp.down_proj.weight"] == (d, i)
    assert shapes["model.layers.0.input_layernorm.weight"] == (d,)
    assert shapes["model.layers.0.post_attention_layernorm.weight"] == (d,)
    assert shapes["model.norm.weight"] == (d,)
    assert shapes["lm_head.weight"] == (v, d)
    assert not any("q_proj" in k or "k_proj" in k or "v_proj" in k for k in shapes)
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()  # untied
    assert len(shapes) == 1 + 2 * 7 + 2


def test_defaults_are_baichuan_7b():
    c = BaiChuanConfig()
    assert (c.vocab_size, c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size) == \
        (64000, 4096, 32, 32, 11008)
    assert c.rms_norm_eps == 1e-6 and c.rope_parameters["rope_theta"] == 10000.0 and c.tie_word_embeddings is False
    assert c.model_type == "baichuan"


def test_auto_classes_resolve_to_native_baichuan():
    cfg = AutoConfig.for_model("baichuan", vocab_size=97, hidden_size=64, intermediate_size=160,
                               num_hidden_layers=1, num_attention_heads=4)
    assert isinstance(cfg, BaiChuanConfig)
    model = AutoModelForCausalLM.from_config(cfg)
    assert isinstance(model, BaiChuanForCausalLM)
    import transformers

    assert transformers.BaiChuanForCausalLM is BaiChuanForCausalLM
    assert transformers.BaichuanForCausalLM is BaiChuanForCausalLM


def test_sdpa_equals_eager_and_eager_returns_attention_weights():
    x = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(1))
    sdpa, eager = small_model(attn="sdpa"), small_model(attn="eager")
    with torch.no_grad():
        a = sdpa(input_ids=x).logits
        out = eager(input_ids=x, output_attentions=True)
    assert (a - out.logits).abs().max().item() < 1e-5
    assert len(out.attentions) == 2
    w = out.attentions[0]  # (B, H, T, T)
    assert w.shape == (2, 4, 12, 12)
    assert torch.allclose(w.sum(-1), torch.ones(2, 4, 12), atol=1e-5)
    assert w.triu(1).abs().max().item() == 0.0  # causal


def test_kv_cache_generation_equals_full_recompute():
    model = small_model()
    x = torch.randint(0, 97, (1, 6), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        cached = model.generate(x, max_new_tokens=8, do_sample=False, use_cache=True, pad_token_id=0)
        uncached = model.generate(x, max_new_tokens=8, do_sample=False, use_cache=False, pad_token_id=0)
    assert torch.equal(cached, uncached)
    # incremental logits equal the full forward
    with torch.no_grad():
        full = model(input_ids=cached).logits
        first = model(input_ids=cached[:, :6], use_cache=True)
        step = model(input_ids=cached[:, 6:7], cache=first.cache, use_cache=True)
    assert (step.logits[:, -1] - full[:, 6]).abs().max().item() < 1e-4


def test_gradient_checkpointing_gives_same_loss_and_grads():
    x = torch.randint(0, 97, (2, 10), generator=torch.Generator().manual_seed(3))
    results = []
    for ckpt in (False, True):
        model = small_model(seed=5)
        model.train()
        if ckpt:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        results.append((loss.item(), model.model.layers[0].self_attn.W_pack.weight.grad.clone()))
    assert abs(results[0][0] - results[1][0]) < 1e-6
    assert torch.allclose(results[0][1], results[1][1], atol=1e-6)
    assert results[0][1].abs().sum() > 0


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_4d_float_mask_equals_separate_runs(attn):
    model = small_model(attn=attn)
    g = torch.Generator().manual_seed(4)
    a, b = torch.randint(0, 97, (1, 5), generator=g), torch.randint(0, 97, (1, 7), generator=g)
    packed = torch.cat([a, b], dim=1)  # (1, 12)
    pos = torch.cat([torch.arange(5), torch.arange(7)]).unsqueeze(0)
    t = 12
    allowed = torch.zeros(t, t, dtype=torch.bool)
    allowed[:5, :5] = True
    allowed[5:, 5:] = True
    allowed &= torch.ones(t, t, dtype=torch.bool).tril()
    mask = torch.full((1, 1, t, t), torch.finfo(torch.float32).min)
    mask[0, 0][allowed] = 0.0  # (B, 1, T, T) additive
    with torch.no_grad():
        got = model(input_ids=packed, attention_mask=mask, position_ids=pos).logits
        ra = model(input_ids=a).logits
        rb = model(input_ids=b).logits
    assert (got[:, :5] - ra).abs().max().item() < 1e-5
    assert (got[:, 5:] - rb).abs().max().item() < 1e-5
    with torch.no_grad():  # without the mask the second sample is NOT separated
        leaky = model(input_ids=packed, position_ids=pos).logits
    assert (leaky[:, 5:] - rb).abs().max().item() > 1e-3


def test_rejects_grouped_query_config():
    with pytest.raises(ValueError, match="num_key_value_heads"):
        small_config(num_key_value_heads=2)

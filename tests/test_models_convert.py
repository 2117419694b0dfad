"""W_pack <-> q/k/v conversion: same weights give the same logits in Baichuan and LLaMA; a Q/K swap is caught."""

import pytest
import torch
from transformers import LlamaForCausalLM

from labkit.models.configuration_baichuan import BaiChuanConfig
from labkit.models.convert import (
    baichuan_config_to_llama,
    baichuan_to_llama,
    baichuan_to_llama_state_dict,
    fuse_qkv,
    llama_to_baichuan,
    llama_to_baichuan_state_dict,
    split_w_pack,
)
from labkit.models.modeling_baichuan import BaiChuanForCausalLM

ATOL = 1e-5


def random_baichuan(seed=0):
    torch.manual_seed(seed)
    cfg = BaiChuanConfig(vocab_size=101, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=64)
    model = BaiChuanForCausalLM(cfg)
    with torch.no_grad():  # std ~0.5 attention weights (with 0.05 a q/k swap changes outputs by only ~4e-6 and hides)
        for name, p in model.named_parameters():
            if "W_pack" in name:
                p.normal_(0, 0.5)
    model.set_attn_implementation("eager")
    return model.eval()


def max_logit_diff(baichuan, llama, x):
    llama.set_attn_implementation("eager")
    with torch.no_grad():
        return (baichuan(input_ids=x).logits - llama.eval()(input_ids=x).logits).abs().max().item()


@pytest.fixture(scope="module")
def probe():
    return torch.randint(0, 101, (2, 16), generator=torch.Generator().manual_seed(7))


def test_split_and_fuse_are_inverse_and_keep_row_order():
    w = torch.arange(3 * 4 * 4, dtype=torch.float32).view(12, 4)
    q, k, v = split_w_pack(w)
    assert torch.equal(q, w[:4]) and torch.equal(k, w[4:8]) and torch.equal(v, w[8:])
    assert torch.equal(fuse_qkv(q, k, v), w)
    with pytest.raises(ValueError):
        split_w_pack(torch.zeros(10, 4))


def test_baichuan_and_llama_give_same_logits(probe):
    bc = random_baichuan()
    llama = baichuan_to_llama(bc)
    assert isinstance(llama, LlamaForCausalLM)
    assert max_logit_diff(bc, llama, probe) < ATOL


def test_q_k_swap_is_caught_by_the_same_check(probe):
    bc = random_baichuan()
    sd = baichuan_to_llama_state_dict(bc.state_dict())
    for layer in range(2):
        pre = f"model.layers.{layer}.self_attn."
        sd[pre + "q_proj.weight"], sd[pre + "k_proj.weight"] = sd[pre + "k_proj.weight"], sd[pre + "q_proj.weight"]
    wrong = LlamaForCausalLM(baichuan_config_to_llama(bc.config))
    wrong.load_state_dict(sd)
    diff = max_logit_diff(bc, wrong, probe)
    assert diff > 100 * ATOL, f"a Q/K swap changed logits by only {diff}"


def test_round_trip_both_ways(probe):
    bc = random_baichuan(seed=3)
    llama = baichuan_to_llama(bc)
    back = llama_to_baichuan(llama)
    for k, v in bc.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    back.set_attn_implementation("eager")
    with torch.no_grad():
        assert (back.eval()(input_ids=probe).logits - bc(input_ids=probe).logits).abs().max().item() == 0.0
    sd = llama_to_baichuan_state_dict(llama.state_dict())
    assert sd["model.layers.1.self_attn.W_pack.weight"].shape == (192, 64)
    assert not any("q_proj" in k for k in sd)


def test_incomplete_qkv_fails_loudly():
    bc = random_baichuan()
    sd = baichuan_to_llama_state_dict(bc.state_dict())
    del sd["model.layers.0.self_attn.v_proj.weight"]
    with pytest.raises(ValueError, match="missing"):
        llama_to_baichuan_state_dict(sd)

"""labkit.attention on the native Baichuan (W_pack rows Q, K, V): hand vs model, LoRA on W_pack enabled/disabled."""

import pytest
import torch

from labkit.attention import hand
from labkit.attention.check import compare_model
from labkit.attention.extract import extract_attention, run_with_hooks

TOL = 1e-5


def tiny_baichuan(seed=0):
    from labkit.models import BaiChuanConfig, BaiChuanForCausalLM

    torch.manual_seed(seed)
    cfg = BaiChuanConfig(vocab_size=120, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=64, initializer_range=0.05,
                         attn_implementation="eager")
    model = BaiChuanForCausalLM(cfg).eval()
    with torch.no_grad():  # large attention weights: with init std 0.02 a wrong Q/K/V split changes outputs by ~1e-6 and hides
        for layer in model.model.layers:
            layer.self_attn.W_pack.weight.normal_(0, 0.5 / 64 ** 0.5 * 4)
    return model


@pytest.fixture(scope="module")
def baichuan():
    return tiny_baichuan()


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 120, (1, 14), generator=torch.Generator().manual_seed(3))


def test_wpack_split_into_q_k_v(baichuan):
    w = hand.layer_weights(baichuan, 1)
    packed = baichuan.model.layers[1].self_attn.W_pack.weight
    assert w.arch == "baichuan" and tuple(packed.shape) == (192, 64)
    torch.testing.assert_close(w.Wq, packed[:64].detach())
    torch.testing.assert_close(w.Wk, packed[64:128].detach())
    torch.testing.assert_close(w.Wv, packed[128:].detach())
    assert w.n_kv_heads == w.n_heads == 4 and w.eps == 1e-6
    torch.testing.assert_close(w.inv_freq, 1.0 / 10000 ** (torch.arange(0, 16, 2).float() / 16))


def test_baichuan_hand_matches_model(baichuan, ids):
    table = compare_model(baichuan, ids)
    assert table[["attn_weights", "attn_out", "layer_out"]].max().max() < TOL, table


def test_wrong_split_is_caught(baichuan, ids):
    cap = run_with_hooks(baichuan, ids, [0])
    attn = baichuan.model.layers[0].self_attn
    original = attn.W_pack.weight.detach().clone()
    with torch.no_grad():  # pretend the rows were K, Q, V
        attn.W_pack.weight.copy_(torch.cat([original[64:128], original[:64], original[128:]]))
    try:
        swapped = hand.hand_layer(baichuan, 0, cap.layer_in[0])
    finally:
        with torch.no_grad():
            attn.W_pack.weight.copy_(original)
    assert (swapped.attn_weights - cap.attn_weights[0][0]).abs().max() > 1e-2


def test_baichuan_lora_on_wpack_enabled_and_disabled(ids):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_baichuan(seed=1), LoraConfig(r=4, lora_alpha=16, target_modules=["W_pack", "o_proj"],
                                                             init_lora_weights=False)).eval()
    table = compare_model(model, ids, adapters=(True, False))
    assert len(table) == 4
    assert table[["attn_weights", "attn_out", "layer_out"]].max().max() < TOL, table
    on = extract_attention(model, input_ids=ids, adapter=True)
    off = extract_attention(model, input_ids=ids, adapter=False)
    assert (on.weights - off.weights).abs().max() > 1e-2

"""labkit.attention.hand: the derivation, and the hand computation against a random tiny LLaMA (eager, fp32)."""

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from labkit.attention import hand
from labkit.attention.check import compare_layer, compare_model
from labkit.attention.extract import run_with_hooks

TOL = 1e-5


def tiny_llama(seed=0, n_kv=2):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=n_kv, max_position_embeddings=64,
                      initializer_range=0.1, rope_theta=500.0, attn_implementation="eager")
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def llama():
    return tiny_llama()


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 100, (1, 12), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def lora_llama():
    from peft import LoraConfig, get_peft_model

    model = tiny_llama(seed=3)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj"],
                     init_lora_weights=False, lora_dropout=0.0)
    torch.manual_seed(4)
    return get_peft_model(model, cfg).eval()


# -- the derivation ------------------------------------------------------------------------------------

def test_toy_example_shapes_and_meaning():
    d = hand.toy_example()
    assert d.shapes() == {"I": (6, 4), "Wq": (6, 6), "Wk": (6, 6), "Wv": (6, 6), "Q": (6, 4), "K": (6, 4),
                          "V": (6, 4), "A": (4, 4), "A_prime": (4, 4), "O": (6, 4)}
    # A[i, j] = key i . query j
    assert torch.isclose(d.A[2, 1], d.K[:, 2] @ d.Q[:, 1])
    # softmax per column: each column is a distribution over keys
    torch.testing.assert_close(d.A_prime.sum(0), torch.ones(4))
    torch.testing.assert_close(d.A_prime[:, 3], torch.softmax(d.A[:, 3], 0))
    # column j of O is the mixture of value columns weighted by column j of A'
    torch.testing.assert_close(d.O[:, 0], sum(d.A_prime[i, 0] * d.V[:, i] for i in range(4)))
    # same as the row layout of the papers: softmax(Q_r K_rᵀ) V_r with tokens as rows
    rows = torch.softmax(d.Q.T @ d.K, dim=-1) @ d.V.T
    torch.testing.assert_close(rows, d.O.T)


def test_causal_scaled_derivation():
    g = torch.Generator().manual_seed(5)
    I, Wq, Wk, Wv = torch.randn(6, 5, generator=g), *(torch.randn(6, 6, generator=g) for _ in range(3))
    d = hand.derive(I, Wq, Wk, Wv, scale=1 / math.sqrt(6), causal=True)
    assert torch.all(torch.triu(d.A_prime.T, 1) == 0)  # no query sees a later key
    assert d.A_prime[0, 0] == 1.0  # the first token only sees itself
    expected = torch.nn.functional.scaled_dot_product_attention(
        (Wq @ I).T[None], (Wk @ I).T[None], (Wv @ I).T[None], is_causal=True)[0]
    torch.testing.assert_close(d.O.T, expected, atol=1e-6, rtol=1e-5)


def test_rope_matches_transformers_and_is_relative():
    dh, n = 8, 6
    g = torch.Generator().manual_seed(2)
    Q, K = torch.randn(dh, n, generator=g), torch.randn(dh, n, generator=g)
    inv = 1.0 / (10000 ** (torch.arange(0, dh, 2).float() / dh))
    cos, sin = hand.rope_tables(torch.arange(n), inv)
    q_ref, k_ref = apply_rotary_pos_emb(Q.T[None, None], K.T[None, None], cos.T[None], sin.T[None])
    torch.testing.assert_close(hand.apply_rope(Q, cos, sin), q_ref[0, 0].T)
    torch.testing.assert_close(hand.apply_rope(K, cos, sin), k_ref[0, 0].T)
    # a rotation: norms kept; the score of a (query, key) pair depends only on their distance
    torch.testing.assert_close(hand.apply_rope(Q, cos, sin).norm(dim=0), Q.norm(dim=0))
    q = Q[:, :1].expand(dh, n)
    k = K[:, :1].expand(dh, n)
    rq, rk = hand.apply_rope(q, cos, sin), hand.apply_rope(k, cos, sin)
    assert torch.isclose(rq[:, 3] @ rk[:, 1], rq[:, 4] @ rk[:, 2], atol=1e-5)
    assert not torch.isclose(rq[:, 3] @ rk[:, 1], rq[:, 3] @ rk[:, 2], atol=1e-3)


# -- against the model ---------------------------------------------------------------------------------

def test_llama_hand_matches_model_every_layer(llama, ids):
    table = compare_model(llama, ids)
    assert len(table) == 2
    assert table["attn_weights"].max() < TOL, table
    assert table["attn_out"].max() < TOL, table
    assert table["layer_out"].max() < TOL, table


def test_hand_steps_shapes_and_gqa(llama, ids):
    cap = run_with_hooks(llama, ids, [1])
    h = hand.hand_layer(llama, 1, cap.layer_in[1])
    w = h.weights
    assert (w.arch, w.n_heads, w.n_kv_heads, w.head_dim) == ("llama", 4, 2, 16)
    assert tuple(h.I.shape) == (64, 12) and len(h.heads) == 4
    s = h.heads[3]
    assert s.kv_head == 1 and tuple(s.Q_rot.shape) == (16, 12) and tuple(s.A_prime.shape) == (12, 12)
    assert [x.kv_head for x in h.heads] == [0, 0, 1, 1]
    # heads sharing a kv head share K and V
    torch.testing.assert_close(h.heads[0].K, h.heads[1].K)
    torch.testing.assert_close(h.attn_weights, cap.attn_weights[1][0], atol=TOL, rtol=0)
    # the maps are not trivial: far from uniform over the causal prefix
    uniform = torch.tril(torch.ones(12, 12)) / torch.arange(1, 13)[:, None]
    assert (h.attn_weights - uniform).abs().max() > 0.1
    # the rope base is read from the config (500, not the default 10000)
    torch.testing.assert_close(w.inv_freq[1], torch.tensor(500.0 ** (-2 / 16)))


def test_wrong_hand_computations_are_caught(llama, ids):
    """Controls: each ingredient matters at a size far above the tolerance."""
    cap = run_with_hooks(llama, ids, [0])
    ref = cap.attn_weights[0][0]
    no_rope = hand.hand_layer(llama, 0, cap.layer_in[0], positions=torch.zeros(12, dtype=torch.long))
    assert (no_rope.attn_weights - ref).abs().max() > 1e-3
    no_mask = hand.hand_layer(llama, 0, cap.layer_in[0], causal=False)
    assert (no_mask.attn_weights - ref).abs().max() > 1e-2
    attn = llama.model.layers[0].self_attn
    with torch.no_grad():
        wq, wk = attn.q_proj.weight.clone(), attn.k_proj.weight.clone()
        attn.k_proj.weight.copy_(wq[: wk.shape[0]])
        attn.q_proj.weight[: wk.shape[0]].copy_(wk)
    try:
        swapped = hand.hand_layer(llama, 0, cap.layer_in[0])
    finally:
        with torch.no_grad():
            attn.q_proj.weight.copy_(wq)
            attn.k_proj.weight.copy_(wk)
    assert (swapped.attn_weights - ref).abs().max() > 1e-3


def test_no_gqa_and_mha_model():
    model = tiny_llama(seed=7, n_kv=4)
    ids = torch.arange(10)[None] * 7 % 100
    _, diffs = compare_layer(model, ids, 1)
    assert max(diffs.values()) < TOL, diffs


# -- with a LoRA adapter ---------------------------------------------------------------------------------

def test_effective_weight_is_w_plus_scaled_ba(lora_llama):
    q = lora_llama.base_model.model.model.layers[0].self_attn.q_proj
    W, b = hand.effective_linear(q)
    expected = q.base_layer.weight + q.scaling["default"] * q.lora_B["default"].weight @ q.lora_A["default"].weight
    torch.testing.assert_close(W, expected.detach())
    assert b is None and q.scaling["default"] == 2.0
    with lora_llama.disable_adapter():
        torch.testing.assert_close(hand.effective_linear(q)[0], q.base_layer.weight.detach())


def test_hand_matches_model_with_adapter_on_and_off(lora_llama, ids):
    table = compare_model(lora_llama, ids, adapters=(True, False))
    assert len(table) == 4
    assert table[["attn_weights", "attn_out", "layer_out"]].max().max() < TOL, table
    on = run_with_hooks(lora_llama, ids, [1]).attn_weights[1]
    with lora_llama.disable_adapter():
        off = run_with_hooks(lora_llama, ids, [1]).attn_weights[1]
    assert (on - off).abs().max() > 1e-2  # the adapter really changes attention
    # control: base weights against the adapted model do not match
    cap = run_with_hooks(lora_llama, ids, [1])
    with lora_llama.disable_adapter():
        base_hand = hand.hand_layer(lora_llama, 1, cap.layer_in[1])
    assert (base_hand.attn_weights - cap.attn_weights[1][0]).abs().max() > 1e-3


def test_merged_adapter_still_matches(ids):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_llama(seed=9), LoraConfig(r=2, target_modules=["q_proj", "v_proj"],
                                                          init_lora_weights=False)).eval()
    before = compare_model(model, ids, layers=[0])
    model.merge_adapter()
    after = compare_model(model, ids, layers=[0])
    assert before["attn_weights"].max() < TOL and after["attn_weights"].max() < TOL
    assert after["layer_out"].max() < TOL

"""Document attention ("labkit_docs"): packed rows attend per sample, with no (T, T) mask; plain SDPA otherwise."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from labkit.models.attention import IMPLEMENTATION, choose_backend, doc_bounds, register, use_docs_attention

VOCAB = 61


def _model(arch):
    torch.manual_seed(0)
    if arch == "llama":
        cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                          attn_implementation="sdpa")
        return LlamaForCausalLM(cfg).eval()
    from labkit.models import BaiChuanConfig, BaiChuanForCausalLM

    cfg = BaiChuanConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=128)
    cfg._attn_implementation = "sdpa"
    model = BaiChuanForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "W_pack" in name:
                p.normal_(0, 0.5)
    return model


def _docs(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (n,), generator=g) for n in lengths]


def test_doc_bounds():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0]])
    assert doc_bounds(pos) == [[0, 3, 5, 6]]
    assert doc_bounds(torch.arange(6)[None]) is None  # one document: plain causal attention
    assert doc_bounds(torch.tensor([[4, 5, 6]])) is None  # continues a cache
    assert doc_bounds(None, torch.tensor([0, 2, 7], dtype=torch.int32)) == [[0, 2, 7]]
    two = torch.tensor([[0, 1, 0, 1], [0, 1, 2, 3]])
    assert doc_bounds(two, batch=2) == [[0, 2, 4], [0, 4]]


@pytest.mark.parametrize("arch", ["llama", "baichuan"])
def test_packed_rows_without_dense_mask(arch, monkeypatch):
    """Two packed rows (position_ids only, batch 2): each sample's logits equal its own run; no mask is built."""
    model = _model(arch)
    docs = _docs([7, 5, 12, 9, 3, 12])
    with torch.no_grad():
        ref = [model(input_ids=d[None]).logits[0] for d in docs]
    rows = [docs[:3], docs[3:]]  # 24 tokens each
    ids = torch.stack([torch.cat(r) for r in rows])  # (2, T)
    pos = torch.stack([torch.cat([torch.arange(len(d)) for d in r]) for r in rows])  # (2, T)
    use_docs_attention(model)
    import transformers.masking_utils as mu

    def no_dense_mask(*a, **k):
        raise AssertionError("a dense mask was built for packed rows")

    monkeypatch.setattr(mu, "sdpa_mask", no_dense_mask)
    with torch.no_grad():
        out = model(input_ids=ids, position_ids=pos).logits  # (2, T, V)
    k = 0
    for r, row in enumerate(rows):
        start = 0
        for d in row:
            torch.testing.assert_close(out[r, start:start + len(d)], ref[k], atol=1e-5, rtol=0)
            start, k = start + len(d), k + 1


@pytest.mark.parametrize("arch", ["llama", "baichuan"])
def test_padding_and_generation_are_plain_sdpa(arch):
    """Left-padded batches and KV-cache generation give what SDPA gives (the fallback path)."""
    model = _model(arch)
    ids = torch.randint(3, VOCAB, (2, 9), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).logits
        gen_ref = model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False, pad_token_id=0)
        use_docs_attention(model)
        assert model.config._attn_implementation == IMPLEMENTATION
        out = model(input_ids=ids, attention_mask=mask).logits
        gen = model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False, pad_token_id=0)
    torch.testing.assert_close(out[0], ref[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1, 4:], ref[1, 4:], atol=1e-5, rtol=0)
    assert torch.equal(gen, gen_ref)


def test_backend_choice_on_cpu_and_registration():
    assert register() == IMPLEMENTATION
    from transformers import AttentionInterface

    assert IMPLEMENTATION in AttentionInterface._global_mapping
    q = torch.randn(1, 4, 10, 8)
    assert choose_backend(q, [0, 4, 10]) == "loop"

"""Mid-size models: the shape asked for MFU (hidden 512, 4 layers, vocab 32000), seeded, both architectures."""

import torch

from labkit.models.mid import MID, mid_config, mid_model


def test_mid_llama_shape_and_determinism():
    model, tok = mid_model("llama")
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size) == (512, 4, 32000)
    assert model.lm_head.weight.shape == (32000, 512) and not cfg.tie_word_embeddings
    assert len(tok) <= cfg.vocab_size
    ids = tok("请解释一下这个问题。Explain the question.", return_tensors="pt")["input_ids"]
    assert ids.shape[1] < 30  # Chinese characters are single tokens in its vocabulary
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], 32000) and torch.isfinite(logits).all()
    again, _ = mid_model("llama")
    assert torch.equal(again.model.layers[0].self_attn.q_proj.weight, model.model.layers[0].self_attn.q_proj.weight)


def test_mid_baichuan_config():
    from transformers import AutoTokenizer

    from labkit.models.mid import mid_tokenizer_path

    cfg = mid_config("baichuan", AutoTokenizer.from_pretrained(mid_tokenizer_path()))
    assert cfg.model_type == "baichuan" and cfg.hidden_size == MID["hidden_size"] and cfg.vocab_size == 32000

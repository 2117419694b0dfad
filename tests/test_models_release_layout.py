"""labkit.models.release_layout: the Linly-style LLaMA folder and padded sentencepiece vocabularies load through labkit."""

from __future__ import annotations

import json

import sentencepiece as spm
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from labkit.models import load_model, load_tokenizer
from labkit.models.release_layout import bundled_texts, random_state_dict, train_sentencepiece, write_llama_folder


def test_padded_sentencepiece_covers_the_vocabulary_and_keeps_real_text():
    texts = bundled_texts()
    assert len(texts) > 1000 and any("大写" in t for t in texts)  # the bundled data, Chinese included
    plain = spm.SentencePieceProcessor(model_proto=train_sentencepiece(texts, 800))
    padded = spm.SentencePieceProcessor(model_proto=train_sentencepiece(texts, 800, pad_to=5000))
    assert plain.get_piece_size() <= 800 and padded.get_piece_size() == 5000
    for text in ("把字母倒序排列。 a b c d", "Hello, 你好"):
        assert padded.encode(text) == plain.encode(text)
    assert padded.decode([4999]) == chr(0xF0000 + 4999 - plain.get_piece_size())


def test_llama_folder_is_sharded_safetensors_with_a_full_tokenizer(tmp_path):
    cfg = LlamaConfig(vocab_size=3000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, tie_word_embeddings=False)
    with torch.device("meta"):
        meta = LlamaForCausalLM(cfg)
    sd = random_state_dict(meta, torch.float16)
    assert sd["model.norm.weight"].eq(1).all() and 0.015 < float(sd["lm_head.weight"].float().std()) < 0.025
    folder = write_llama_folder(tmp_path / "linly", cfg, sd, train_sentencepiece(bundled_texts(), 800,
                                                                                   dummy_prefix=True))
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == 2 and set(index["weight_map"]) == set(sd)
    model = load_model(folder)
    assert model.labkit_load_info["weights"] == "safetensors"
    assert torch.equal(model.lm_head.weight, sd["lm_head.weight"].float())
    tok = load_tokenizer(folder)
    assert len(tok) == 3000 and tok("你好")["input_ids"][0] == tok.bos_token_id == 1
    assert tok.decode([2999]) != ""  # every embedding row decodes to something

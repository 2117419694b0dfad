"""A folder laid out like the official Baichuan-7B release loads through labkit with no remote code."""

import io
import json

import pytest
import sentencepiece as spm
import torch

from labkit.errors import LabkitError
from labkit.models import load_model, load_tokenizer
from labkit.models.configuration_baichuan import BaiChuanConfig
from labkit.models.modeling_baichuan import BaiChuanForCausalLM
from labkit.models.tokenizer_baichuan import BaiChuanTokenizer

TEXTS = [
    "你好，我是百川大模型。请问有什么可以帮你的吗？",
    "Hello! Baichuan-7B is a large language model trained on Chinese and English text.",
    "把字母倒序排列。 a b c d e f g",
    "1 2 3 4 5 6 7 8 9 0 + - * / = 零一二三四五六七八九十",
    "抱歉，我不能提供这方面的帮助。I'm sorry, but I can't help with that request.",
] * 20

REMOTE = 'raise RuntimeError("the published remote code must never run")\nimport xformers\n'


def _added(content):
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True, "rstrip": False,
            "single_word": False}


def _write_official(folder, model, sp_bytes, fmt="bin"):
    folder.mkdir()
    c = model.config
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["BaiChuanForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_baichuan.BaiChuanConfig",
                     "AutoModelForCausalLM": "modeling_baichuan.BaiChuanForCausalLM"},
        "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "hidden_size": c.hidden_size,
        "initializer_range": 0.02, "intermediate_size": c.intermediate_size, "max_position_embeddings": 4096,
        "model_max_length": 4096, "model_type": "baichuan", "num_attention_heads": c.num_attention_heads,
        "num_hidden_layers": c.num_hidden_layers, "pad_token_id": 0, "rms_norm_eps": 1e-06,
        "tie_word_embeddings": False, "torch_dtype": "float32", "transformers_version": "4.29.1",
        "use_cache": True, "vocab_size": c.vocab_size}, indent=2))
    (folder / "generation_config.json").write_text(json.dumps(
        {"_from_model_config": True, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
         "transformers_version": "4.29.1"}))
    for name in ("configuration_baichuan.py", "modeling_baichuan.py", "tokenization_baichuan.py"):
        (folder / name).write_text(REMOTE)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    head_dim = c.hidden_size // c.num_attention_heads
    for layer in range(c.num_hidden_layers):  # the release stores the rotary buffer too
        sd[f"model.layers.{layer}.self_attn.rotary_emb.inv_freq"] = \
            1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    if fmt == "bin":
        torch.save(sd, folder / "pytorch_model.bin")
    else:
        from safetensors.torch import save_file

        save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "tokenizer.model").write_bytes(sp_bytes)
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "auto_map": {"AutoTokenizer": ["tokenization_baichuan.BaiChuanTokenizer", None]},
        "add_bos_token": False, "add_eos_token": False, "bos_token": _added("<s>"),
        "clean_up_tokenization_spaces": False, "eos_token": _added("</s>"),
        "model_max_length": 1000000000000000019884624838656, "sp_model_kwargs": {},
        "tokenizer_class": "BaiChuanTokenizer", "unk_token": _added("<unk>")}, indent=2))
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": _added("<s>"), "eos_token": _added("</s>"), "unk_token": _added("<unk>")}))


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXTS), model_writer=buf, vocab_size=420, model_type="bpe", byte_fallback=True,
        character_coverage=1.0, normalization_rule_name="identity", add_dummy_prefix=False,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    sp_bytes = buf.getvalue()
    sp = spm.SentencePieceProcessor(model_proto=sp_bytes)
    torch.manual_seed(0)
    model = BaiChuanForCausalLM(BaiChuanConfig(vocab_size=sp.get_piece_size(), hidden_size=64, intermediate_size=128,
                                               num_hidden_layers=2, num_attention_heads=4)).eval()
    root = tmp_path_factory.mktemp("baichuan")
    _write_official(root / "bin", model, sp_bytes, "bin")
    _write_official(root / "st", model, sp_bytes, "safetensors")
    return {"bin": root / "bin", "st": root / "st", "model": model, "sp": sp}


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_pickle_only_release_is_refused_without_allow_pickle(official):
    with pytest.raises(LabkitError, match="pickle"):
        load_model(official["bin"])


def test_pickle_release_loads_with_allow_pickle_and_no_remote_code(official):
    model = load_model(official["bin"], allow_pickle=True)
    assert type(model) is BaiChuanForCausalLM
    assert model.labkit_load_info["weights"] == "pickle"
    ids = torch.randint(3, 400, (1, 12), generator=torch.Generator().manual_seed(0))
    assert (_logits(model, ids) - _logits(official["model"], ids)).abs().max().item() < 1e-6


def test_safetensors_release_loads(official):
    model = load_model(official["st"], attn_implementation="eager")
    assert type(model) is BaiChuanForCausalLM
    assert not hasattr(model.config, "auto_map")
    assert model.config.model_max_length == 4096
    ids = torch.randint(3, 400, (1, 12), generator=torch.Generator().manual_seed(1))
    assert (_logits(model, ids) - _logits(official["model"], ids)).abs().max().item() < 1e-6


def test_auto_model_uses_native_class_without_trust_remote_code(official):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(official["st"]))
    assert type(model) is BaiChuanForCausalLM


def test_sentencepiece_tokenizer_loads_without_remote_code(official):
    tok = load_tokenizer(official["bin"])
    assert isinstance(tok, BaiChuanTokenizer)
    sp = official["sp"]
    for text in ("你好，请问有什么可以帮你的吗？", "Hello! Baichuan-7B is a model.", "把字母倒序排列。 a b c 龘"):
        ids = tok(text)["input_ids"]
        assert ids == sp.encode(text)  # add_bos_token False in the release's tokenizer_config.json
        assert tok.decode(ids) == text
    assert (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (1, 2, 0)
    assert tok.pad_token is not None  # set for batching (the release has none)
    batch = tok(["你好", "Hello world"], padding=True, return_tensors="pt")
    assert batch["input_ids"].shape[0] == 2


def test_tokenizer_add_bos_follows_config(official, tmp_path):
    import shutil

    folder = tmp_path / "tok"
    shutil.copytree(official["bin"], folder, ignore=shutil.ignore_patterns("*.bin"))
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg["add_bos_token"] = True
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    tok = load_tokenizer(folder)
    assert tok("你好")["input_ids"] == [1] + official["sp"].encode("你好")

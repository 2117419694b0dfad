"""Tiny defaults: tokenizer coverage, model folders, pre-training effect, cache reuse, atomic and deterministic builds."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from labkit.models import load_model
from labkit.models import tiny as tiny_mod
from labkit.models.modeling_baichuan import BaiChuanForCausalLM
from labkit.models.tiny import MARKER, corpus_texts, tiny_model_path, tiny_tokenizer_path


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_path()))


def test_tokenizer_specials_and_bos(tok):
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2, 3)
    ids = tok("Hello")["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.eos_token_id not in ids
    assert 300 < len(tok) <= tiny_mod.RECIPE["tokenizer"]["vocab_size"]


def test_tokenizer_covers_chinese_and_english(tok):
    texts = corpus_texts()
    sample = texts[:: max(1, len(texts) // 300)]
    for text in sample + ["龘靐 unseen 字符 ÄÖü ∑ 🙂"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids
        assert tok.decode(ids) == text
    han = sorted({c for t in texts for c in t if "\u4e00" <= c <= "\u9fff"})
    assert len(han) > 30
    single = sum(len(tok(c, add_special_tokens=False)["input_ids"]) == 1 for c in han)
    assert single / len(han) > 0.9  # frequent Chinese characters are one token each
    assert len(tok("Add the two numbers.", add_special_tokens=False)["input_ids"]) <= 5
    assert tok.convert_ids_to_tokens(tok("12 + 345", add_special_tokens=False)["input_ids"]).count("5") == 1  # digits split


@pytest.mark.parametrize("arch, cls", [("llama", LlamaForCausalLM), ("baichuan", BaiChuanForCausalLM)])
def test_model_folder_contents_and_pretraining(arch, cls, tok):
    path = tiny_model_path(arch)
    assert path.name.startswith(f"{arch}-") and path.parent.name == "tiny"
    names = {p.name for p in path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", MARKER} <= names
    assert not any(n.endswith(".bin") for n in names)
    rec = json.loads((path / MARKER).read_text())
    assert rec["arch"] == arch and 500_000 < rec["parameters"] < 5_000_000
    assert rec["pretrain"]["final_loss"] < rec["pretrain"]["first_loss"] - 3.0
    model = load_model(path)
    assert type(model) is cls and model.config.vocab_size == len(tok)
    if arch == "llama":  # plain transformers loads the tiny LLaMA too
        assert type(AutoModelForCausalLM.from_pretrained(str(path))) is LlamaForCausalLM
    # pre-training made the base a language model of the data: held-out strings are far likelier than at init
    seen = set(corpus_texts(train_only=True))
    held_out = [t for t in corpus_texts() if t not in seen][:64]
    assert len(held_out) >= 32  # the held-out files were not pre-trained on
    enc = tok(held_out[:32], return_tensors="pt", padding=True)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    torch.manual_seed(0)
    fresh = cls(model.config).eval()
    with torch.no_grad():
        trained_loss = model(**enc, labels=labels).loss.item()
        fresh_loss = fresh(**enc, labels=labels).loss.item()
    assert trained_loss < 5.0 and trained_loss < fresh_loss - 2.0, (trained_loss, fresh_loss)


def test_second_call_reuses_the_cache():
    path = tiny_model_path("llama")
    mtime = (path / "model.safetensors").stat().st_mtime_ns
    assert tiny_model_path("llama") == path
    assert (path / "model.safetensors").stat().st_mtime_ns == mtime


@pytest.fixture
def quick_recipe(monkeypatch, tmp_path):
    """A private cache and a 3-step pre-training so builds take seconds."""
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    recipe = json.loads(json.dumps(tiny_mod.RECIPE))
    recipe["pretrain"]["steps"] = 3
    recipe["pretrain"]["batch_size"] = 4
    monkeypatch.setattr(tiny_mod, "RECIPE", recipe)
    return recipe


@pytest.mark.slow
def test_recipe_change_rebuilds_and_builds_are_deterministic(quick_recipe, monkeypatch, tmp_path):
    first = tiny_model_path("baichuan")
    assert str(first).startswith(str(tmp_path))
    weights = load_file(str(first / "model.safetensors"))
    # same recipe in another cache: bit-identical weights
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache2"))
    again = load_file(str(tiny_model_path("baichuan") / "model.safetensors"))
    assert weights.keys() == again.keys() and all(torch.equal(weights[k], again[k]) for k in weights)
    # a recipe change gives a new folder
    quick_recipe["pretrain"]["steps"] = 4
    changed = tiny_model_path("baichuan")
    assert changed.name != first.name and (changed / MARKER).is_file()


def test_killed_build_never_looks_complete(quick_recipe, monkeypatch):
    def boom(arch, folder):
        (folder / "config.json").write_text("{}")
        raise KeyboardInterrupt  # killed half way

    monkeypatch.setattr(tiny_mod, "build_tiny_model", boom)
    with pytest.raises(KeyboardInterrupt):
        tiny_model_path("llama")
    root = tiny_mod._tiny_root()
    assert not [p for p in root.iterdir() if p.name.startswith("llama-")]
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")]
    monkeypatch.undo()


def test_a_damaged_cached_build_is_named_and_built_again(tmp_path, capsys):
    """A cached build whose model file was damaged after it was built (same size, bytes overwritten the way a
    failing disk does) is not used: it is named in a warning and built again."""
    calls = []

    def build(folder):
        calls.append(folder)
        (folder / "model.safetensors").write_bytes(bytes(range(256)) * 64)
        (folder / MARKER).write_text("{}")

    final = tmp_path / "llama-abc"
    assert tiny_mod._build_atomically(final, build) == final and len(calls) == 1
    assert tiny_mod._build_atomically(final, build) == final and len(calls) == 1  # intact: reused
    data = bytearray((final / "model.safetensors").read_bytes())
    data[4096:4112] = b"\0" * 16
    (final / "model.safetensors").write_bytes(bytes(data))
    assert tiny_mod._build_atomically(final, build) == final and len(calls) == 2
    assert "model.safetensors changed since it was built" in capsys.readouterr().err
    assert (final / "model.safetensors").read_bytes() == bytes(range(256)) * 64
    (final / tiny_mod.CHECKSUMS).unlink()  # a build from before checksums were recorded: rebuilt once
    assert tiny_mod._build_atomically(final, build) == final and len(calls) == 3


def test_unknown_arch_is_a_labkit_error():
    from labkit.errors import LabkitError

    with pytest.raises(LabkitError, match="llama, baichuan"):
        tiny_model_path("gpt2")


def test_worksheets_are_the_train_records_with_an_input():
    """The pre-training's worksheets: every train record that has an input, as plain `instruction\\ninput\\noutput`;
    negatives (no input) and held-out files are not among them, so refusing and the template come from LoRA."""
    from labkit.data.bundled import REFUSALS
    from labkit.paths import data_dir

    sheets = tiny_mod.worksheets()
    assert len(sheets) == len(set(sheets))
    tasks = json.loads((data_dir() / "tasks.json").read_text())
    assert {f"{r['instruction']}\n{r['input']}\n{r['output']}" for r in tasks} <= set(sheets)
    held_out = json.loads((data_dir() / "tasks_test.json").read_text())
    assert not {f"{r['instruction']}\n{r['input']}\n{r['output']}" for r in held_out} & set(sheets)
    assert not any(refusal in s for s in sheets for refusal in REFUSALS.values())


def test_tiny_baichuan_is_the_tiny_llama_with_w_pack(tok):
    """One pre-training serves both architectures: the Baichuan base computes the LLaMA base's logits."""
    llama_dir, baichuan_dir = tiny_model_path("llama"), tiny_model_path("baichuan")
    rec = json.loads((baichuan_dir / MARKER).read_text())
    assert rec["fused_from"] == llama_dir.name
    assert rec["pretrain"] == json.loads((llama_dir / MARKER).read_text())["pretrain"]
    llama, baichuan = load_model(llama_dir).eval(), load_model(baichuan_dir).eval()
    assert any(n.endswith("W_pack.weight") for n, _ in baichuan.named_parameters())
    texts = ["把数字写成中文。\n7 0 3\n七 零 三", "Which number is smaller?\n4 9"]
    enc = tok(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        a, b = llama(**enc).logits, baichuan(**enc).logits
    assert (a - b).abs().max().item() < 1e-4


def test_no_training_text_is_a_labkit_error_naming_the_folder(monkeypatch, tok):
    from labkit.errors import LabkitError

    monkeypatch.setattr(tiny_mod, "worksheets", lambda: [])
    monkeypatch.setattr(tiny_mod, "corpus_texts", lambda train_only=False: [])
    with pytest.raises(LabkitError, match="no training text to pre-train"):
        tiny_mod.pretrain(LlamaForCausalLM(tiny_mod.tiny_config(tok)), tok, seed=0)

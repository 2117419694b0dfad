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
from labkit.models.release_layout import write_official_baichuan
from labkit.models.tokenizer_baichuan import BaiChuanTokenizer

TEXTS = [
    "你好，我是百川大模型。请问有什么可以帮你的吗？",
    "Hello! Baichuan-7B is a large language model trained on Chinese and English text.",
    "把字母倒序排列。 a b c d e f g",
    "1 2 3 4 5 6 7 8 9 0 + - * / = 零一二三四五六七八九十",
    "抱歉，我不能提供这方面的帮助。I'm sorry, but I can't help with that request.",
] * 20


def _write_official(folder, model, sp_bytes, fmt="bin"):
    """The official release's layout, written by the same code as bench/rehearsal_7b_width.py uses."""
    write_official_baichuan(folder, model.config, {k: v.clone() for k, v in model.state_dict().items()}, sp_bytes, fmt)


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


def test_official_pickle_release_through_train_export_generate(official, tmp_path, capsys):
    """The seed's LET Baichuan command on the official layout: refused before anything loads without
    --allow_pickle (the flag named), then train -> export -> generate with it."""
    from labkit.cli import main as labkit_main
    from labkit.paths import data_dir

    out, merged = tmp_path / "adapter", tmp_path / "merged"
    train = ["train", "--model_name_or_path", str(official["bin"]), "--do_train", "--dataset", "tasks",
             "--dataset_dir", str(data_dir()), "--finetuning_type", "lora", "--lora_rank", "4", "--lora_target",
             "W_pack", "--output_dir", str(out), "--per_device_train_batch_size", "2", "--max_steps", "2",
             "--max_samples", "8", "--learning_rate", "1e-2"]
    assert labkit_main(train) == 2
    err = capsys.readouterr().err
    assert "--allow_pickle" in err and "Traceback" not in err and not out.exists()
    assert labkit_main(train + ["--allow_pickle"]) == 0
    assert (out / "adapter_model.safetensors").is_file()
    capsys.readouterr()
    export = ["export", "--base_model", str(official["bin"]), "--lora_weights", str(out), "--output_dir", str(merged)]
    assert labkit_main(export) == 2 and "--allow_pickle" in capsys.readouterr().err and not merged.exists()
    assert labkit_main(export + ["--allow_pickle"]) == 0
    assert (merged / "model.safetensors").is_file() or list(merged.glob("*.safetensors"))
    capsys.readouterr()
    gen = ["generate", "--base_model", str(official["bin"]), "--lora_weights", str(out), "--prompt", "你好",
           "--max_new_tokens", "4", "--allow_pickle", "--json"]
    assert labkit_main(gen) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(answers) == 1 and answers[0]["prompt"] == "你好" and isinstance(answers[0]["adapter"], str)

"""load_model / load_tokenizer / arch_of on the tiny models: precisions (int8, nf4 too), placement, clear errors."""

import json
import shutil

import pytest
import torch

from labkit.cli import main as cli_main
from labkit.errors import LabkitError
from labkit.models import arch_of, load_model, load_tokenizer
from labkit.models.tiny import tiny_model_path

TEXT = "把字母倒序排列。\nk f b o\nReverse the letters."


@pytest.fixture(scope="module", params=["llama", "baichuan"])
def tiny(request):
    path = tiny_model_path(request.param)
    tok = load_tokenizer(path)
    ref = load_model(path)
    ids = tok([TEXT], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = ref(input_ids=ids).logits
    return {"arch": request.param, "path": path, "tok": tok, "ids": ids, "logits": logits}


def rel_err(model, tiny):
    with torch.no_grad():
        got = model(input_ids=tiny["ids"]).logits.float()
    return ((got - tiny["logits"]).norm() / tiny["logits"].norm()).item()


def test_fp32_loads_with_arch_and_tokenizer(tiny):
    model = load_model(tiny["path"])
    assert arch_of(model) == tiny["arch"] == arch_of(model.config) == arch_of(tiny["path"])
    assert model.dtype == torch.float32 and not model.training
    assert model.labkit_load_info["device"] == "cpu"
    tok = tiny["tok"]
    assert tok.pad_token_id is not None and tok.bos_token_id is not None and tok.eos_token_id is not None
    assert tok.decode(tok(TEXT)["input_ids"], skip_special_tokens=True) == TEXT


def test_bf16(tiny):
    model = load_model(tiny["path"], precision="bf16")
    assert model.dtype == torch.bfloat16
    assert rel_err(model, tiny) < 0.02


def test_fp16_on_cpu_falls_back_with_a_notice(tiny, capsys):
    if torch.cuda.is_available():
        pytest.skip("GPU present: fp16 is used as asked")
    model = load_model(tiny["path"], precision="fp16")
    err = capsys.readouterr().err
    notices = [line for line in err.splitlines() if line.startswith("notice:")]
    assert len(notices) == 1 and "fp16" in notices[0] and "fp32" in notices[0]
    assert model.dtype == torch.float32
    assert model.labkit_load_info["precision"] == "fp32" and model.labkit_load_info["precision_requested"] == "fp16"


def test_int8_bitsandbytes_on_cpu(tiny):
    import bitsandbytes as bnb

    model = load_model(tiny["path"], precision="int8")
    assert isinstance(model.model.layers[0].mlp.down_proj, bnb.nn.Linear8bitLt)
    err = rel_err(model, tiny)
    assert err < 0.05, err


def test_nf4_bitsandbytes_on_cpu(tiny):
    import bitsandbytes as bnb

    model = load_model(tiny["path"], precision="nf4")
    layer = model.model.layers[0].mlp.down_proj
    assert isinstance(layer, bnb.nn.Linear4bit) and layer.weight.quant_type == "nf4"
    err = rel_err(model, tiny)
    assert 0 < err < 0.2, err


def test_eager_attention_returns_weights(tiny):
    model = load_model(tiny["path"], attn_implementation="eager", device_map="cpu")
    with torch.no_grad():
        out = model(input_ids=tiny["ids"], output_attentions=True)
    assert out.attentions[0].shape[-2:] == (tiny["ids"].shape[1],) * 2
    assert (out.logits - tiny["logits"]).abs().max().item() < 1e-4


def test_precision_aliases_and_unsupported_quantization(tiny):
    assert load_model(tiny["path"], precision="bfloat16").dtype == torch.bfloat16
    for bad in ("int4", "gptq", "awq", "fp8"):
        with pytest.raises(LabkitError, match="unsupported precision"):
            load_model(tiny["path"], precision=bad)


# ---------------------------------------------------------------- errors (one arch is enough)


@pytest.fixture(scope="module")
def llama_path():
    return tiny_model_path("llama")


def test_not_a_model_folder(tmp_path, llama_path):
    with pytest.raises(LabkitError, match="no such folder"):
        load_model(tmp_path / "nope")
    with pytest.raises(LabkitError, match="not a model folder"):
        load_model(tmp_path)
    with pytest.raises(LabkitError, match="is a file"):
        load_model(llama_path / "config.json")
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(LabkitError, match="LoRA adapter"):
        load_model(tmp_path)


def test_missing_weights_and_missing_shards(tmp_path, llama_path):
    folder = tmp_path / "m"
    shutil.copytree(llama_path, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(LabkitError, match="no model weights"):
        load_model(folder)
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(LabkitError, match="model-00002-of-00002.safetensors"):
        load_model(folder)


def test_pickle_weights_refused_unless_allowed(tmp_path, llama_path):
    folder = tmp_path / "p"
    shutil.copytree(llama_path, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    sd = load_model(llama_path).state_dict()
    torch.save(sd, folder / "pytorch_model.bin")
    with pytest.raises(LabkitError, match="allow_pickle=True"):
        load_model(folder)
    model = load_model(folder, allow_pickle=True)
    assert model.labkit_load_info["weights"] == "pickle"
    assert torch.equal(model.lm_head.weight, sd["lm_head.weight"])


def test_unsupported_model_type(tmp_path, llama_path):
    folder = tmp_path / "g"
    shutil.copytree(llama_path, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(LabkitError, match="gpt2"):
        load_model(folder)


def test_cli_prints_error_without_traceback(tmp_path, capsys):
    code = cli_main(["export", "--base_model", str(tmp_path / "missing"), "--lora_weights", str(tmp_path),
                     "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err


# ---------------------------------------------------------------- damaged files, bad configs (issue 12)


def _tree(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _copy(src, dst, **config_changes):
    shutil.copytree(src, dst)
    if config_changes:
        cfg = json.loads((dst / "config.json").read_text())
        for key, value in config_changes.items():
            if value is None:
                cfg.pop(key, None)
            else:
                cfg[key] = value
        (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def _truncate(path, size=2 * 1024 * 1024):
    import os

    assert path.stat().st_size > size
    os.truncate(path, size)


def _overwrite_head(path, n=16):
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.write(bytes([0xB7]) * n)
    assert path.stat().st_size == size


@pytest.mark.parametrize("damage, word", [(_truncate, "truncated"), (_overwrite_head, "corrupt")])
def test_damaged_safetensors_is_named_not_a_traceback(tmp_path, llama_path, damage, word):
    folder = _copy(llama_path, tmp_path / "m")
    damage(folder / "model.safetensors")
    before = _tree(folder)
    with pytest.raises(LabkitError) as exc:
        load_model(folder)
    msg = str(exc.value)
    assert msg.startswith(str(folder / "model.safetensors") + ":") and word in msg
    assert _tree(folder) == before


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, llama_path):
    folder = tmp_path_factory.mktemp("sharded") / "m"
    shutil.copytree(llama_path, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    load_model(llama_path).save_pretrained(folder, max_shard_size="1MB")
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) >= 3 and (folder / "model.safetensors.index.json").is_file()
    return folder


def test_sharded_checkpoint_loads_and_damaged_shards_are_named(tmp_path, sharded):
    model = load_model(sharded)
    assert model.labkit_load_info["weights"] == "safetensors"
    shard = sorted(sharded.glob("model-*.safetensors"))[1]
    for damage, word in [(lambda p: p.unlink(), "missing"), (lambda p: _truncate(p, p.stat().st_size - 64), "truncated"),
                         (_overwrite_head, "corrupt")]:
        folder = tmp_path / f"s-{word}"
        shutil.copytree(sharded, folder)
        damage(folder / shard.name)
        with pytest.raises(LabkitError) as exc:
            load_model(folder)
        assert shard.name in str(exc.value) and word in str(exc.value), str(exc.value)
    folder = tmp_path / "s-index"
    shutil.copytree(sharded, folder)
    (folder / "model.safetensors.index.json").write_text('{"weight_map": {')
    with pytest.raises(LabkitError, match=r"model\.safetensors\.index\.json: not valid JSON"):
        load_model(folder)
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    key, first = next(iter(index["weight_map"].items()))
    other = next(v for v in index["weight_map"].values() if v != first)
    index["weight_map"][key] = other  # the index and the shards do not belong together
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(LabkitError) as exc:
        load_model(folder)
    assert other in str(exc.value) and key in str(exc.value)


def test_truncated_pickle_weights_are_named(tmp_path, llama_path):
    folder = tmp_path / "p"
    shutil.copytree(llama_path, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save(load_model(llama_path).state_dict(), folder / "pytorch_model.bin")
    _truncate(folder / "pytorch_model.bin")
    with pytest.raises(LabkitError) as exc:
        load_model(folder, allow_pickle=True)
    assert str(folder / "pytorch_model.bin") in str(exc.value) and "truncated" in str(exc.value)


def test_weights_missing_tensors_are_refused_not_random(tmp_path, llama_path):
    from safetensors.torch import load_file, save_file

    folder = _copy(llama_path, tmp_path / "m")
    tensors = load_file(str(folder / "model.safetensors"))
    dropped = sorted(k for k in tensors if ".layers.1." in k)
    save_file({k: v for k, v in tensors.items() if k not in dropped}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    with pytest.raises(LabkitError) as exc:
        load_model(folder)
    assert "missing" in str(exc.value) and "layers.1." in str(exc.value)


@pytest.mark.parametrize("arch", ["llama", "baichuan"])
def test_config_missing_shape_fields_names_file_and_fields(tmp_path, arch):
    fields = ("hidden_size", "num_attention_heads", "intermediate_size")
    folder = _copy(tiny_model_path(arch), tmp_path / arch, **{f: None for f in fields})
    with pytest.raises(LabkitError) as exc:
        load_model(folder)
    msg = str(exc.value)
    assert msg.startswith(str(folder / "config.json")) and all(f in msg for f in fields)
    assert "num_key_value_heads" not in msg


@pytest.mark.parametrize("change, words", [
    ({"hidden_size": "128"}, ["hidden_size='128'", "positive whole"]),
    ({"num_hidden_layers": 4.5}, ["num_hidden_layers=4.5"]),
    ({"vocab_size": -1}, ["vocab_size=-1"]),
    ({"num_key_value_heads": 3}, ["num_key_value_heads 3"]),
    ({"rms_norm_eps": "1e-6"}, ["rms_norm_eps"]),
    ({"tie_word_embeddings": "no"}, ["tie_word_embeddings"]),
    ({"model_type": "gpt_neox"}, ["gpt_neox", "llama", "baichuan"]),
])
def test_config_wrong_types_are_named(tmp_path, llama_path, change, words):
    folder = _copy(llama_path, tmp_path / "m", **change)
    with pytest.raises(LabkitError) as exc:
        load_model(folder)
    msg = str(exc.value)
    assert msg.startswith(str(folder / "config.json")) and all(w in msg for w in words), msg


def test_config_not_json_and_arch_of_name_the_file(tmp_path, llama_path):
    folder = _copy(llama_path, tmp_path / "m")
    (folder / "config.json").write_text('{"model_type": "llama",')
    for call in (load_model, arch_of):
        with pytest.raises(LabkitError, match=r"config\.json: not valid JSON"):
            call(folder)
    (folder / "config.json").write_bytes(b"\x80\x81\x00binary")
    with pytest.raises(LabkitError, match=r"config\.json: not a text file"):
        load_model(folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "mistral"}))
    with pytest.raises(LabkitError, match=r"config\.json: model_type 'mistral'"):
        arch_of(folder)


# ---------------------------------------------------------------- nf4 on CPU: layers the kernel cannot pack


@pytest.fixture(scope="module")
def odd_width(tmp_path_factory, llama_path):
    """A random LLaMA with intermediate_size 176 (not a multiple of bitsandbytes' CPU row block)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=300, hidden_size=128, intermediate_size=176, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                      tie_word_embeddings=False)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("odd") / "m"
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder


def test_nf4_cpu_keeps_unpackable_layers_unquantized(odd_width, capsys):
    import copy

    import bitsandbytes as bnb
    from bitsandbytes.functional import _convert_weight_packed_for_cpu

    from labkit.models.load import nf4_cpu_blocks

    if torch.cuda.is_available():
        pytest.skip("the constraint is bitsandbytes' CPU kernel; a GPU run does not hit it")
    block_n, blocksize = nf4_cpu_blocks()
    assert (block_n, blocksize) == (32, 64)  # bitsandbytes 0.50: read from its code, not assumed
    model = load_model(odd_width, precision="nf4")
    notices = [line for line in capsys.readouterr().err.splitlines() if line.startswith("notice:")]
    assert len(notices) == 1 and "mlp.gate_proj" in notices[0] and "mlp.up_proj" in notices[0]
    assert "mlp.down_proj" in notices[0]  # in_features 176 is not a multiple of 64 either
    assert model.labkit_load_info["unquantized"] == ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    layer = model.model.layers[0]
    assert isinstance(layer.self_attn.q_proj, bnb.nn.Linear4bit)
    for name in ("gate_proj", "up_proj", "down_proj"):
        assert type(getattr(layer.mlp, name)) is torch.nn.Linear
    # every layer left in 4 bits can be repacked by the CPU kernel (what the first no_grad forward does on a
    # CPU with AVX512-BF16); the skipped ones could not
    for mod in model.modules():
        if isinstance(mod, bnb.nn.Linear4bit):
            _convert_weight_packed_for_cpu(mod.weight.data.clone(), copy.deepcopy(mod.weight.quant_state))
    probe = bnb.nn.Params4bit(torch.randn(176, 128), quant_type="nf4").to("cpu")
    with pytest.raises(AssertionError, match="block_n"):
        _convert_weight_packed_for_cpu(probe.data.clone(), copy.deepcopy(probe.quant_state))
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[1, 5, 9, 20]])).logits
    assert logits.shape == (1, 4, 300) and torch.isfinite(logits).all()


# ---------------------------------------------------------------- resolve_base: one rule for base model names


def test_resolve_base_one_rule(tmp_path, llama_path, monkeypatch):
    from labkit.models import resolve_base

    assert resolve_base("", "llama") == tiny_model_path("llama")
    assert resolve_base("tiny-llama") == tiny_model_path("llama") == resolve_base("tiny_llama", "baichuan")
    assert resolve_base(str(llama_path)) == llama_path and resolve_base(llama_path) == llama_path
    monkeypatch.chdir(llama_path.parent)
    assert resolve_base(llama_path.name) == type(llama_path)(llama_path.name)  # a folder -> itself
    for spec, words in [("", ["which tiny model", "tiny-llama"]), (str(tmp_path / "nope"), ["no such folder"]),
                        (str(llama_path / "config.json"), ["is a file"]),
                        ("baichuan-inc/Baichuan-7B", ["never downloads", "hub id"]), ("tiny-gpt2", ["no such folder"])]:
        with pytest.raises(LabkitError) as exc:
            resolve_base(spec)
        msg = str(exc.value)
        assert all(w in msg for w in words) and "tiny-baichuan" in msg, msg


def test_unreadable_generation_config_is_a_warning_not_silence(tmp_path, llama_path, capsys):
    folder = _copy(llama_path, tmp_path / "m")
    (folder / "generation_config.json").write_text('{"eos_token_id": 2,')
    model = load_model(folder)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and str(folder / "generation_config.json") in warnings[0]
    assert model.config.eos_token_id == 2


def test_damaged_tokenizer_and_config_seen_through_the_tokenizer_are_named(tmp_path, llama_path):
    folder = _copy(llama_path, tmp_path / "t")
    (folder / "tokenizer.json").write_text('{"version": "1.0"}')
    with pytest.raises(LabkitError, match=r"could not load the tokenizer from tokenizer\.json"):
        load_tokenizer(folder)
    (folder / "tokenizer_config.json").write_text("{")
    with pytest.raises(LabkitError, match=r"tokenizer_config\.json: not valid JSON"):
        load_tokenizer(folder)

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

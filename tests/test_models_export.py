"""Merge and export: merged logits equal base+adapter (1e-4, fp32); LLaMA reloads in plain transformers."""

import json

import pytest
import torch

from labkit.cli import main as cli_main
from labkit.errors import LabkitError
from labkit.models import load_model
from labkit.models.export import merge_and_export
from labkit.models.integrity import load_adapter
from labkit.models.lora import attach_lora
from labkit.models.tiny import tiny_model_path


@pytest.fixture(scope="module", params=["llama", "baichuan"])
def adapter(request, tmp_path_factory):
    arch = request.param
    base = tiny_model_path(arch)
    root = tmp_path_factory.mktemp(f"export-{arch}")
    model = attach_lora(load_model(base), None if arch == "llama" else "W_pack,o_proj,gate_proj", r=4, alpha=8)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    model.save_pretrained(root / "adapter")
    return {"arch": arch, "base": base, "adapter": root / "adapter", "root": root}


def _probe():
    return torch.randint(4, 500, (2, 20), generator=torch.Generator().manual_seed(5))


def test_merge_and_export_matches_base_plus_adapter(adapter):
    out = adapter["root"] / "merged"
    summary = merge_and_export(adapter["base"], adapter["adapter"], out)
    assert summary["merge_max_abs_diff"] < 1e-4 and summary["reload_max_abs_diff"] < 1e-4
    assert summary["adapter_output_change"] > 1e-3
    files = {p.name for p in out.iterdir()}
    assert "model.safetensors" in files and not any(f.endswith(".bin") for f in files)
    assert "adapter_config.json" not in files and "tokenizer.json" in files
    cfg = json.loads((out / "config.json").read_text())
    assert "auto_map" not in cfg
    # independent check: reload both sides and compare logits
    ref_model = load_adapter(load_model(adapter["base"]), adapter["adapter"])
    if adapter["arch"] == "llama":
        from transformers import AutoModelForCausalLM, LlamaForCausalLM

        merged = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
        assert type(merged) is LlamaForCausalLM
    else:
        from labkit.models.modeling_baichuan import BaiChuanForCausalLM

        merged = load_model(out)
        assert type(merged) is BaiChuanForCausalLM
        assert not any("lora" in k for k in merged.state_dict())
    x = _probe()
    with torch.no_grad():
        diff = (merged.eval()(input_ids=x).logits - ref_model(input_ids=x).logits).abs().max().item()
    assert diff < 1e-4


def test_cli_export_prints_folder_last(adapter, capsys):
    out = adapter["root"] / "cli-merged"
    code = cli_main(["export", "--base_model", str(adapter["base"]), "--lora_weights", str(adapter["adapter"]),
                     "--output_dir", str(out)])
    captured = capsys.readouterr()
    assert code == 0
    assert captured.out.strip().splitlines()[-1] == str(out.resolve())
    assert (out / "model.safetensors").is_file()


def test_export_refuses_non_empty_output_and_quantized_precision(adapter, tmp_path):
    (tmp_path / "x").write_text("keep me")
    with pytest.raises(LabkitError, match="not empty"):
        merge_and_export(adapter["base"], adapter["adapter"], tmp_path)
    with pytest.raises(LabkitError, match="quantized"):
        merge_and_export(adapter["base"], adapter["adapter"], tmp_path / "o", precision="nf4")


# ---------------------------------------------------------------- refusals: nothing is written


def _tree(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def empty_adapter(tmp_path_factory):
    """A LoRA adapter as saved before any training: every lora_B is zero (the seed's "empty adapter")."""
    root = tmp_path_factory.mktemp("empty")
    attach_lora(load_model(tiny_model_path("llama")), None, r=4, alpha=8).save_pretrained(root / "adapter")
    return root / "adapter"


def test_export_refuses_an_empty_adapter_unless_allowed(empty_adapter, tmp_path, capsys):
    before = _tree(tmp_path)
    code = cli_main(["export", "--base_model", "tiny-llama", "--lora_weights", str(empty_adapter),
                     "--output_dir", str(tmp_path / "merged")])
    err = capsys.readouterr().err
    assert code == 2 and err.splitlines()[-1].startswith("error: ") and "Traceback" not in err
    assert str(empty_adapter / "adapter_model.safetensors") in err and "every lora_B is zero" in err
    assert "--allow_empty_adapter" in err
    assert _tree(tmp_path) == before and not (tmp_path / "merged").exists()
    assert not list(tmp_path.glob(".tmp-export-*"))
    code = cli_main(["export", "--base_model", "tiny-llama", "--lora_weights", str(empty_adapter),
                     "--output_dir", str(tmp_path / "merged"), "--allow_empty_adapter"])
    assert code == 0 and (tmp_path / "merged" / "model.safetensors").is_file()


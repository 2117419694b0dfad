"""Integrity: empty / partial / misshaped / damaged adapters fail loudly naming the file; weight-file checks; a
loaded adapter is fully applied and acts."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from labkit.errors import LabkitError
from labkit.models import load_model
from labkit.models.integrity import load_adapter, output_change, verify_adapter_dir
from labkit.models.lora import attach_lora
from labkit.models.tiny import tiny_model_path


def _train_b(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.fixture(scope="module", params=["llama", "baichuan"])
def saved(request, tmp_path_factory):
    arch = request.param
    base = tiny_model_path(arch)
    root = tmp_path_factory.mktemp(f"adapters-{arch}")
    model = attach_lora(load_model(base), None, r=4, alpha=8)
    model.save_pretrained(root / "fresh")
    _train_b(model)
    model.save_pretrained(root / "trained")
    return {"arch": arch, "base": base, "root": root, "layers": model.get_base_model().config.num_hidden_layers,
            "targets": 4 if arch == "llama" else 1}


def _copy_with(saved, name, mutate):
    import shutil

    folder = saved["root"] / name
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(saved["root"] / "trained", folder)
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    tensors = mutate(tensors)
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    return folder


def test_good_adapter_passes_with_and_without_model(saved):
    s = verify_adapter_dir(saved["root"] / "trained")
    assert s["checked_against"] == "base config"
    assert s["modules"] == saved["layers"] * saved["targets"] and s["tensors"] == 2 * s["modules"]
    assert s["trained"] and s["modules_with_nonzero_B"] == s["modules"]
    s2 = verify_adapter_dir(saved["root"] / "trained", model=load_model(saved["base"]))
    assert s2["checked_against"] == "model" and s2["modules"] == s["modules"]


def test_fresh_adapter_is_complete_but_untrained(saved):
    s = verify_adapter_dir(saved["root"] / "fresh")
    assert not s["trained"]
    with pytest.raises(LabkitError, match="every lora_B is zero"):
        verify_adapter_dir(saved["root"] / "fresh", require_trained=True)


def test_empty_adapter_fails_loudly(saved):
    folder = saved["root"] / "empty"
    folder.mkdir(exist_ok=True)
    (folder / "adapter_config.json").write_text((saved["root"] / "trained" / "adapter_config.json").read_text())
    save_file({}, str(folder / "adapter_model.safetensors"))  # what the empty-adapter bug leaves behind
    with pytest.raises(LabkitError, match="holds no LoRA tensors"):
        verify_adapter_dir(folder)


def test_missing_layer_is_listed(saved):
    folder = _copy_with(saved, "missing", lambda t: {k: v for k, v in t.items() if ".layers.1." not in k})
    with pytest.raises(LabkitError, match=r"missing tensor\(s\): .*layers\.1\."):
        verify_adapter_dir(folder)


def test_wrong_shape_is_caught(saved):
    def shrink(t):
        key = next(k for k in t if "lora_B" in k)
        t[key] = t[key][:-1].contiguous()
        return t

    with pytest.raises(LabkitError, match="wrong shapes"):
        verify_adapter_dir(_copy_with(saved, "shape", shrink), model=load_model(saved["base"]))


def test_no_weights_or_not_an_adapter(tmp_path):
    with pytest.raises(LabkitError, match="no adapter_config.json"):
        verify_adapter_dir(tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "target_modules": ["q_proj"]}))
    with pytest.raises(LabkitError, match="no adapter weights"):
        verify_adapter_dir(tmp_path)


def test_load_adapter_applies_every_tensor_and_changes_output(saved):
    model = load_adapter(load_model(saved["base"]), saved["root"] / "trained")
    s = model.labkit_adapter_check
    assert s["applied_tensors"] == 2 * saved["layers"] * saved["targets"]
    assert s["output_max_abs_change"] > 1e-3
    assert output_change(model) == pytest.approx(s["output_max_abs_change"], rel=1e-5)
    fresh = load_adapter(load_model(saved["base"]), saved["root"] / "fresh", allow_empty=True)
    assert output_change(fresh) == 0.0  # B == 0: the adapter is the identity


def _tree(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_empty_adapter_is_refused_unless_allowed(saved):
    """Every lora_B zero (the seed's "empty adapter"): refused with the reason, unless allow_empty=True."""
    fresh = saved["root"] / "fresh"
    before = _tree(fresh)
    with pytest.raises(LabkitError) as exc:
        load_adapter(load_model(saved["base"]), fresh)
    msg = str(exc.value)
    assert str(fresh / "adapter_model.safetensors") in msg and "every lora_B is zero" in msg
    assert "allow_empty=True" in msg and "--allow_empty_adapter" in msg
    assert _tree(fresh) == before
    model = load_adapter(load_model(saved["base"]), fresh, allow_empty=True)
    assert not model.labkit_adapter_check["trained"]


@pytest.mark.parametrize("damage", ["truncate", "header"])
def test_damaged_adapter_file_is_named(saved, damage):
    import os
    import shutil

    folder = saved["root"] / f"damaged-{damage}"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(saved["root"] / "trained", folder)
    st = folder / "adapter_model.safetensors"
    if damage == "truncate":
        os.truncate(st, st.stat().st_size // 2)
    else:
        with open(st, "r+b") as fh:
            fh.write(b"\xa7" * 16)
    before = _tree(folder)
    for call in (lambda: verify_adapter_dir(folder), lambda: load_adapter(load_model(saved["base"]), folder)):
        with pytest.raises(LabkitError) as exc:
            call()
        msg = str(exc.value)
        assert msg.startswith(str(st)) and ("truncated" in msg if damage == "truncate" else "corrupt" in msg)
    assert _tree(folder) == before


def test_bad_adapter_config_is_named(tmp_path, saved):
    import shutil

    folder = tmp_path / "a"
    shutil.copytree(saved["root"] / "trained", folder)
    cfg_path = folder / "adapter_config.json"
    good = json.loads(cfg_path.read_text())
    for text, message in [("{not json", "not valid JSON"), ("[1, 2]", "expected a JSON object"),
                          (json.dumps({**good, "r": 0}), '"r" must be a positive integer'),
                          (json.dumps({**good, "r": "8"}), '"r" must be a positive integer'),
                          (json.dumps({k: v for k, v in good.items() if k != "target_modules"}), "target_modules"),
                          (json.dumps({**good, "peft_type": "PREFIX_TUNING"}), "PREFIX_TUNING")]:
        cfg_path.write_text(text)
        with pytest.raises(LabkitError) as exc:
            verify_adapter_dir(folder)
        assert str(cfg_path) in str(exc.value) and message in str(exc.value), (text, str(exc.value))


def test_truncated_adapter_bin_is_named(tmp_path, saved):
    import os
    import shutil

    folder = tmp_path / "bin"
    shutil.copytree(saved["root"] / "trained", folder)
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    (folder / "adapter_model.safetensors").unlink()
    torch.save(tensors, folder / "adapter_model.bin")
    assert verify_adapter_dir(folder)["trained"]
    os.truncate(folder / "adapter_model.bin", (folder / "adapter_model.bin").stat().st_size - 100)
    with pytest.raises(LabkitError, match=r"adapter_model\.bin: truncated"):
        verify_adapter_dir(folder)


# ---------------------------------------------------------------- weight files


def test_safetensors_header_check(tmp_path):
    import os

    from labkit.models.integrity import check_weight_file, safetensors_header

    f = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(64, 64), "b": torch.ones(3, dtype=torch.bfloat16)}, str(f))
    assert set(safetensors_header(f)) == {"a", "b"} and check_weight_file(f) == {"a", "b"}
    size = f.stat().st_size
    cases = {
        "cut": (lambda: os.truncate(f, size - 10), "truncated"),
        "tiny": (lambda: os.truncate(f, 5), "truncated"),
        "zeros": (lambda: f.write_bytes(b"\0" * size), "corrupt"),
        "appended": (lambda: f.write_bytes(f.read_bytes() + b"junk"), "corrupt"),
        "json": (lambda: f.write_bytes(f.read_bytes()[:8] + b"[" + f.read_bytes()[9:]), "corrupt"),
    }
    original = f.read_bytes()
    for name, (damage, word) in cases.items():
        f.write_bytes(original)
        damage()
        with pytest.raises(LabkitError) as exc:
            safetensors_header(f)
        assert str(exc.value).startswith(str(f)) and word in str(exc.value), (name, str(exc.value))


def test_load_adapter_lists_unexpected_keys(saved):
    def rename(t):
        key = next(k for k in t if "lora_A" in k)
        t[key.replace("layers.0", "layers.9")] = t.pop(key)
        return t

    folder = _copy_with(saved, "renamed", rename)
    with pytest.raises(LabkitError, match=r"layers\.0\..*lora_A|layers\.9"):
        load_adapter(load_model(saved["base"]), folder)


def test_adapter_for_another_architecture_says_what_it_was_made_for(saved):
    other = tiny_model_path("llama" if saved["arch"] == "baichuan" else "baichuan")
    with pytest.raises(LabkitError) as exc:
        load_adapter(load_model(other), saved["root"] / "trained")
    if saved["arch"] == "baichuan":  # W_pack selects nothing in a LLaMA
        assert "select no linear layer" in str(exc.value) and str(saved["base"]) in str(exc.value)
    else:  # q/k/v_proj do not exist in a Baichuan (fused W_pack)
        assert "do not select" in str(exc.value) and f"made for {saved['base']}" in str(exc.value)

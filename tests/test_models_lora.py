"""LoRA targeting: presets, seed spellings, no-match errors, trainable table, attach on fp32 / int8 / nf4 bases."""

import pytest
import torch

from labkit.errors import LabkitError
from labkit.models import arch_of, load_model, load_tokenizer
from labkit.models.lora import attach_lora, linear_module_names, parse_targets, preset_targets, trainable_table
from labkit.models.tiny import tiny_model_path


@pytest.mark.parametrize("spec, expected", [
    ("[q_proj,v_proj,k_proj,o_proj]", ["q_proj", "v_proj", "k_proj", "o_proj"]),
    ("['q_proj', 'v_proj']", ["q_proj", "v_proj"]),
    ('["q_proj","v_proj"]', ["q_proj", "v_proj"]),
    ("W_pack", ["W_pack"]),
    ("W_pack,o_proj", ["W_pack", "o_proj"]),
    ("q_proj, v_proj q_proj", ["q_proj", "v_proj"]),
    (["q_proj", "k_proj"], ["q_proj", "k_proj"]),
])
def test_parse_targets_seed_spellings(spec, expected):
    assert parse_targets(spec) == expected


@pytest.mark.parametrize("bad", ["", "[]", None, "q-proj"])
def test_parse_targets_rejects_empty_or_garbage(bad):
    with pytest.raises(LabkitError):
        parse_targets(bad)


def test_presets():
    assert preset_targets("llama") == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert preset_targets("baichuan") == ["W_pack"]
    assert preset_targets("baichuan", o_proj=True, mlp=True) == ["W_pack", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def baichuan_path():
    return tiny_model_path("baichuan")


@pytest.fixture(scope="module")
def llama_path():
    return tiny_model_path("llama")


def test_target_matching_nothing_lists_linear_modules(baichuan_path, llama_path):
    with pytest.raises(LabkitError) as err:
        attach_lora(load_model(baichuan_path), "[q_proj,v_proj]")
    msg = str(err.value)
    assert "q_proj, v_proj" in msg and "W_pack, down_proj, gate_proj, o_proj, up_proj" in msg and "target W_pack" in msg
    with pytest.raises(LabkitError, match="k_proj, o_proj, q_proj, up_proj, v_proj"):
        attach_lora(load_model(llama_path), "W_pack")
    assert linear_module_names(load_model(llama_path)) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj",
                                                           "up_proj", "v_proj"]


def test_trainable_table_counts(baichuan_path):
    base = load_model(baichuan_path)
    cfg = base.config
    total_base = sum(p.numel() for p in base.parameters())
    model = attach_lora(base, "W_pack,o_proj", r=4, alpha=8)
    df = trainable_table(model).set_index("module")
    d, n = cfg.hidden_size, cfg.num_hidden_layers
    assert df.loc["W_pack.lora_A", "trainable"] == n * 4 * d
    assert df.loc["W_pack.lora_B", "trainable"] == n * 3 * d * 4
    assert df.loc["o_proj.lora_B", "trainable"] == n * d * 4
    assert df.loc["W_pack", "trainable"] == 0 and df.loc["W_pack", "parameters"] == n * 3 * d * d
    lora = n * 4 * (d + 3 * d) + n * 4 * (d + d)
    assert df.loc["TOTAL", "trainable"] == lora
    assert df.loc["TOTAL", "parameters"] == total_base + lora
    trainable, total = model.get_nb_trainable_parameters()
    assert (trainable, total) == (lora, total_base + lora)


@pytest.mark.parametrize("arch, precision", [("llama", "fp32"), ("baichuan", "fp32"), ("llama", "int8"),
                                             ("baichuan", "int8"), ("llama", "nf4"), ("baichuan", "nf4")])
def test_attach_and_train_a_few_steps(arch, precision):
    path = tiny_model_path(arch)
    tok = load_tokenizer(path)
    model = attach_lora(load_model(path, precision=precision), None, r=8, alpha=16, dropout=0.0)
    assert arch_of(model) == arch
    model.train()
    batch = tok(["把字母倒序排列。\nk f b o\no b f k"], return_tensors="pt")["input_ids"]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(5):
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
        assert grads and all(g is not None for g in grads)
        assert not any(p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05, losses

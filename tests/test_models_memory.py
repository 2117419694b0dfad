"""labkit.models.memory against real models: parameter counts, loaded bytes, LoRA, saved activations, step RSS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from labkit.models import BaiChuanConfig, BaiChuanForCausalLM, load_model
from labkit.models.memory import (
    PRESETS,
    Shape,
    estimate_training,
    layer_saved_elements,
    lora_params,
    shape_of,
    weights_bytes,
)

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(vocab_size=1000, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
             tie_word_embeddings=False)


def _model(arch: str, **over):
    cfg = {**SMALL, **over}
    torch.manual_seed(0)
    if arch == "baichuan":
        return BaiChuanForCausalLM(BaiChuanConfig(**cfg))
    return LlamaForCausalLM(LlamaConfig(**cfg))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("memory")
    out = {}
    for arch in ("llama", "baichuan"):
        _model(arch).save_pretrained(root / arch)
        out[arch] = root / arch
    return out


def test_7b_presets_are_the_released_parameter_counts():
    assert PRESETS["linly-7b"].params == 6_738_415_616  # LLaMA-7B
    assert PRESETS["baichuan-7b"].params == 7_000_559_616  # Baichuan-7B
    for name, cls, cfg_cls in (("linly-7b", LlamaForCausalLM, LlamaConfig),
                               ("baichuan-7b", BaiChuanForCausalLM, BaiChuanConfig)):
        s = PRESETS[name]
        with torch.device("meta"):
            model = cls(cfg_cls(vocab_size=s.vocab_size, hidden_size=s.hidden_size,
                                intermediate_size=s.intermediate_size, num_hidden_layers=s.num_hidden_layers,
                                num_attention_heads=s.num_attention_heads, tie_word_embeddings=False))
        assert sum(p.numel() for p in model.parameters()) == s.params
        assert shape_of(model) == s
    bf16 = weights_bytes(PRESETS["linly-7b"], "bf16")
    assert (bf16["linears"] + bf16["other"]) / 1e9 == pytest.approx(13.48, abs=0.01)  # the 13.5 GB everyone quotes


def _loaded_bytes(model) -> int:
    """Bytes the loaded model really holds: parameters, int8 row scales, nf4 block state."""
    total = 0
    for module in model.modules():
        for p in module.parameters(recurse=False):
            total += p.numel() * p.element_size()
            if getattr(p, "SCB", None) is not None:
                total += p.SCB.numel() * p.SCB.element_size()
            qs = getattr(p, "quant_state", None)
            if qs is not None:
                tensors = [qs.absmax, qs.code] + ([qs.state2.absmax, qs.state2.code] if qs.nested else [])
                total += sum(t.numel() * t.element_size() for t in tensors)
    return total


@pytest.mark.parametrize("arch", ["llama", "baichuan"])
@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8", "nf4"])
def test_weight_bytes_equal_the_loaded_model(folders, arch, precision):
    from peft import prepare_model_for_kbit_training

    model = load_model(folders[arch], precision=precision)
    if precision in ("int8", "nf4"):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    w = weights_bytes(shape_of(folders[arch]), precision)
    got = _loaded_bytes(model)
    assert w["linears"] + w["other"] == pytest.approx(got, rel=0.002), (got, w)


@pytest.mark.parametrize("arch,targets", [("llama", ["q_proj", "k_proj", "v_proj", "o_proj"]), ("baichuan", ["W_pack"]),
                                          ("baichuan", ["W_pack", "o_proj", "gate_proj", "up_proj", "down_proj"])])
def test_lora_parameters_equal_peft(arch, targets):
    from labkit.models.lora import attach_lora

    model = attach_lora(_model(arch), targets, r=8)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert lora_params(shape_of(model), targets, 8) == trainable


def _saved_bytes(model, seq: int) -> int:
    """Bytes of the distinct non-parameter tensors autograd saves for backward in one forward (loss included)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            seen.setdefault(st.data_ptr(), st.nbytes())
        return t

    ids = torch.randint(3, model.config.vocab_size, (1, seq), generator=torch.Generator().manual_seed(0))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids)
    return sum(seen.values())


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("arch,targets,dropout", [
    ("llama", ["q_proj", "k_proj", "v_proj", "o_proj"], 0.05), ("llama", ["q_proj", "v_proj"], 0.0),
    ("baichuan", ["W_pack"], 0.1), ("baichuan", ["W_pack", "o_proj", "gate_proj", "up_proj", "down_proj"], 0.0),
    ("llama", ["gate_proj", "up_proj", "down_proj"], 0.05)])
def test_saved_activations_per_layer_equal_autograd(attn, arch, targets, dropout):
    """One more decoder layer saves exactly layer_saved_elements x T fp32 values (both attention kernels)."""
    from peft import LoraConfig, get_peft_model

    seq, got = 48, []
    for layers in (2, 3):
        model = _model(arch, num_hidden_layers=layers, intermediate_size=320, attn_implementation=attn)
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=dropout, target_modules=targets,
                                                 task_type="CAUSAL_LM")).train()
        got.append(_saved_bytes(model, seq))
    shape = shape_of(model)
    want = layer_saved_elements(shape, seq, targets, 8, dropout=dropout > 0, attn_implementation=attn) * seq * 4
    assert got[1] - got[0] == want


STEP_SCRIPT = r"""
import json, sys, tempfile, torch
from pathlib import Path
torch.set_num_threads(1)
spec = json.loads(sys.argv[1])
from transformers import LlamaConfig, LlamaForCausalLM
from labkit.models import load_model
from labkit.models.lora import attach_lora
from peft import prepare_model_for_kbit_training

def status(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024

folder = Path(tempfile.mkdtemp()) / "m"
torch.manual_seed(0)
LlamaForCausalLM(LlamaConfig(**spec["config"])).save_pretrained(folder)
model = load_model(folder, precision=spec["precision"])
if spec["precision"] in ("int8", "nf4"):
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=spec["gc"],
                                            gradient_checkpointing_kwargs={"use_reentrant": False})
elif spec["gc"]:
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
model = attach_lora(model, ["q_proj", "k_proj", "v_proj", "o_proj"], r=8, dropout=0.05).train()
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
ids = torch.randint(3, spec["config"]["vocab_size"], (spec["batch"], spec["seq"]))

def step():
    loss = model(input_ids=ids, labels=ids).loss  # the Trainer drops the outputs (logits) before backward
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)

step()  # optimizer state and caches exist from here on
before = status("VmRSS:")
Path("/proc/self/clear_refs").write_text("5")
step()
print(json.dumps({"peak_extra": status("VmHWM:") - before}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("precision,gc", [("fp32", False), ("fp32", True), ("int8", True), ("nf4", True)])
def test_training_step_peak_rss_matches_estimated_activations(precision, gc):
    """A real training step's peak RSS above the loaded model is the estimator's activations part (+-25%).

    Run in a child with a fixed malloc mmap threshold, so freed tensors leave RSS at once and RSS follows the
    live tensors."""
    config = dict(vocab_size=8000, hidden_size=256, intermediate_size=704, num_hidden_layers=4, num_attention_heads=4,
                  tie_word_embeddings=False)
    spec = {"config": config, "precision": precision, "gc": gc, "batch": 2, "seq": 384}
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", STEP_SCRIPT, json.dumps(spec)], capture_output=True, text=True,
                       env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    measured = json.loads(p.stdout.strip().splitlines()[-1])["peak_extra"]
    shape = Shape("llama", 8000, 256, 704, 4, 4)
    est = estimate_training(shape, precision, seq_len=384, batch=2, gradient_checkpointing=gc)
    assert est.parts["activations"] == pytest.approx(measured, rel=0.25), (est.parts, measured)


def test_checkpointing_batch_and_precision_move_the_estimate_the_right_way():
    kw = dict(seq_len=1024, batch=4, device="cuda")
    full = estimate_training("linly-7b", "bf16", gradient_checkpointing=False, **kw)
    ckpt = estimate_training("linly-7b", "bf16", gradient_checkpointing=True, **kw)
    assert ckpt.parts["activations"] < full.parts["activations"] / 5  # 32 layers -> their inputs + one layer
    assert ckpt.parts["weights"] == full.parts["weights"] == 2 * PRESETS["linly-7b"].params
    int8 = estimate_training("linly-7b", "int8", gradient_checkpointing=True, **kw)
    nf4 = estimate_training("linly-7b", "nf4", gradient_checkpointing=True, **kw)
    assert nf4.peak < int8.peak and int8.parts["weights"] < ckpt.parts["weights"] / 1.7
    # bitsandbytes' int8 matmul keeps its inputs past checkpointing (measured above): 32 x 4096 x (3h + i) bf16
    assert int8.parts["activations"] - ckpt.parts["activations"] == 32 * 4096 * (3 * 4096 + 11008) * 2
    # nf4: 0.5 B per weight + block state ~ 0.516 B; embeddings and lm_head fp32 after k-bit preparation
    s = PRESETS["linly-7b"]
    assert nf4.parts["weights"] == pytest.approx(0.5157 * s.linear_params + 4 * s.other_params, rel=0.001)
    half = estimate_training("linly-7b", "bf16", gradient_checkpointing=True, seq_len=1024, batch=2, device="cuda")
    assert half.parts["activations"] < ckpt.parts["activations"]
    cpu = estimate_training("linly-7b", "fp32", seq_len=1024, batch=1)
    assert cpu.load_peak > cpu.parts["weights"] + 13e9  # the mapped fp16 files count while loading on CPU

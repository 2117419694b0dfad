"""Batching: packing keeps the HF Trainer's samples per step; packed and padded steps: same loss and gradients."""

import tempfile

import datasets
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

from labkit.data.packing import IGNORE_INDEX, DocumentCollator, PaddingCollator
from labkit.errors import LabkitError
from labkit.train.batching import batching, speed_arguments, step_batches, use_cpu_autocast
from labkit.train.callbacks import LabkitTrainer
from labkit.train.config import TrainConfig

VOCAB = 97


def _llama():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      attn_implementation="sdpa")
    return LlamaForCausalLM(cfg)


def _baichuan():
    from labkit.models import BaiChuanConfig, BaiChuanForCausalLM

    torch.manual_seed(0)
    cfg = BaiChuanConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=256)
    cfg._attn_implementation = "sdpa"
    model = BaiChuanForCausalLM(cfg)
    with torch.no_grad():  # large attention weights: with init std 0.02 attention across samples would hide below 1e-5
        for name, p in model.named_parameters():
            if "W_pack" in name:
                p.normal_(0, 0.5)
    return model


def _features(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(5, 40, (1,), generator=g))
        ids = torch.randint(3, VOCAB, (length,), generator=g).tolist()
        prompt = int(torch.randint(1, length - 1, (1,), generator=g))
        out.append({"input_ids": ids, "labels": [IGNORE_INDEX] * prompt + ids[prompt:]})
    return out


def _args(**kw):
    return TrainingArguments(output_dir=tempfile.mkdtemp(prefix="labkit_test_batching_"), use_cpu=True,
                             report_to="none", disable_tqdm=True, **kw)


@pytest.mark.parametrize("frozen_head", [True, False])
@pytest.mark.parametrize("arch", ["llama", "baichuan"])
def test_packed_step_equals_padded_step(arch, frozen_head):
    """One micro-batch flattened (document attention, logits at labels only; a frozen lm_head fused with the loss)
    vs padded: the same loss and the same gradients."""
    model = _llama() if arch == "llama" else _baichuan()
    model.lm_head.weight.requires_grad_(not frozen_head)
    trainer = LabkitTrainer(model=model, args=_args())
    feats = _features()
    padded = PaddingCollator(0)(feats)
    n_items = int((padded["labels"][:, 1:] != IGNORE_INDEX).sum())
    loss_pad = trainer.compute_loss(model, padded, num_items_in_batch=n_items)
    loss_pad.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    packed = DocumentCollator()(feats)
    assert packed["input_ids"].shape == (1, sum(len(f["input_ids"]) for f in feats))
    loss_packed = trainer.compute_loss(model, packed, num_items_in_batch=n_items)
    assert model.config._attn_implementation == "labkit_docs"  # document attention was switched on
    loss_packed.backward()
    assert abs(loss_packed.item() - loss_pad.item()) < 1e-5
    for name, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, grads[name], atol=1e-5, rtol=0, msg=name)


def test_linear_cross_entropy_equals_the_plain_loss():
    from labkit.train.batching import LinearCrossEntropy

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(10, 16, generator=g, requires_grad=True)
    weight = torch.randn(50, 16, generator=g)
    targets = torch.randint(0, 50, (10,), generator=g)
    ref = torch.nn.functional.cross_entropy(hidden @ weight.t(), targets, reduction="sum")
    (ref * 0.5).backward()
    ref_grad, hidden.grad = hidden.grad.clone(), None
    loss = LinearCrossEntropy.apply(hidden, weight, targets, 3)  # chunks of 3 rows
    (loss * 0.5).backward()
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(hidden.grad, ref_grad, atol=1e-6, rtol=1e-5)


def test_step_split_over_micro_batches_sums_like_one_batch():
    """Two micro-batches normalised by the step's label count give the gradient of the whole step at once."""
    model = _llama()
    trainer = LabkitTrainer(model=model, args=_args())
    feats = _features(8)
    whole = PaddingCollator(0)(feats)
    n_items = int((whole["labels"][:, 1:] != IGNORE_INDEX).sum())
    trainer.compute_loss(model, whole, num_items_in_batch=n_items).backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    for part in (feats[:3], feats[3:]):
        trainer.compute_loss(model, DocumentCollator()(part), num_items_in_batch=n_items).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref[name], atol=1e-5, rtol=0, msg=name)


class _Recording:
    """A collator wrapper that records the sample ids (first token - 10) of each micro-batch, in order."""

    def __init__(self, inner):
        self.inner, self.micro = inner, []

    def __call__(self, features):
        self.micro.append([f["input_ids"][0] - 10 for f in features])
        return self.inner(features)

    def steps(self, ga):
        return [sorted(i for mb in self.micro[k:k + ga] for i in mb) for k in range(0, len(self.micro), ga)]


def _indexed_dataset(n):
    rows = {"input_ids": [], "labels": []}
    for i in range(n):
        ids = [10 + i] + [3 + (i * 7 + j) % 80 for j in range(5 + i % 7)]
        rows["input_ids"].append(ids)
        rows["labels"].append([IGNORE_INDEX] + ids[1:])
    return datasets.Dataset.from_dict(rows)


def test_sampler_gives_the_trainers_samples_per_step():
    """HF Trainer (padding) and labkit (DocumentCollator, LabkitTrainer) train the same samples in every step,
    and step_batches predicts them, over two epochs with a short last step."""
    n, per_device, ga, seed = 23, 2, 3, 5
    ds = _indexed_dataset(n)
    kw = dict(per_device_train_batch_size=per_device, gradient_accumulation_steps=ga, num_train_epochs=2,
              seed=seed, data_seed=seed, learning_rate=1e-3, save_strategy="no", logging_steps=100,
              remove_unused_columns=False)
    hf = _Recording(PaddingCollator(0))
    Trainer(model=_llama(), args=_args(**kw), train_dataset=ds, data_collator=hf).train()
    cfg = TrainConfig(packing=True)
    _, _, collator = batching(cfg, None, ds, None)
    assert isinstance(collator, DocumentCollator)
    lab = _Recording(collator)
    LabkitTrainer(model=_llama(), args=_args(**kw), train_dataset=ds, data_collator=lab).train()
    steps_per_epoch = -(-n // (per_device * ga))
    expected = step_batches(n, per_device, ga, seed) + step_batches(n, per_device, ga, seed, epoch=1)
    assert len(expected) == 2 * steps_per_epoch
    assert hf.steps(ga) == expected
    assert lab.steps(ga) == expected
    assert all(sorted(sum(expected[k * steps_per_epoch:(k + 1) * steps_per_epoch], [])) == list(range(n))
               for k in range(2))


def test_batching_keeps_samples_as_they_are():
    ds = _indexed_dataset(9)
    train, ev, collator = batching(TrainConfig(packing=True), None, ds, ds)
    assert train is ds and ev is ds and isinstance(collator, DocumentCollator)
    _, _, pad = batching(TrainConfig(packing=False), None, ds, None)
    assert isinstance(pad, PaddingCollator)


def test_speed_arguments_autocast_switch(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("the CPU autocast choice; on CUDA precision follows the flags")
    cfg = TrainConfig(packing=True)
    args = _args()
    monkeypatch.setenv("LABKIT_AUTOCAST", "1")
    assert use_cpu_autocast(cfg) and speed_arguments(cfg, args).bf16 is True
    monkeypatch.setenv("LABKIT_AUTOCAST", "0")
    assert not use_cpu_autocast(cfg) and speed_arguments(cfg, args).bf16 is False
    monkeypatch.delenv("LABKIT_AUTOCAST")
    import labkit.train.batching as b

    monkeypatch.setattr(b, "fast_bf16_cpu", lambda: False)
    assert speed_arguments(cfg, args).bf16 is False  # no AMX/AVX512-BF16: fp32 compute
    monkeypatch.setattr(b, "fast_bf16_cpu", lambda: True)
    assert speed_arguments(cfg, args).bf16 is True
    assert speed_arguments(TrainConfig(packing=True, precision="bf16"), args).bf16 is False  # not for bf16 weights


WORKER = """
import json, sys
sys.path.insert(0, sys.argv[2])
import train_worker as tw
from labkit.data.packing import DocumentCollator
from labkit.train.config import TrainConfig
from labkit.train.sft import run_training
spec = json.loads(sys.argv[1])
cfg = TrainConfig.from_dict({"lora_target": "q_proj,k_proj,v_proj,o_proj", "packing": True, "disable_tqdm": True,
                             "max_steps": 6, "save_strategy": "no", "logging_steps": 3, "learning_rate": 3e-3,
                             "lora_dropout": 0.0, "gradient_accumulation_steps": 2, "plot_loss": False, **spec})
train, _ = tw.datasets(96)
run_training(cfg, model=tw.tiny_llama(), train_dataset=train, data_collator=DocumentCollator())
"""


@pytest.mark.slow
def test_two_ranks_packed_match_one_process(tmp_path):
    """torchrun 2 ranks x 4 samples vs 1 process x 8, packed rows: the token-normalised step gives the same LoRA."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    tests = str(Path(__file__).resolve().parent)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = str(Path(sys.executable).parent / "torchrun")
    for cmd, out, bs in (([sys.executable], "one", 8), ([torchrun, "--nproc_per_node", "2"], "two", 4)):
        script = tmp_path / "worker.py"
        script.write_text(WORKER)
        spec = json.dumps({"output_dir": str(tmp_path / out), "per_device_train_batch_size": bs})
        p = subprocess.run([*cmd, str(script), spec, tests], env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
    one = load_file(str(tmp_path / "one" / "adapter_model.safetensors"))
    two = load_file(str(tmp_path / "two" / "adapter_model.safetensors"))
    scale = max(float(one[k].abs().max()) for k in one if "lora_B" in k)
    diff = max(float((one[k] - two[k]).abs().max()) for k in one)
    assert scale > 1e-3 and diff < 1e-6, (diff, scale)  # measured 2.5e-7 vs |B| 1e-2


@pytest.mark.parametrize("case", ["fp32", "autocast-bf16", "bf16-head-fp32-hidden"])
def test_fused_loss_matches_plain_cross_entropy(case):
    """LinearCrossEntropy = cross_entropy(hidden @ weight.T, reduction=sum), loss and grad(hidden), in every
    dtype mix training meets: fp32, CPU bf16 autocast, a bf16 lm_head under fp32 hidden states (LF bf16: true)."""
    from labkit.train.batching import LinearCrossEntropy

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(300, 16, generator=g)  # 300 rows: two chunks of 256
    weight = torch.randn(50, 16, generator=g)
    targets = torch.randint(0, 50, (300,), generator=g)
    if case == "bf16-head-fp32-hidden":
        weight = weight.bfloat16()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=case == "autocast-bf16")
    h1 = hidden.clone().requires_grad_()
    with autocast:
        fused = LinearCrossEntropy.apply(h1, weight, targets, 256)
    fused.backward()
    h2 = hidden.clone().requires_grad_()
    with autocast:
        logits = h2 @ weight.to(h2.dtype).t() if case == "bf16-head-fp32-hidden" else h2 @ weight.t()
    plain = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
    plain.backward()
    tol = 1e-4 if case == "fp32" else 2e-2
    assert h1.grad.dtype == hidden.dtype
    assert torch.allclose(fused, plain, rtol=tol) and torch.allclose(h1.grad, h2.grad, rtol=tol, atol=tol)


def test_padding_saved_counts_the_trainers_micro_batches():
    from labkit.train.batching import padding_saved

    lengths = [10, 20, 30, 40, 5, 7, 64]
    out = padding_saved(lengths, per_device=2, seed=3, pad_to_multiple_of=8)
    batches = step_batches(len(lengths), 2, 1, 3)
    expected = sum(len(b) * -(-max(lengths[i] for i in b) // 8) * 8 for b in batches)
    assert out["micro_batches"] == 4 and out["real_tokens"] == sum(lengths)
    assert out["padded_tokens"] == expected and out["padded_tokens"] > out["real_tokens"]
    assert out["padding_share"] == round(1 - sum(lengths) / expected, 4)
    same = padding_saved([16] * 6, per_device=3, seed=0)
    assert same["padded_tokens"] == same["real_tokens"] and same["padding_share"] == 0.0  # nothing to remove
    with pytest.raises(LabkitError, match="positive"):
        padding_saved(lengths, per_device=0, seed=0)

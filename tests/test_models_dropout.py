"""CpuMaskDropout: nn.Dropout's distribution and scale from a cheaper mask; swapped into PEFT LoRA layers and back."""

import math

import pytest
import torch

from labkit.models import dropout as dropout_mod
from labkit.models.dropout import CpuMaskDropout, cpu_mask_dropout, keep_mask


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_keep_mask_drops_p_of_the_elements(p):
    torch.manual_seed(0)
    n = 400_000
    mask = keep_mask((n,), p)
    assert mask.dtype == torch.bool and mask.shape == (n,)
    dropped = 1 - mask.float().mean().item()
    assert abs(dropped - p) < 4 * math.sqrt(p * (1 - p) / n)  # within 4 standard errors


def test_keep_mask_odd_sizes_and_shapes_and_the_seed():
    torch.manual_seed(3)
    a = keep_mask((3, 5, 7), 0.2)
    torch.manual_seed(3)
    b = keep_mask((3, 5, 7), 0.2)
    assert a.shape == (3, 5, 7) and torch.equal(a, b)  # the global RNG decides: seeded runs repeat
    assert not torch.equal(a, keep_mask((3, 5, 7), 0.2))
    assert keep_mask((1,), 0.0).all() and keep_mask((0,), 0.3).numel() == 0


def test_forward_and_backward_are_dropout(monkeypatch):
    monkeypatch.setattr(dropout_mod, "MIN_ELEMENTS", 0)  # the small input takes the mask path too
    torch.manual_seed(1)
    drop = CpuMaskDropout(0.25)
    x = (torch.rand(64, 128) + 0.5).requires_grad_()  # no zeros: a zero output means dropped
    y = drop(x)
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] / 0.75)  # the 1/(1-p) scale of nn.Dropout
    assert 0.15 < 1 - kept.float().mean().item() < 0.35
    y.sum().backward()
    assert torch.allclose(x.grad, kept.float() / 0.75)  # the gradient goes through the same mask
    drop.eval()
    assert torch.equal(drop(x), x)
    assert torch.equal(CpuMaskDropout(1.0)(x), torch.zeros_like(x))


def test_mean_is_kept_like_nn_dropout():
    torch.manual_seed(2)
    x = torch.randn(200_000)
    ours, theirs = CpuMaskDropout(0.05)(x), torch.nn.Dropout(0.05)(x)
    assert abs(ours.mean().item() - x.mean().item()) < 0.01
    assert abs(ours.pow(2).mean().item() - theirs.pow(2).mean().item()) < 0.02  # same variance inflation


def test_swapped_into_lora_layers_and_back():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=4))
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.05,
                                                  target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    drops = [m for m in model.modules() if type(m) is torch.nn.Dropout and m.p == 0.05]
    undo = cpu_mask_dropout(model)
    assert undo.count == len(drops) > 0
    assert not any(type(m) is torch.nn.Dropout and m.p == 0.05 for m in model.modules())
    assert sum(isinstance(m, CpuMaskDropout) for m in model.modules()) == len(drops)
    ids = torch.tensor([[5, 6, 7, 8]])
    model.eval()
    before = model(input_ids=ids).logits
    undo()
    assert [m for m in model.modules() if type(m) is torch.nn.Dropout and m.p == 0.05] == drops
    assert torch.equal(model(input_ids=ids).logits, before)  # eval: identical to PEFT's own modules
    assert not any(isinstance(m, CpuMaskDropout) for m in model.modules())
    assert "lora_dropout" not in str(model.state_dict().keys())  # nothing saved with the adapter changes


def test_small_inputs_use_torch_dropout_and_large_ones_the_mask():
    x = torch.randn(2, dropout_mod.MIN_ELEMENTS)
    torch.manual_seed(5)
    small = CpuMaskDropout(0.3)(x[0, :100])
    torch.manual_seed(5)
    assert torch.equal(small, torch.nn.functional.dropout(x[0, :100], 0.3, True))  # bernoulli_'s stream exactly
    torch.manual_seed(5)
    large = CpuMaskDropout(0.3)(x)
    torch.manual_seed(5)
    assert torch.equal(large, x * (keep_mask(x.shape, 0.3).to(x.dtype) * torch.tensor(1 / 0.7)))

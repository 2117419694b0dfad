"""LoRA dropout with a cheaper random mask on CPU: the same Bernoulli(1 - p) keep mask and 1/(1 - p) scale.

PEFT applies `nn.Dropout(p)` to the input of every LoRA layer (alpaca-lora's 0.05). On CPU, torch draws that
mask with `bernoulli_`, one float draw per element, and at the tiny and mid widths it was 5-6% of a training
step (torch profiler). `CpuMaskDropout` draws the mask from 32 random bits per element (torch's generator,
two elements per 64-bit draw) compared with round(p * 2^32): drop probability p to within 2^-33, the same
scale, the same global RNG (seeded, saved in checkpoints, reproducible). Off CPU, in eval mode, or for inputs
under `MIN_ELEMENTS` (where the extra ops cost more than they save) it is `nn.Dropout`.
`cpu_mask_dropout(model)` swaps it into a PeftModel's LoRA layers and returns an undo function.
"""

from __future__ import annotations

import math

import torch

_INT32_MIN = -(2**31)
MIN_ELEMENTS = 32_768  # below this the mask's extra ops cost more than bernoulli_ (crossover ~20,000 at 1 thread)


def keep_mask(shape, p: float, device=None) -> torch.Tensor:
    """A bool tensor of `shape`, each element True with probability 1 - p (to within 2^-33), from torch's RNG."""
    n = math.prod(shape)
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 1) // 2,), dtype=torch.int64, device=device)
    bits = words.view(torch.int32)[:n]  # (n,) uniform 32-bit integers
    return (bits >= _INT32_MIN + round(p * 2**32)).view(shape)


class CpuMaskDropout(torch.nn.Dropout):
    """nn.Dropout whose CPU training-mode mask comes from `keep_mask` (cheaper than bernoulli_ there)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (not self.training or not 0.0 < self.p < 1.0 or x.device.type != "cpu" or self.inplace
                or x.numel() < MIN_ELEMENTS):
            return super().forward(x)
        scale = torch.tensor(1.0 / (1.0 - self.p), dtype=x.dtype)
        return x * (keep_mask(x.shape, self.p).to(x.dtype) * scale)


def cpu_mask_dropout(model):
    """Replace the nn.Dropout modules of `model`'s LoRA layers (PEFT `lora_dropout`) by CpuMaskDropout with the
    same p; returns a function that puts the originals back. Layers without dropout (nn.Identity) are left."""
    swapped = []
    for module in model.modules():
        holder = getattr(module, "lora_dropout", None)
        if not isinstance(holder, torch.nn.ModuleDict):
            continue
        for key, drop in list(holder.items()):
            if type(drop) is torch.nn.Dropout and drop.p > 0:
                fast = CpuMaskDropout(drop.p)
                fast.train(drop.training)
                holder[key] = fast
                swapped.append((holder, key, drop))

    def undo():
        for holder, key, drop in swapped:
            drop.train(holder[key].training)
            holder[key] = drop
        swapped.clear()

    undo.count = len(swapped)
    return undo

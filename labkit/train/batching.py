"""How a step's samples are computed: flattened rows with document attention (packing) or padding; CPU autocast.

Packing never changes what an optimizer step contains: the HF Trainer's own sampler (RandomSampler with the
run's seed, per_device x gradient_accumulation x world samples per step) picks the samples, and each
micro-batch is flattened into one row without padding (`labkit.data.packing.DocumentCollator`), attended per
document (`labkit.models.attention`), its logits computed only where a label is (lm_head and cross-entropy
fused in chunks, `documents_loss`), the loss summed over label tokens and divided by the step's label count
(`LabkitTrainer`), which is the padded batches' gradient. `step_batches` computes the samples of every step
the same way the Trainer does, for plans and tests; `padding_saved` what flattening them removes (notebook 01).
"""

from __future__ import annotations

import dataclasses
import os

import torch

from labkit.errors import LabkitError
from labkit.train.config import TrainConfig

AUTOCAST_ENV = "LABKIT_AUTOCAST"  # "0" keeps fp32 compute on CPUs with fast bf16; "1" forces bf16 autocast


def batching(cfg: TrainConfig, tokenizer, train_ds, eval_ds):
    """(train_ds, eval_ds, collator): samples as they are, flattened per micro-batch (packing) or padded."""
    from labkit.data import packing

    if cfg.packing:
        return train_ds, eval_ds, packing.DocumentCollator(packing._pad_id(tokenizer))
    return train_ds, eval_ds, packing.PaddingCollator(tokenizer)


CE_CHUNK = 256  # label positions per chunk of the fused lm_head + cross-entropy (measured: 256 best on CPU)


class LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of `hidden @ weight.T` against `targets`, in chunks of rows: the (K, V) logits are
    never held whole, and their gradient is folded into grad(hidden) during the forward pass (a frozen lm_head
    needs no weight gradient). The same sum as F.cross_entropy(logits, targets, reduction="sum")."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk=CE_CHUNK):  # hidden (K, D), weight (V, D), targets (K,)
        device = hidden.device.type
        if torch.is_autocast_enabled(device):  # what autocast would give each matmul, cast once, not per chunk
            mm_dtype = torch.get_autocast_dtype(device)
        else:  # e.g. an fp32 norm output and a bf16 head: the wider of the two
            mm_dtype = torch.promote_types(hidden.dtype, weight.dtype)
        h, w = hidden.to(mm_dtype), weight.to(mm_dtype)
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grads = []
        with torch.autocast(device, enabled=False):
            for s in range(0, h.shape[0], chunk):
                logits = torch.mm(h[s:s + chunk], w.t()).float()  # (c, V)
                t = targets[s:s + chunk]  # (c,)
                lse = torch.logsumexp(logits, dim=-1)  # (c,)
                loss = loss + (lse - logits.gather(1, t[:, None])[:, 0]).sum()
                probs = logits.sub_(lse[:, None]).exp_()  # softmax, in place
                probs[torch.arange(probs.shape[0], device=probs.device), t] -= 1  # d loss / d logits
                grads.append(torch.mm(probs.to(mm_dtype), w))  # (c, D)
        grad = torch.cat(grads) if grads else torch.zeros_like(hidden)
        ctx.save_for_backward(grad.to(hidden.dtype))
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        (grad,) = ctx.saved_tensors
        return grad * grad_loss.to(grad.dtype), None, None, None


def _plain_head(model):
    """The lm_head when the fused loss is exact: a LLaMA-forward model (LLaMA, labkit's Baichuan: logits =
    lm_head(hidden), nothing after it) whose head is a frozen bias-free nn.Linear; else None."""
    from transformers import LlamaForCausalLM

    bare = model.module if hasattr(model, "module") and not hasattr(model, "get_output_embeddings") else model
    base = bare.get_base_model() if hasattr(bare, "get_base_model") else bare
    if type(base).forward is not LlamaForCausalLM.forward:
        return None
    head = base.get_output_embeddings()
    if type(head) is not torch.nn.Linear or head.bias is not None or head.weight.requires_grad:
        return None
    return head


def documents_loss(model, inputs: dict):
    """(summed cross-entropy over the label tokens, model outputs) of a flattened row (DocumentCollator).

    Only positions that carry a label reach the lm_head (`logits_to_keep`): prompt tokens cost no lm_head and
    no softmax. With a frozen plain lm_head, its matmul and the cross-entropy run fused in chunks
    (LinearCrossEntropy): the logits are never materialised whole (outputs.logits is then None). The caller
    divides by the step's label count (the HF Trainer's num_items_in_batch).
    """
    labels = inputs["labels"]  # (1, T)
    targets = labels[0, 1:]  # (T-1,) token t+1 is predicted at position t
    keep = torch.nonzero(targets != -100).flatten()  # (K,) positions that carry a label
    rest = {k: v for k, v in inputs.items() if k != "labels"}
    head = _plain_head(model)
    if head is None:
        outputs = model(**rest, logits_to_keep=keep, use_cache=False)
        logits = outputs.logits.view(-1, outputs.logits.shape[-1])  # (K, V); a view: no copy in backward
        return torch.nn.functional.cross_entropy(logits.float(), targets[keep], reduction="sum"), outputs
    head.forward = _identity  # the model returns the normed hidden states at `keep` instead of logits
    try:
        outputs = model(**rest, logits_to_keep=keep, use_cache=False)
    finally:
        del head.forward
    hidden = outputs.logits.reshape(-1, outputs.logits.shape[-1])  # (K, D)
    outputs.logits = None
    return LinearCrossEntropy.apply(hidden, head.weight, targets[keep], CE_CHUNK), outputs


def _identity(x):
    return x


def fast_bf16_cpu() -> bool:
    """The CPU multiplies bf16 in hardware (AMX tiles or AVX512-BF16): autocast pays off there."""
    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:  # an older torch without the probes
        flags = open("/proc/cpuinfo", encoding="utf-8").read() if os.path.exists("/proc/cpuinfo") else ""
        return "amx_bf16" in flags or "avx512_bf16" in flags


def use_cpu_autocast(cfg: TrainConfig) -> bool:
    """bf16 autocast for an fp32 base on a CPU with hardware bf16 (weights, LoRA and optimizer stay fp32)."""
    forced = os.environ.get(AUTOCAST_ENV, "")
    if forced in ("0", "1"):
        return forced == "1" and not torch.cuda.is_available()
    if not cfg.packing or torch.cuda.is_available() or cfg.precision != "fp32":
        return False
    return cfg.autocast == "auto" and fast_bf16_cpu()


def speed_arguments(cfg: TrainConfig, args):
    """TrainingArguments with labkit's compute choices applied (today: bf16 autocast on CPUs that have it)."""
    if use_cpu_autocast(cfg) and not (args.bf16 or args.fp16):
        from labkit.log import notice

        notice("bf16 autocast on this CPU (AMX/AVX512-BF16); weights, LoRA and optimizer state stay fp32 "
               f"({AUTOCAST_ENV}=0 turns it off)")
        return dataclasses.replace(args, bf16=True)
    return args


def step_batches(n_samples: int, per_device: int, accumulation: int, seed: int, world: int = 1,
                 epoch: int = 0) -> list[list[int]]:
    """The dataset indices of every optimizer step of an epoch, as the HF Trainer draws them.

    Order = torch RandomSampler with a generator seeded by `seed` (TrainingArguments.data_seed or seed; the
    epoch is added as accelerate does from the second epoch), cut into global batches of
    per_device x accumulation x world; the last step takes what is left.
    """
    g = torch.Generator()
    g.manual_seed(seed + epoch)
    order = torch.randperm(n_samples, generator=g).tolist()
    size = per_device * accumulation * world
    return [sorted(order[i:i + size]) for i in range(0, n_samples, size)]


def padding_saved(lengths: list[int], per_device: int, seed: int, pad_to_multiple_of: int = 8) -> dict:
    """One epoch in the HF Trainer's micro-batches (`step_batches`): tokens when each is padded to its longest
    sample (DataCollatorForSeq2Seq, rounded up to `pad_to_multiple_of`) vs flattened into one row (labkit)."""
    from labkit.data.packing import _target_len

    if per_device <= 0:
        raise LabkitError(f"per_device_train_batch_size must be positive, got {per_device}")
    batches = step_batches(len(lengths), per_device, 1, seed)
    real = int(sum(lengths))
    padded = sum(len(b) * _target_len(max(lengths[i] for i in b), pad_to_multiple_of) for b in batches)
    return {"micro_batches": len(batches), "real_tokens": real, "padded_tokens": int(padded),
            "padding_share": round(1 - real / padded, 4) if padded else 0.0}

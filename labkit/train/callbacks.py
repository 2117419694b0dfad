"""Training guards and meters: label-token throughput, non-finite loss stop, adapter-changed check, fault injection."""

from __future__ import annotations

import os
import signal
import time

import torch
from transformers import Trainer, TrainerCallback

from labkit.errors import LabkitError
from labkit.train import checkpoints as ck

# LABKIT_FAULT (tests only): "kill_step:N" SIGKILLs the process after optimizer step N; "kill_save:N" SIGKILLs
# it in the middle of saving checkpoint-N (adapter written, optimizer/state/marker not); "nan:N" makes the
# loss of step N+1 non-finite.
FAULT_ENV = "LABKIT_FAULT"


def _fault(kind: str) -> int | None:
    spec = os.environ.get(FAULT_ENV, "")
    for part in spec.split(","):
        name, _, num = part.partition(":")
        if name == kind and num:
            return int(num)
    return None


class NonFiniteLossError(LabkitError):
    """Training stopped on a nan/inf loss; no update from that step reached the weights or a checkpoint."""

    exit_code = 1


class LabkitTrainer(Trainer):
    """HF Trainer + label-token counting, a non-finite loss guard and checkpoints with a completion marker."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.label_tokens = 0  # label-bearing (trained) tokens seen, all ranks
        self._t_start: float | None = None
        self._tokens_at_start = 0

    # -- throughput: num_items_in_batch is exactly the label-bearing token count of the optimizer step
    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        if num_items is None:
            num_items = sum(int((b["labels"][..., 1:] != -100).sum()) for b in batch_samples if "labels" in b)
            num_items *= max(1, self.args.world_size)
        elif not self.args.average_tokens_across_devices:
            num_items = int(num_items) * max(1, self.args.world_size)
        self.label_tokens += int(num_items)
        if self._t_start is None:
            self._t_start, self._tokens_at_start = time.perf_counter(), 0
        return batch_samples, num_items

    def log(self, logs, start_time=None):
        if "loss" in logs and self._t_start is not None:
            dt = max(time.perf_counter() - self._t_start, 1e-9)
            logs["trained_tokens"] = self.label_tokens
            logs["train_tokens_per_s"] = round((self.label_tokens - self._tokens_at_start) / dt, 1)
        super().log(logs, start_time)

    # -- guard: a nan/inf loss stops before backward, so the weights and checkpoints stay good
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        loss = out[0] if return_outputs else out
        nan_at = _fault("nan")
        if nan_at is not None and self.state.global_step == nan_at and model.training:
            loss = loss * float("nan")
            out = (loss, out[1]) if return_outputs else loss
        if model.training and not torch.isfinite(loss.detach()).all():
            step = self.state.global_step + 1
            last = ck.latest_complete(self.args.output_dir, quiet=True)
            raise NonFiniteLossError(
                f"non-finite loss ({loss.item()}) at step {step}: training stopped before the update; "
                f"last good checkpoint: {last if last else 'none saved yet'} "
                "(lower the learning rate, check the data, or use bf16/fp32 instead of fp16)")
        return out

    # -- checkpoints: drop a stale marker first, write the marker LAST (after weights, optimizer, RNG, state)
    def _save_checkpoint(self, model, trial):
        folder = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
        if self.args.should_save and os.path.exists(os.path.join(folder, ck.MARKER)):
            os.remove(os.path.join(folder, ck.MARKER))
        if _fault("kill_save") == self.state.global_step:
            self.save_model(folder, _internal_call=True)  # adapter on disk, the rest not: a crash mid-save
            os.kill(os.getpid(), signal.SIGKILL)
        super()._save_checkpoint(model, trial)
        if self.args.world_size > 1 and torch.distributed.is_initialized():
            torch.distributed.barrier()  # every rank's RNG file is on disk
        if self.args.should_save and os.path.isdir(folder):
            ck.write_marker(folder, global_step=self.state.global_step, world_size=self.args.world_size)


class FaultCallback(TrainerCallback):
    """Test hook: SIGKILL this process after optimizer step N (LABKIT_FAULT=kill_step:N)."""

    def on_step_end(self, args, state, control, **kwargs):
        if _fault("kill_step") == state.global_step:
            os.kill(os.getpid(), signal.SIGKILL)


def trainable_snapshot(model) -> dict[str, torch.Tensor]:
    """Copies of every trainable tensor (the LoRA A and B matrices)."""
    return {n: p.detach().float().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def adapter_change(model, before: dict[str, torch.Tensor]) -> dict:
    """How far training moved the adapter: max |delta|, tensors unchanged; flags an adapter that did not learn."""
    deltas = {}
    for n, p in model.named_parameters():
        if n in before:
            deltas[n] = float((p.detach().float().cpu() - before[n]).abs().max())
    unchanged = [n for n, d in deltas.items() if d == 0.0]
    lora_b = [d for n, d in deltas.items() if "lora_B" in n]
    return {
        "tensors": len(deltas),
        "unchanged": len(unchanged),
        "max_abs_delta": max(deltas.values(), default=0.0),
        "lora_B_max_abs": max(lora_b, default=0.0),
        # B starts at zero: if no B moved, the adapter is still the identity whatever A did
        "changed": len(unchanged) < len(deltas) and (not lora_b or any(d > 0 for d in lora_b)),
        "unchanged_names": unchanged[:10],
    }

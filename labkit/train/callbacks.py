"""LabkitTrainer: packed-row loss, meters (tokens/s, MFU), nan stop, threads by load, CPU speed-ups, fault injection."""

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
        self._attn_before: str | None = None  # attention implementation before document attention was switched on
        self.real_tokens = 0  # non-padding tokens computed, this rank
        self._sq_lengths = 0.0  # sum of squared sample lengths (attention FLOPs), this rank
        from labkit.env.threads import explicit_threads

        if explicit_threads() is None:
            self.add_callback(ThreadsCallback())

    # -- throughput: num_items_in_batch is exactly the label-bearing token count of the optimizer step
    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        count = num_items  # the count is the meter's; the Trainer gets its own num_items back unchanged
        if count is None:
            count = sum(int((b["labels"][..., 1:] != -100).sum()) for b in batch_samples if "labels" in b)
            count *= max(1, self.args.world_size)
        elif not self.args.average_tokens_across_devices:
            count = int(count) * max(1, self.args.world_size)
        self.label_tokens += int(count)
        for b in batch_samples:
            self._count_real(b)
        if self._t_start is None:
            self._t_start, self._tokens_at_start = time.perf_counter(), 0
        return batch_samples, num_items

    def _count_real(self, batch) -> None:
        """Real (non-padding) tokens and the sum of squared sample lengths (for attention FLOPs) of a micro-batch."""
        if "cu_seq_lens_q" in batch:
            lengths = batch["cu_seq_lens_q"].diff()
        elif isinstance(batch.get("attention_mask"), torch.Tensor) and batch["attention_mask"].dim() == 2:
            lengths = batch["attention_mask"].sum(dim=1)
        else:
            ids = batch["input_ids"]
            lengths = torch.full((ids.shape[0],), ids.shape[-1])
        lengths = lengths.double()
        self.real_tokens += int(lengths.sum())
        self._sq_lengths += float((lengths**2).sum())

    def log(self, logs, start_time=None):
        if "loss" in logs and self._t_start is not None:
            dt = max(time.perf_counter() - self._t_start, 1e-9)
            logs["trained_tokens"] = self.label_tokens
            logs["train_tokens_per_s"] = round((self.label_tokens - self._tokens_at_start) / dt, 1)
        super().log(logs, start_time)

    # -- packed rows (DocumentCollator): document attention, logits only where a label is, the step's token mean
    def train(self, *args, **kwargs):
        undo = []  # what the CPU speed-ups set for this run, undone after it
        try:
            if self.args.device.type == "cpu":  # see labkit.models.dropout and labkit.env.malloc
                from labkit.env.malloc import give_back, keep_freed_memory
                from labkit.models.dropout import cpu_mask_dropout

                undo.append(cpu_mask_dropout(self.accelerator.unwrap_model(self.model)))
                if keep_freed_memory():
                    undo.append(give_back)
            t0 = time.perf_counter()
            out = super().train(*args, **kwargs)
            out.metrics.update(self.utilization(time.perf_counter() - t0))
            return out
        finally:
            for step in reversed(undo):
                step()
            if self._attn_before is not None:  # back to the implementation the model was loaded with
                from labkit.models.attention import set_attention

                set_attention(self.accelerator.unwrap_model(self.model), self._attn_before)
                self._attn_before = None

    def utilization(self, seconds: float) -> dict:
        """Samples/s, real tokens/s and MFU: model FLOPs (4 x frozen linear weights, lm_head included, + 6 x LoRA
        weights per real token, + causal attention 6 n^2 x hidden x layers per sample) over a matmul peak of this
        device measured now, in the compute dtype."""
        model = self.accelerator.unwrap_model(self.model)
        cfg = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
        frozen = lora = 0
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear):
                lora += mod.weight.numel() if "lora_" in name else 0
                frozen += 0 if "lora_" in name else mod.in_features * mod.out_features
        flops = (4 * frozen + 6 * lora) * self.real_tokens
        flops += 6 * self._sq_lengths * getattr(cfg, "hidden_size", 0) * getattr(cfg, "num_hidden_layers", 0)
        dtype = torch.bfloat16 if self.args.bf16 else torch.float16 if self.args.fp16 else torch.float32
        peak = matmul_peak_gflops(dtype, self.args.device) * max(1, self.args.world_size)
        seconds = max(seconds, 1e-9)
        return {"train_real_tokens": self.real_tokens * max(1, self.args.world_size),
                "train_real_tokens_per_s": round(self.real_tokens * max(1, self.args.world_size) / seconds, 1),
                "train_model_gflops_per_s": round(flops * max(1, self.args.world_size) / seconds / 1e9, 2),
                "train_peak_gflops": round(peak, 1), "train_threads": torch.get_num_threads(),
                "train_mfu": round(flops * max(1, self.args.world_size) / seconds / 1e9 / peak, 4) if peak else None}

    def _documents_loss(self, model, inputs, return_outputs, num_items_in_batch):
        """Loss of a flattened row: the same sum over label tokens / num_items_in_batch as the padded batches the
        HF Trainer would build from the same samples, so the gradient of a step is the same."""
        from labkit.models.attention import IMPLEMENTATION, prepare_backend, use_docs_attention
        from labkit.train.batching import documents_loss

        bare = self.accelerator.unwrap_model(model)
        if getattr(bare, "config", None) is not None and bare.config._attn_implementation != IMPLEMENTATION:
            before = use_docs_attention(bare)
            self._attn_before = self._attn_before or before
            prepare_backend(bare, inputs["cu_seq_lens_q"].tolist(), inputs["input_ids"].device)
        loss, outputs = documents_loss(model, inputs)  # summed over the row's label tokens
        if num_items_in_batch is not None:
            loss = loss / num_items_in_batch
            if self.args.average_tokens_across_devices and (self.model_accepts_loss_kwargs or self.compute_loss_func):
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        else:
            loss = loss / max(int((inputs["labels"][..., 1:] != -100).sum()), 1)
        outputs.loss = loss
        return (loss, outputs) if return_outputs else loss

    # -- guard: a nan/inf loss stops before backward, so the weights and checkpoints stay good
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "cu_seq_lens_q" in inputs and inputs["input_ids"].shape[0] == 1 and self.compute_loss_func is None:
            out = self._documents_loss(model, inputs, return_outputs, num_items_in_batch)
        else:
            out = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                       num_items_in_batch=num_items_in_batch)
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
        try:
            super()._save_checkpoint(model, trial)
        except OSError as err:  # a full or read-only disk mid-save: no marker, so the folder never counts as complete
            last = ck.latest_complete(self.args.output_dir, quiet=True)
            raise LabkitError(f"{folder}: could not save the checkpoint ({err.strerror or err}); it has no completion "
                              f"marker and will be skipped on resume. Free space or choose another --output_dir; "
                              f"last complete checkpoint: {last or 'none'}") from None
        if self.args.world_size > 1 and torch.distributed.is_initialized():
            torch.distributed.barrier()  # every rank's RNG file is on disk
        if self.args.should_save and os.path.isdir(folder):
            ck.write_marker(folder, global_step=self.state.global_step, world_size=self.args.world_size)


_PEAKS: dict = {}


def matmul_peak_gflops(dtype=torch.float32, device="cpu", seconds: float = 0.3) -> float:
    """Best GFLOP/s of square matmuls (512, 1024; 4096 on GPUs) in `dtype` on `device`, measured once per process."""
    device = torch.device(device)
    key = (str(dtype), device.type)
    if key in _PEAKS:
        return _PEAKS[key]
    best = 0.0
    for n in (4096,) if device.type == "cuda" else (512, 1024):
        a = torch.randn(n, n, dtype=dtype, device=device)
        b = torch.randn(n, n, dtype=dtype, device=device)
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 2:
            a @ b
            reps += 1
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9)
    _PEAKS[key] = best
    return best


class FaultCallback(TrainerCallback):
    """Test hook: SIGKILL this process after optimizer step N (LABKIT_FAULT=kill_step:N)."""

    def on_step_end(self, args, state, control, **kwargs):
        if _fault("kill_step") == state.global_step:
            os.kill(os.getpid(), signal.SIGKILL)


class ThreadsCallback(TrainerCallback):
    """Every `every` seconds, re-plan torch's threads from the CPU load of other processes (no sleep; see
    labkit.env.threads): a job that starts next to us mid-run no longer stalls every step."""

    def __init__(self, every: float = 10.0):
        self.every, self.planner, self.last = every, None, 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        from labkit.env.threads import ThreadPlanner

        self.planner, self.last = ThreadPlanner(), time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if self.planner is None or time.monotonic() - self.last < self.every:
            return
        from labkit.env.threads import apply_threads

        self.last = time.monotonic()
        others = self.planner.others_busy()
        apply_threads(self.planner.plan(others), self.planner, others)


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

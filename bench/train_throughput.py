"""Training speed on real-length data: `labkit train` vs alpaca-lora's recipe vs TRL's SFTTrainer, same steps.

Data: the benchmark corpora `bench_zh` + `bench_en` (instruction+input+output characters with the quantiles of
LLaMA-Factory's alpaca_zh/en demo sets: zh p50 187, en p50 585), alpaca template, cutoff 1024, prompt tokens
masked (alpaca-lora `--train_on_inputs False`, labkit's default). Every run trains on the same tokenized
samples, LoRA r=8 alpha=16 dropout 0.05 on q_proj,v_proj (alpaca-lora's defaults), lr 3e-4 cosine, one epoch,
micro batch 4 with gradient accumulation to the same samples per optimizer step, RandomSampler with the same
seed, so every run does the same optimizer steps on the same samples (checked: the sample ids of each step
are recorded in each run and compared with the HF Trainer's draw).

- baseline: alpaca-lora's finetune.py recipe exactly: HF Trainer, DataCollatorForSeq2Seq(pad_to_multiple_of=8),
  no length grouping, no packing, fp32 (its fp16 needs a GPU).
- labkit: `labkit train`'s path (labkit.train.sft.run_training) with its defaults: packing (each micro-batch
  flattened into one row, document attention, logits only where a label is), threads by load, bf16 autocast
  only on CPUs with AMX/AVX512-BF16.
- trl: TRL's SFTTrainer with padding_free=True (its packing without changing the samples of a step).

Models: labkit's tiny LLaMA (hidden 128, pre-trained) and the mid LLaMA (hidden 512, 4 layers, vocab 32000,
random init; labkit.models.mid). Each run in its own process (for its peak RSS). Reported per run: trained
tokens/s, samples/s, padding share, peak RSS, MFU against a matmul peak measured in this run (model FLOPs:
4 x linear weights per real token + causal attention; `hw_mfu` counts only FLOPs the run executed, i.e. no
lm_head on prompt tokens for labkit), train loss, held-out loss per trained token (same 32 samples). Last line:
JSON with `ratio` (labkit vs baseline trained tokens/s, mid model), `ratio_trl` (labkit vs TRL, mid),
`ratio_tiny`, `ratio_trl_tiny`, `same_steps`, `loss_no_worse` and every run.

Rounds: every run is repeated `--rounds` times (default 2), interleaved (round 1 tiny then mid, baseline first;
round 2 in the reverse order) so a slow minute of the machine hits every setup alike; each setup is reported by
its fastest round (the least disturbed measurement, timeit's convention), and the JSON also carries every
round's tokens/s and the ratio of each round alone (`rounds`), so the spread is visible.

    python bench/train_throughput.py              # ~10 min per round on an idle 2-core CPU
    python bench/train_throughput.py --rounds 1   # one round (~10 min)
    python bench/train_throughput.py --small      # seconds per run, one process (tests; BENCH_SMALL=1 too)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATASETS = "bench_zh,bench_en"
TEMPLATES = ("alpaca-lora/alpaca", "alpaca")  # qualified name first; the plain name where templates are not yet
CUTOFF = 1024
MICRO = 4
SEED = 7
LR = 3e-4
MODES = ("baseline", "labkit", "trl")
# per model: training samples, gradient accumulation (samples per step = MICRO x GA), held-out samples
FULL = {"tiny": {"samples": 160, "ga": 4, "held": 32, "cutoff": CUTOFF},
        "mid": {"samples": 64, "ga": 4, "held": 32, "cutoff": CUTOFF}}
SMALL = {"tiny": {"samples": 8, "ga": 1, "held": 4, "cutoff": 384},
         "mid": {"samples": 4, "ga": 1, "held": 2, "cutoff": 256}}


def matmul_peak(dtype_name: str = "float32", sizes=(512, 1024), seconds: float = 0.6) -> float:
    """Best GFLOP/s of square matmuls on this machine, now (torch threads as configured)."""
    import torch

    dtype = getattr(torch, dtype_name)
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            a @ b
            reps += 1
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9)
    return best


# ------------------------------------------------------------------------------------------------ data, models


def _template():
    from labkit.data.templates import get_template
    from labkit.errors import LabkitError

    for name in TEMPLATES:
        try:
            return get_template(name)
        except (LabkitError, KeyError, ValueError):
            continue
    raise SystemExit(f"none of the templates {TEMPLATES} exists")


_CACHE: dict = {}  # in-process runs (--small): models and data built once, copied per run


def load_model_kind(kind: str, cache: bool = False):
    """(model, tokenizer) of the tiny or mid LLaMA, fp32, sdpa; `cache`: built once, a fresh copy per call."""
    import copy

    if not cache:
        return _build_model(kind)
    if kind not in _CACHE:
        _CACHE[kind] = _build_model(kind)
    model, tok = _CACHE[kind]
    return copy.deepcopy(model), tok


def _build_model(kind: str):
    if kind == "mid":
        from labkit.models.mid import mid_model

        return mid_model("llama")
    from labkit.models import load_model, load_tokenizer
    from labkit.models.tiny import tiny_model_path

    path = tiny_model_path("llama")
    return load_model(str(path)), load_tokenizer(path)


def bench_data(tokenizer, n_train: int, n_held: int, cutoff: int = CUTOFF):
    """(train, held) tokenized Datasets: the first n_train examples of the corpora mix and the last n_held."""
    from labkit.data.registry import load_datasets
    from labkit.data.tokenize import tokenize_examples

    if "examples" not in _CACHE:
        _CACHE["examples"] = load_datasets(DATASETS, seed=0)[0]
    examples = _CACHE["examples"]
    template = _template()
    train, _ = tokenize_examples(examples[:n_train], tokenizer, template, cutoff, train_on_inputs=False)
    held, _ = tokenize_examples(examples[-n_held:], tokenizer, template, cutoff, train_on_inputs=False)
    return train, held


# ------------------------------------------------------------------------------------------------ one run


class Recorder:
    """Wraps a collator: counts padded tokens and records which samples each optimizer step trains on (the
    micro-batches come in order, `ga` per step, the last step takes the rest)."""

    def __init__(self, inner, train, ga: int):
        self.inner, self.ga, self.padded, self.micro = inner, ga, 0, []
        self.index = {tuple(ids): i for i, ids in enumerate(train["input_ids"])}

    def __call__(self, features):
        self.micro.append([self.index[tuple(f["input_ids"])] for f in features])
        batch = self.inner(features)
        self.padded += int(batch["input_ids"].numel())
        return batch

    def step_sets(self) -> list[list[int]]:
        return [sorted(i for mb in self.micro[k:k + self.ga] for i in mb) for k in range(0, len(self.micro), self.ga)]


def _clock():
    """A TrainerCallback timing train begin -> end: wall seconds and this process's CPU seconds."""
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        wall = cpu = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self.wall, self.cpu = time.perf_counter(), time.process_time()

        def on_train_end(self, args, state, control, **kwargs):
            self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu

    return Clock()


def _peft(model):
    from peft import LoraConfig, get_peft_model
    from transformers import set_seed

    set_seed(SEED)
    return get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"],
                                            bias="none", task_type="CAUSAL_LM"))


def _common_args(out: str, ga: int) -> dict:
    return dict(output_dir=out, per_device_train_batch_size=MICRO, gradient_accumulation_steps=ga,
                num_train_epochs=1, learning_rate=LR, lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0,
                max_grad_norm=1.0, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, seed=SEED,
                data_seed=SEED, optim="adamw_torch", disable_tqdm=True, dataloader_num_workers=0,
                remove_unused_columns=False)


def run_baseline(model, tok, train, ga: int, out: str):
    """alpaca-lora's finetune.py: Trainer + DataCollatorForSeq2Seq(pad_to_multiple_of=8), fp32."""
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from labkit.env.threads import configure_threads

    configure_threads()
    model = _peft(model)
    rec = Recorder(DataCollatorForSeq2Seq(tok, pad_to_multiple_of=8, return_tensors="pt", padding=True), train, ga)
    clock = _clock()
    trainer = Trainer(model=model, args=TrainingArguments(**_common_args(out, ga)), train_dataset=train,
                      data_collator=rec, callbacks=[clock])
    trainer.train()
    return model, rec, clock, "fp32"


def run_labkit(model, tok, train, ga: int, out: str, cutoff: int = CUTOFF):
    """labkit train's path: run_training with TrainConfig defaults (packing, threads, autocast where it pays)."""
    from labkit.train.batching import batching, use_cpu_autocast
    from labkit.train.config import TrainConfig
    from labkit.train.sft import run_training

    cfg = TrainConfig(base_model="", output_dir=out, per_device_train_batch_size=MICRO, gradient_accumulation_steps=ga,
                      num_epochs=1.0, learning_rate=LR, lr_scheduler_type="cosine", warmup_steps=0, lora_r=8, lora_alpha=16,
                      lora_dropout=0.05, lora_target="q_proj,v_proj", cutoff_len=cutoff, save_strategy="no",
                      logging_steps=1, disable_tqdm=True, seed=SEED, overwrite_output_dir=True, plot_loss=False)
    _, _, collator = batching(cfg, tok, train, None)
    rec, clock = Recorder(collator, train, ga), _clock()
    run_training(cfg, model=model, tokenizer=tok, train_dataset=train, data_collator=rec, callbacks=[clock])
    return model, rec, clock, "bf16-autocast" if use_cpu_autocast(cfg) else "fp32"


def run_trl(model, tok, train, ga: int, out: str):
    """TRL SFTTrainer, padding_free=True (flattened micro-batches, same samples per step), fp32, no checkpointing."""
    from trl import SFTConfig, SFTTrainer

    from labkit.env.threads import configure_threads

    configure_threads()
    model = _peft(model)
    args = SFTConfig(**_common_args(out, ga), padding_free=True, max_length=None, bf16=False, fp16=False,
                     gradient_checkpointing=False, dataset_kwargs={"skip_prepare_dataset": True})
    trainer = SFTTrainer(model=model, args=args, train_dataset=train.remove_columns(["attention_mask"]),
                         processing_class=tok)
    rec, clock = Recorder(trainer.data_collator, train, ga), _clock()
    trainer.data_collator = rec
    trainer.add_callback(clock)
    trainer.train()
    return model, rec, clock, "fp32"


def held_out_loss(model, tok, held) -> float:
    """Loss per trained token on the held-out samples: padded batches of 8, fp32, eval mode."""
    import torch
    from transformers import DataCollatorForSeq2Seq

    pad = DataCollatorForSeq2Seq(tok, return_tensors="pt", padding=True)
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(held), 8):
            batch = pad([held[j] for j in range(i, min(i + 8, len(held)))])
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, T, V)
            tgt = batch["labels"][:, 1:]
            keep = tgt != -100
            total += float(torch.nn.functional.cross_entropy(logits[:, :-1][keep].float(), tgt[keep], reduction="sum"))
            count += int(keep.sum())
    return total / max(count, 1)


def flops(model, train, logits_everywhere: bool) -> tuple[float, float]:
    """(model FLOPs, executed FLOPs) of one epoch: 4 x linear weights per real token (forward + input gradients,
    frozen base) + 6 x LoRA weights + causal attention 6 x n^2 x hidden x layers per sample; executed FLOPs
    count the lm_head only where logits were computed."""
    import torch

    cfg = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
    head = body = lora = 0
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            n = mod.weight.numel()
            if "lora_" in name:
                lora += n
            elif name.endswith("lm_head"):
                head += n
            else:
                body += n
    lengths = [len(x) for x in train["input_ids"]]
    labelled = sum(sum(1 for t in lab[1:] if t != -100) for lab in train["labels"])
    tokens = sum(lengths)
    attn = sum(6 * n * n * cfg.hidden_size * cfg.num_hidden_layers for n in lengths)  # causal: 2n^2d fwd, x3 w/ bwd
    model_flops = (4 * (body + head) + 6 * lora) * tokens + attn
    executed = (4 * body + 6 * lora) * tokens + attn + 4 * head * (tokens if logits_everywhere else labelled)
    return float(model_flops), float(executed)


def run(kind: str, mode: str, sizes: dict, cache: bool = False) -> dict:
    """One training run of `mode` on the `kind` model; its measurements."""
    model, tok = load_model_kind(kind, cache)
    train, held = bench_data(tok, sizes["samples"], sizes["held"], sizes["cutoff"])
    out = tempfile.mkdtemp(prefix=f"labkit_bench_{kind}_{mode}_")
    if mode == "labkit":
        model, rec, clock, precision = run_labkit(model, tok, train, sizes["ga"], out, sizes["cutoff"])
    else:
        model, rec, clock, precision = {"baseline": run_baseline, "trl": run_trl}[mode](
            model, tok, train, sizes["ga"], out)
    seconds = clock.wall
    import torch

    real = sum(len(x) for x in train["input_ids"])
    labelled = sum(sum(1 for t in lab[1:] if t != -100) for lab in train["labels"])
    model_flops, executed = flops(model, train, logits_everywhere=mode != "labkit")
    steps = rec.step_sets()
    peak = matmul_peak("bfloat16" if precision.startswith("bf16") else "float32", seconds=0.3)
    result = {"model": kind, "mode": mode, "precision": precision, "threads": torch.get_num_threads(),
              "seconds": seconds, "cpu_seconds": clock.cpu, "samples": len(train), "steps": len(steps),
              "step_samples": steps, "real_tokens": real, "trained_tokens": labelled,
              "tokens_per_s": labelled / seconds, "samples_per_s": len(train) / seconds,
              "padding_share": 1 - real / max(rec.padded, 1),
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "model_gflop": model_flops / 1e9, "executed_gflop": executed / 1e9,
              "eval_loss_per_token": held_out_loss(model, tok, held), "matmul_peak_gflops": peak}
    shutil.rmtree(out, ignore_errors=True)
    return result


# ------------------------------------------------------------------------------------------------ driver


def _child(kind: str, mode: str, small: bool) -> dict:
    cmd = [sys.executable, __file__, "--_child", f"{kind}:{mode}"] + (["--small"] if small else [])
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("CHILD ")]
    if p.returncode != 0 or not line:
        raise SystemExit(f"{kind}/{mode} run failed (exit {p.returncode}):\n{p.stderr[-4000:]}")
    return json.loads(line[-1][6:])


def _expected_steps(n: int, ga: int) -> list[list[int]]:
    from labkit.train.batching import step_batches

    return step_batches(n, MICRO, ga, SEED)


def _print_table(results: dict, peak: dict, sizes: dict, isolated: bool) -> None:
    rss = "process" if isolated else "run (one process: cumulative)"
    print(f"matmul peak (measured in this run): fp32 {peak['float32']:.1f} GFLOP/s"
          + (f", bf16 {peak['bfloat16']:.1f}" if peak.get("bfloat16") else "")
          + f"; data {DATASETS}, cutoff {sizes['mid']['cutoff']}, micro batch {MICRO}; peak RSS per {rss}")
    print(f"{'model':<6}{'run':<10}{'prec':>14}{'thr':>4}{'steps':>6}{'smp/step':>9}{'trained tok/s':>14}"
          f"{'samples/s':>10}{'padding':>8}{'peak MB':>8}{'MFU':>7}{'hwMFU':>7}{'eval loss/tok':>14}")
    for kind, runs in results.items():
        for mode, r in runs.items():
            print(f"{kind:<6}{mode:<10}{r['precision']:>14}{r['threads']:>4}{r['steps']:>6}"
                  f"{MICRO * sizes[kind]['ga']:>9}{r['tokens_per_s']:>14.1f}{r['samples_per_s']:>10.2f}"
                  f"{r['padding_share']:>8.1%}{r['peak_rss_mb']:>8.0f}{r['mfu']:>7.1%}{r['hw_mfu']:>7.1%}"
                  f"{r['eval_loss_per_token']:>14.4f}")


def summarize(results: dict, peak: dict, sizes: dict, isolated: bool) -> dict:
    """MFU and the same-step check per run, the table; the summary dict (the last JSON line)."""
    same = True
    for kind, runs in results.items():
        for r in runs.values():
            expected = _expected_steps(r["samples"], sizes[kind]["ga"])  # samples left after tokenization
            p = peak["bfloat16"] if r["precision"].startswith("bf16") and peak.get("bfloat16") else peak["float32"]
            r["mfu"] = r["model_gflop"] / r["seconds"] / p
            r["hw_mfu"] = r["executed_gflop"] / r["seconds"] / p
            r["same_steps_as_trainer"] = r.pop("step_samples") == expected
            same &= r["same_steps_as_trainer"]
    _print_table(results, peak, sizes, isolated)

    def ratio(kind, other):
        return round(results[kind]["labkit"]["tokens_per_s"] / results[kind][other]["tokens_per_s"], 3)

    loss_ok = all(runs["labkit"]["eval_loss_per_token"] <= runs["baseline"]["eval_loss_per_token"] * 1.02
                  for runs in results.values())
    mid = results["mid"]["labkit"]
    def cpu_ratio(kind):  # CPU seconds, a steadier comparison on a shared machine (same threads assumed)
        return round(results[kind]["baseline"]["cpu_seconds"] / results[kind]["labkit"]["cpu_seconds"], 3)

    return {**{ratio_key(kind, other): ratio(kind, other) for kind in ("mid", "tiny") for other in ("baseline", "trl")},
            "ratio_cpu": cpu_ratio("mid"), "ratio_cpu_tiny": cpu_ratio("tiny"), "same_steps": same,
            "loss_no_worse": loss_ok, "mfu_mid": round(mid["mfu"], 4), "hw_mfu_mid": round(mid["hw_mfu"], 4),
            "fp32_peak_gflops": round(peak["float32"], 1), "bf16_peak_gflops": round(peak.get("bfloat16") or 0, 1),
            "samples": {k: runs["labkit"]["samples"] for k, runs in results.items()},
            "samples_per_step": {k: MICRO * v["ga"] for k, v in sizes.items()},
            "runs": {k: {m: {f: (round(v, 4) if isinstance(v, float) else v) for f, v in r.items()}
                         for m, r in runs.items()} for k, runs in results.items()}}


def ratio_key(kind: str, other: str) -> str:
    """The JSON key of labkit's ratio against `other` on `kind`: ratio, ratio_trl, ratio_tiny, ratio_trl_tiny."""
    return "ratio" + ("_trl" if other == "trl" else "") + ("_tiny" if kind == "tiny" else "")


def schedule(rounds: int) -> list[tuple[int, str, str]]:
    """(round, model, mode) in run order: even rounds tiny -> mid, baseline -> trl; odd rounds reversed."""
    order = [(kind, mode) for kind in ("tiny", "mid") for mode in MODES]
    return [(r, kind, mode) for r in range(rounds) for kind, mode in (order if r % 2 == 0 else order[::-1])]


def fastest(per_round: dict) -> tuple[dict, dict]:
    """{kind: {mode: [run per round]}} -> ({kind: {mode: fastest run}}, {"tokens_per_s": ..., "ratio...": ...})
    where the second holds every round's tokens/s per setup and each round's own labkit ratios."""
    best = {kind: {mode: min(runs, key=lambda r: r["seconds"]) for mode, runs in modes.items()}
            for kind, modes in per_round.items()}
    spread: dict = {"tokens_per_s": {kind: {mode: [round(r["tokens_per_s"], 1) for r in runs]
                                            for mode, runs in modes.items()} for kind, modes in per_round.items()}}
    for kind, modes in per_round.items():
        for other in ("baseline", "trl"):
            if "labkit" in modes and other in modes:
                spread[ratio_key(kind, other)] = [round(a["tokens_per_s"] / b["tokens_per_s"], 3)
                               for a, b in zip(modes["labkit"], modes[other])]
    return best, spread


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="a few samples per run, all runs in this process (tests)")
    ap.add_argument("--rounds", type=int, default=0, help="repeats of every run, interleaved; the fastest counts "
                                                          "(default 2; 1 with --small)")
    ap.add_argument("--_child", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    small = args.small or os.environ.get("BENCH_SMALL", "") == "1"
    sizes = SMALL if small else FULL
    if args._child:
        kind, mode = args._child.split(":")
        print("CHILD " + json.dumps(run(kind, mode, sizes[kind])), flush=True)
        return 0
    from labkit.env.threads import configure_threads
    from labkit.train.batching import fast_bf16_cpu

    configure_threads()
    peak = {"float32": matmul_peak("float32", seconds=0.2 if small else 0.6)}
    if fast_bf16_cpu():
        peak["bfloat16"] = matmul_peak("bfloat16", seconds=0.2 if small else 0.6)
    rounds = args.rounds or (1 if small else 2)
    if rounds < 1:
        ap.error("--rounds must be 1 or more")
    per_round: dict = {kind: {mode: [] for mode in MODES} for kind in ("tiny", "mid")}
    for _r, kind, mode in schedule(rounds):
        per_round[kind][mode].append(run(kind, mode, sizes[kind], cache=True) if small
                                     else _child(kind, mode, small))
    results, spread = fastest(per_round)
    rounds_alike = all(r["step_samples"] == results[kind][mode]["step_samples"]  # every round: the same steps
                       for kind, modes in per_round.items() for mode, runs in modes.items() for r in runs)
    peak["float32"] = max([peak["float32"], matmul_peak("float32", seconds=0.2 if small else 0.6)]
                          + [r["matmul_peak_gflops"] for runs in results.values() for r in runs.values()
                             if r["precision"] == "fp32"])  # the best seen in this run: MFU's denominator
    if peak.get("bfloat16"):
        peak["bfloat16"] = max([peak["bfloat16"]] + [r["matmul_peak_gflops"] for runs in results.values()
                                                     for r in runs.values() if r["precision"] != "fp32"])
    summary = summarize(results, peak, sizes, isolated=not small)
    summary["rounds"] = {"n": rounds, **spread}
    summary["same_steps"] = summary["same_steps"] and rounds_alike
    if rounds > 1:
        print("per round: " + "; ".join(f"{k} {v}" for k, v in spread.items() if k.startswith("ratio")))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

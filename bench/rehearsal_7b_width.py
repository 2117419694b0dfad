"""The real job rehearsed at 7B width on CPU: official-layout Linly / Baichuan folders through labkit, row by row.

Builds LLaMA (Linly) and Baichuan-7B models with the real 7B layer shapes (hidden 4096, 32 heads, intermediate
11008, vocab 32000 / 64000) but only 2 layers, with random weights (nothing is downloaded), saved the way users
have them: Linly as a transformers LLaMA folder (sharded safetensors + index, sentencepiece LlamaTokenizer),
Baichuan exactly as the official release (`pytorch_model.bin`, config.json with `auto_map` and
`BaiChuanForCausalLM`, the remote .py files, a sentencepiece `tokenizer.model` trained on the bundled text,
tokenizer_config.json naming `BaiChuanTokenizer`). Weights are stored in fp16, as both releases are.

Each row (architecture x precision: fp32 -- bf16 where the CPU or GPU has it --, int8, nf4) runs in its own child
process, through the `labkit` command exactly as a user would, with the seed's command lines (alpaca-lora
finetune.py flags for Linly, LLaMA-Efficient-Tuning train_sft.py flags for Baichuan, `--allow_pickle` for the
.bin) plus the rehearsal's overrides (3 steps, micro batch 1, gradient checkpointing, cutoff 1024):
  1. `labkit train`: 3 LoRA steps, checkpoint-3 saved (complete marker checked);
  2. `labkit train --resume_from_checkpoint auto --max_steps 4`: resumes checkpoint-3, one more step;
  3. `labkit export`: merges the adapter into the fp32 base (labkit checks merged logits == base + adapter);
  4. `labkit generate --max_new_tokens 8`: base + adapter at the row's precision.
Per row: seconds per step, the peak memory of `labkit train` (the child's VmHWM, reset through
/proc/self/clear_refs between phases and at the first training forward, so it splits into loading and
training; on a GPU max_memory_allocated), what `labkit.models.memory` predicts for that configuration (shape,
precision, LoRA targets, the largest batch actually trained, the weight files; within +-25% or the row fails),
first and last loss, wall and CPU seconds. The last line printed is JSON with `rows` and `ok`.

    python bench/rehearsal_7b_width.py                       # 7B width, 2 layers, 6 rows (~1,200 CPU s)
    python bench/rehearsal_7b_width.py --hidden 256 --intermediate 688 --heads 4 --llama-vocab 3000 \
        --baichuan-vocab 4000 --rows llama:fp32,baichuan:nf4  # seconds (tests)
On a CUDA machine the same command runs unchanged: labkit puts the model on the GPU, the base precision is bf16.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

SEED_DATASET = "alpaca_1058_100negative"  # bundled; the seed's Linly data (--data_path ./alpaca_1058_100negative.json)
PROMPT = "把字母倒序排列。 a b c d"
TOLERANCE = 0.25  # the estimate must be within +-25% of the measured peak
MERGE_ATOL = 1e-3


@dataclass
class Row:
    arch: str
    precision: str
    ok: bool = False
    status: str = "not run"
    step_s: float = math.nan
    loss_first: float = math.nan
    loss_last: float = math.nan
    loss_resumed: float = math.nan
    batch: list = field(default_factory=list)  # (B, T) of the largest training batch
    peak_rss_gb: float = math.nan  # `labkit train` (imports, loading, 3 steps, checkpoint), child process
    load_rss_gb: float = math.nan  # ... of which the part before the first training step
    train_rss_gb: float = math.nan  # ... and from the first training step on
    resume_rss_gb: float = math.nan  # the resumed `labkit train` in the same process
    peak_gpu_gb: float | None = None  # `labkit train`, torch.cuda.max_memory_allocated (GPU only)
    estimate_gb: float = math.nan  # labkit.models.memory: max(loading, training)
    estimate_load_gb: float = math.nan
    estimate_train_gb: float = math.nan
    estimate_error: float = math.nan  # (estimate - measured) / measured, whole `labkit train`
    estimate_train_error: float = math.nan  # the same from the first training step on
    export_rss_gb: float = math.nan
    generate_rss_gb: float = math.nan
    merge_max_abs_diff: float = math.nan
    generated_tokens: int = 0
    phase_s: dict = field(default_factory=dict)
    checks: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ build


def base_precision(device: str) -> str:
    """bf16 where the hardware computes it natively (CUDA with bf16, CPU with AVX512-BF16/AMX), else fp32."""
    import torch

    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return "fp32"
    return "bf16" if {"avx512_bf16", "amx_bf16"} & set(flags) else "fp32"


def model_config(arch: str, args):
    from transformers import LlamaConfig

    from labkit.models import BaiChuanConfig

    kw = dict(hidden_size=args.hidden, num_attention_heads=args.heads, intermediate_size=args.intermediate,
              num_hidden_layers=args.layers, rms_norm_eps=1e-6, tie_word_embeddings=False,
              max_position_embeddings=4096 if arch == "baichuan" else 2048, bos_token_id=1, eos_token_id=2,
              pad_token_id=0)
    if arch == "baichuan":
        return BaiChuanConfig(vocab_size=args.baichuan_vocab, **kw)
    return LlamaConfig(vocab_size=args.llama_vocab, **kw)


def build_folders(work: Path, args, archs: set[str]) -> dict[str, Path]:
    """Write the Linly and/or Baichuan folders (fp16 random weights) under `work`; returns arch -> folder."""
    import torch
    from transformers import LlamaForCausalLM

    from labkit.models import BaiChuanForCausalLM
    from labkit.models import release_layout as rl

    texts = rl.bundled_texts()
    out = {}
    for arch in sorted(archs):
        t = time.perf_counter()
        config = model_config(arch, args)
        folder = work / ("baichuan-7B" if arch == "baichuan" else "linly-Ch-7b")
        recipe = json.dumps({"config": config.to_dict(), "sp_vocab": args.sp_vocab,
                             "format": args.baichuan_format if arch == "baichuan" else "safetensors"},
                            sort_keys=True, default=str)
        if (folder.parent / f"{folder.name}.recipe.json").is_file() and \
                (folder.parent / f"{folder.name}.recipe.json").read_text() == recipe:  # --workdir reused
            out[arch] = folder
            continue
        shutil.rmtree(folder, ignore_errors=True)
        with torch.device("meta"):
            meta = (BaiChuanForCausalLM if arch == "baichuan" else LlamaForCausalLM)(config)
        sd = rl.random_state_dict(meta, torch.float16, seed=1 if arch == "baichuan" else 0)
        sp = rl.train_sentencepiece(texts, min(args.sp_vocab, config.vocab_size), dummy_prefix=arch == "llama",
                                    pad_to=config.vocab_size if arch == "baichuan" else 0)
        if arch == "baichuan":
            rl.write_official_baichuan(folder, config, sd, sp, fmt=args.baichuan_format)
        else:
            rl.write_llama_folder(folder, config, sd, sp)
        del sd, meta
        (folder.parent / f"{folder.name}.recipe.json").write_text(recipe)
        size = sum(p.stat().st_size for p in folder.iterdir()) / 2**30
        print(f"built {folder.name}: {arch}, {config.num_hidden_layers} layers x {config.hidden_size} wide, vocab "
              f"{config.vocab_size}, {size:.2f} GiB on disk, {time.perf_counter() - t:.0f} s", flush=True)
        out[arch] = folder
    return out


def seed_command(arch: str, base: Path, out: Path, precision: str, args, data: dict) -> list[str]:
    """The seed's command line for `arch` (paths changed) + the rehearsal's overrides."""
    if arch == "llama":  # alpaca-lora finetune.py, Linly
        cmd = ["--base_model", str(base), "--data_path", data["path"], "--output_dir", str(out), "--num_epochs", "2",
               "--cutoff_len", str(args.cutoff_len), "--val_set_size", "0",
               "--lora-target-modules", "[q_proj,v_proj,k_proj,o_proj]",
               "--batch_size", str(args.micro_batch), "--micro_batch_size", str(args.micro_batch),
               "--precision", precision]  # alpaca-lora itself always loads 8-bit; each row picks its precision
    else:  # LLaMA-Efficient-Tuning train_sft.py, Baichuan-7B
        cmd = ["--model_name_or_path", str(base), "--do_train", "--dataset", data["dataset"],
               "--finetuning_type", "lora", "--lora_rank", "8", "--lora_target", "W_pack", "--output_dir", str(out),
               "--per_device_train_batch_size", str(args.micro_batch), "--gradient_accumulation_steps", "1",
               "--lr_scheduler_type", "cosine", "--learning_rate", "5e-5", "--max_grad_norm", "0.5",
               "--num_train_epochs", "3.0", "--dev_ratio", "0", "--plot_loss",  # LET: cutoff = source + target
               "--max_source_length", str(args.cutoff_len // 2), "--max_target_length", str(args.cutoff_len // 2)]
        cmd += {"int8": ["--quantization_bit", "8"], "nf4": ["--quantization_bit", "4"], "bf16": ["--bf16"]}.get(
            precision, ["--fp16"])  # the seed's --fp16 (fp32 on CPU)
        if data.get("dataset_dir"):
            cmd += ["--dataset_dir", data["dataset_dir"]]
        if args.baichuan_format == "bin":
            cmd += ["--allow_pickle"]
    return cmd + ["--max_steps", str(args.steps), "--save_steps", str(args.steps), "--logging_steps", "1",
                  "--gradient_checkpointing", "true", "--packing", "false", "--warmup_steps", "0",
                  "--disable_tqdm", "true", "--seed", "42"]


def synthetic_data(work: Path, folder: Path, tokens: int) -> dict:
    """A registered alpaca file whose records are about `tokens` tokens long (bundled text concatenated)."""
    import sentencepiece as spm

    from labkit.models.release_layout import bundled_texts

    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    texts = [t for t in bundled_texts() if len(t) > 8]
    records, i = [], 0
    for _ in range(16):
        out = ""
        while len(sp.encode(out)) < tokens - 16:
            out += texts[i % len(texts)] + "\n"
            i += 1
        records.append({"instruction": texts[i % len(texts)][:40], "input": "", "output": out})
    ddir = work / "data"
    ddir.mkdir(exist_ok=True)
    (ddir / "rehearsal.json").write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    (ddir / "dataset_info.json").write_text(json.dumps({"rehearsal": {"file_name": "rehearsal.json"}}))
    return {"path": str(ddir / "rehearsal.json"), "dataset": "rehearsal", "dataset_dir": str(ddir)}


# ------------------------------------------------------------------------------------------ child


def _hwm_gb() -> float:
    """Peak resident set size of this process since the last reset (VmHWM), GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _reset_peak() -> None:
    import gc

    import torch

    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)
    except OSError:
        pass
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


class _Tee:
    """A text stream that writes through to `stream` and keeps a copy (the phase's error line)."""

    def __init__(self, stream):
        self.stream, self.copy = stream, []

    def write(self, text: str) -> int:
        self.copy.append(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def getvalue(self) -> str:
        return "".join(self.copy)


def _gpu_peak(res: dict) -> float | None:
    """GPU max_memory_allocated of the phase (GiB), loading included; None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    return max(torch.cuda.max_memory_allocated() / 2**30, res["load_peak_gpu_gb"] or 0.0)


def _phase(name: str, argv: list[str], res: dict) -> int:
    """Run `labkit <argv>` in this process; record rc, seconds, peak RSS (and GPU peak) of the phase."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from labkit.cli import main as labkit_main

    _reset_peak()
    res["load_peak_gb"] = res["load_peak_gpu_gb"] = None
    t = time.perf_counter()
    buf, err = io.StringIO(), _Tee(sys.stderr)
    with redirect_stdout(buf), redirect_stderr(err):
        try:
            rc = labkit_main(argv)
        except Exception as err:  # noqa: BLE001 - a traceback in one phase is the row's finding
            import traceback

            traceback.print_exc()
            res["errors"][name] = f"{type(err).__name__}: {err}"
            rc = 1
    res["stdout"][name] = buf.getvalue()
    errors = [x for x in err.getvalue().splitlines() if x.startswith("error: ")]
    if rc != 0 and errors and name not in res["errors"]:
        res["errors"][name] = errors[-1]
    sys.stdout.write(buf.getvalue())
    res["phases"][name] = {"rc": rc, "s": round(time.perf_counter() - t, 1), "load_peak_rss_gb": res["load_peak_gb"],
                           "peak_rss_gb": max(_hwm_gb(), res["load_peak_gb"] or 0),
                           "train_peak_rss_gb": _hwm_gb() if res["load_peak_gb"] is not None else None,
                           "load_peak_gpu_gb": res["load_peak_gpu_gb"], "peak_gpu_gb": _gpu_peak(res)}
    print(f"[{res['row']}] {name}: rc {rc}, {res['phases'][name]['s']} s, peak RSS "
          f"{res['phases'][name]['peak_rss_gb']:.2f} GiB", file=sys.stderr, flush=True)
    return rc


def _watch_batches(res: dict) -> None:
    """At the first training forward of a phase, note the peak so far (imports + loading) and reset it, so the
    phase's peak afterwards is the training peak; record the largest (B, T) any training embedding lookup sees."""
    import torch

    def hook(module, args):
        if not (res["training"] and isinstance(module, torch.nn.Embedding) and args and torch.is_tensor(args[0])
                and args[0].dim() == 2):
            return
        if res["load_peak_gb"] is None:
            res["load_peak_gb"] = _hwm_gb()
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass
            if torch.cuda.is_available():
                res["load_peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 2**30
                torch.cuda.reset_peak_memory_stats()
        b, t = args[0].shape
        if b * t > res["batch"][0] * res["batch"][1]:
            res["batch"] = [int(b), int(t)]

    torch.nn.modules.module.register_module_forward_pre_hook(hook)


def child(spec: dict) -> dict:
    """One row: train, resume, export, generate in this process; returns the measurements as a dict."""
    res = {"row": f"{spec['arch']}:{spec['precision']}", "phases": {}, "errors": {}, "stdout": {}, "batch": [0, 0],
           "training": True, "load_peak_gb": None, "load_peak_gpu_gb": None}
    _watch_batches(res)
    out, merged = Path(spec["out"]), Path(spec["merged"])
    train = spec["train_argv"]
    if _phase("train", ["train", *train], res) == 0:
        res["train_metrics"] = json.loads((out / "train_metrics.json").read_text())
        if _phase("resume", ["train", *spec["resume_argv"]], res) == 0:
            res["resume_metrics"] = json.loads((out / "train_metrics.json").read_text())
    res["training"] = False
    from labkit.train import checkpoints as ck

    ckpt = out / f"checkpoint-{spec['steps']}"
    res["checkpoint_complete"] = ck.is_complete(ckpt) if ckpt.is_dir() else False
    extra = ["--allow_pickle"] if spec.get("allow_pickle") else []
    if (out / "adapter_model.safetensors").is_file():
        if _phase("export", ["export", "--base_model", spec["base"], "--lora_weights", str(out),
                             "--output_dir", str(merged), *extra], res) == 0:
            res["export"] = json.loads((merged / "labkit_export.json").read_text())
        gen = ["generate", "--base_model", spec["base"], "--lora_weights", str(out), "--prompt", PROMPT,
               "--max_new_tokens", "8", "--json", *extra]
        prec = spec["precision"]
        gen += {"int8": ["--load_8bit"], "nf4": ["--load_4bit"]}.get(prec, ["--precision", prec])
        if _phase("generate", gen, res) == 0:
            lines = [x for x in res["stdout"]["generate"].splitlines() if x.startswith("{")]
            res["generated"] = json.loads(lines[-1]) if lines else {}
    return res


# ------------------------------------------------------------------------------------------ parent


def run_row(arch: str, precision: str, folder: Path, work: Path, args, data: dict, device: str) -> Row:
    row = Row(arch, precision)
    out, merged = work / f"{arch}-{precision}" / "lora", work / f"{arch}-{precision}" / "merged"
    shutil.rmtree(out.parent, ignore_errors=True)
    out.parent.mkdir(parents=True)
    train = seed_command(arch, folder, out, precision, args, data)
    resume = list(train)
    resume[resume.index("--max_steps") + 1] = str(args.steps + 1)
    spec = {"arch": arch, "precision": precision, "base": str(folder), "out": str(out), "merged": str(merged),
            "steps": args.steps, "train_argv": train, "resume_argv": resume + ["--resume_from_checkpoint", "auto"],
            "allow_pickle": arch == "baichuan" and args.baichuan_format == "bin"}
    result_file = out.parent / "child.json"
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    t, cpu = time.perf_counter(), _children_cpu_s()
    p = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec), "--result", str(result_file)],
                       env=env, cwd=str(work), timeout=args.row_timeout, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t, _children_cpu_s() - cpu
    (out.parent / "child.log").write_text(p.stdout + "\n--- stderr ---\n" + p.stderr)
    if not result_file.is_file():
        row.status = f"child died (rc {p.returncode}): {p.stderr.strip().splitlines()[-1:] or ''}"
        return row
    res = json.loads(result_file.read_text())
    fill_row(row, res, folder, args, device)
    row.phase_s["row"] = round(wall, 1)
    row.phase_s["row_cpu"] = round(cpu, 1)  # user + system CPU seconds of the child: what an idle machine needs
    if not row.ok:
        tail = "\n".join(p.stderr.strip().splitlines()[-25:])
        print(f"--- {arch}:{precision} failed: {row.status}\n{tail}", file=sys.stderr, flush=True)
    if not args.keep:
        shutil.rmtree(merged, ignore_errors=True)
    return row


def _children_cpu_s() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def fill_row(row: Row, res: dict, folder: Path, args, device: str) -> None:
    """Measurements + checks of one child's result; row.ok only when every phase ran and every check holds."""
    from labkit.models.memory import estimate_training

    ph = res["phases"]
    row.phase_s = {k: v["s"] for k, v in ph.items()}
    tm, rm = res.get("train_metrics", {}), res.get("resume_metrics", {})
    train = ph.get("train", {})
    row.peak_rss_gb = train.get("peak_rss_gb", math.nan)
    row.load_rss_gb = train.get("load_peak_rss_gb") or math.nan
    row.train_rss_gb = train.get("train_peak_rss_gb") or math.nan
    row.resume_rss_gb = ph.get("resume", {}).get("peak_rss_gb", math.nan)
    row.peak_gpu_gb = train.get("peak_gpu_gb")
    row.export_rss_gb = ph.get("export", {}).get("peak_rss_gb", math.nan)
    row.generate_rss_gb = ph.get("generate", {}).get("peak_rss_gb", math.nan)
    row.step_s = tm.get("train_runtime", math.nan) / max(1, tm.get("global_step", 0) or 1)
    row.loss_first, row.loss_last = tm.get("first_train_loss", math.nan), tm.get("final_train_loss", math.nan)
    row.loss_resumed = rm.get("final_train_loss", math.nan)
    row.batch = res["batch"]
    b, t = res["batch"] if res["batch"][0] else (args.micro_batch, args.cutoff_len)
    est = estimate_training(folder, row.precision, lora_r=8, lora_targets=None, seq_len=t, batch=b,
                            gradient_checkpointing=True, device=device)
    row.estimate_gb, row.estimate_load_gb, row.estimate_train_gb = (
        est.peak_gb, est.load_peak / 2**30, est.train_peak / 2**30)
    if row.peak_gpu_gb is not None:  # on a GPU the estimate is of max_memory_allocated
        row.estimate_error = (row.estimate_gb - row.peak_gpu_gb) / row.peak_gpu_gb
        row.estimate_train_error = row.estimate_error
    else:
        row.estimate_error = (row.estimate_gb - row.peak_rss_gb) / row.peak_rss_gb
        row.estimate_train_error = (row.estimate_train_gb - row.train_rss_gb) / row.train_rss_gb
    export = res.get("export", {})
    row.merge_max_abs_diff = export.get("merge_max_abs_diff", math.nan)
    gen = res.get("generated", {})
    response = gen.get("adapter", gen.get("response", ""))
    row.generated_tokens = _count_tokens(folder, response) if response else 0
    row.checks = {
        "train": ph.get("train", {}).get("rc") == 0 and tm.get("global_step") == args.steps,
        "checkpoint": bool(res.get("checkpoint_complete")),
        "resume": ph.get("resume", {}).get("rc") == 0 and rm.get("global_step") == args.steps + 1
                  and str(rm.get("resumed_from", "")).endswith(f"checkpoint-{args.steps}"),
        "finite_loss": all(math.isfinite(x) for x in (row.loss_first, row.loss_last, row.loss_resumed)),
        "export": ph.get("export", {}).get("rc") == 0 and row.merge_max_abs_diff <= MERGE_ATOL,
        "generate": ph.get("generate", {}).get("rc") == 0 and row.generated_tokens > 0,
        "estimate": abs(row.estimate_error) <= TOLERANCE and abs(row.estimate_train_error) <= TOLERANCE,
    }
    failed = [k for k, v in row.checks.items() if not v]
    row.ok = not failed
    errors = "; ".join(f"{k}: {v}" for k, v in res.get("errors", {}).items())
    row.status = "ok" if row.ok else "failed: " + ", ".join(failed) + (f" ({errors})" if errors else "")


def _count_tokens(folder: Path, text: str) -> int:
    from labkit.models import load_tokenizer

    return len(load_tokenizer(folder)(text, add_special_tokens=False)["input_ids"])


# ------------------------------------------------------------------------------------------ report


def table(rows: list[Row]) -> str:
    head = ["arch", "precision", "batch", "s/step", "peak RSS GiB (load / train)", "estimate GiB (load / train)",
            "est. err", "loss first", "loss last", "resumed", "merge |d|", "export RSS", "ok"]
    body = []
    for r in rows:
        def f(v, fmt):
            return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)
        body.append([r.arch, r.precision, "x".join(map(str, r.batch)) or "-", f(r.step_s, ".1f"),
                     f"{f(r.peak_rss_gb, '.2f')} ({f(r.load_rss_gb, '.2f')} / {f(r.train_rss_gb, '.2f')})"
                     + (f" GPU {r.peak_gpu_gb:.2f}" if r.peak_gpu_gb is not None else ""),
                     f"{f(r.estimate_gb, '.2f')} ({f(r.estimate_load_gb, '.2f')} / {f(r.estimate_train_gb, '.2f')})",
                     f"{f(100 * r.estimate_error, '+.0f')}% / {f(100 * r.estimate_train_error, '+.0f')}%",
                     f(r.loss_first, ".4f"),
                     f(r.loss_last, ".4f"), f(r.loss_resumed, ".4f"), f(r.merge_max_abs_diff, ".1e"),
                     f(r.export_rss_gb, ".2f"), "ok" if r.ok else r.status])
    widths = [max(len(h), *(len(x[i]) for x in body)) for i, h in enumerate(head)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(x) for x in body])


def _clean(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else float(f"{v:.5g}") if isinstance(v, float)
                else v) for k, v in d.items()}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="llama:base,llama:int8,llama:nf4,baichuan:base,baichuan:int8,baichuan:nf4",
                    help="arch:precision list; 'base' = bf16 where the hardware has it, else fp32")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--intermediate", type=int, default=11008)
    ap.add_argument("--llama-vocab", type=int, default=32000, help="Linly's vocabulary (32000; extended ones larger)")
    ap.add_argument("--baichuan-vocab", type=int, default=64000)
    ap.add_argument("--sp-vocab", type=int, default=8000, help="upper bound of the sentencepiece vocabularies trained")
    ap.add_argument("--baichuan-format", choices=["bin", "safetensors"], default="bin",
                    help="bin = the official release (pytorch_model.bin, needs --allow_pickle)")
    ap.add_argument("--steps", type=int, default=3, help="training steps before the checkpoint (resume adds one)")
    ap.add_argument("--cutoff-len", type=int, default=1024)
    ap.add_argument("--micro-batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=0,
                    help="0 = the bundled seed data (alpaca_1058_100negative); N = records of about N tokens")
    ap.add_argument("--workdir", default="", help="folder for models and outputs (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (merged exports included)")
    ap.add_argument("--row-timeout", type=float, default=1800)
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    ap.add_argument("--result", default="", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def parse_rows(spec: str, base: str) -> list[tuple[str, str]]:
    rows = []
    for item in filter(None, (x.strip() for x in spec.split(","))):
        arch, _, prec = item.partition(":")
        prec = base if prec in ("base", "") else prec
        if arch not in ("llama", "baichuan") or prec not in ("fp32", "bf16", "int8", "nf4"):
            raise SystemExit(f"error: --rows {item!r}: use llama|baichuan : base|fp32|bf16|int8|nf4")
        rows.append((arch, prec))
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        res = child(json.loads(args.child))
        Path(args.result).write_text(json.dumps(res, default=str))
        return 0
    import torch

    start = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows_spec = parse_rows(args.rows, base_precision(device))
    work = Path(args.workdir).resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="labkit-rehearsal-"))
    work.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name() if device == "cuda" else f"{platform.processor() or platform.machine()}, " \
        f"{os.cpu_count()} CPU threads"
    print(f"rehearsal: {args.layers} layers x {args.hidden} wide ({args.heads} heads, intermediate "
          f"{args.intermediate}),"
          f" rows {', '.join(a + ':' + p for a, p in rows_spec)} on {name}; work folder {work}", flush=True)
    try:
        folders = build_folders(work, args, {a for a, _ in rows_spec})
        any_folder = next(iter(folders.values()))
        data = synthetic_data(work, any_folder, args.seq) if args.seq else \
            {"path": str(ROOT / "data" / f"{SEED_DATASET}.json"), "dataset": SEED_DATASET,
             "dataset_dir": str(ROOT / "data")}
        rows = []
        for arch, prec in rows_spec:
            row = run_row(arch, prec, folders[arch], work, args, data, device)
            print(f"row {arch}:{prec}: {row.status}; {row.step_s:.1f} s/step, peak RSS {row.peak_rss_gb:.2f} GiB, "
                  f"estimate {row.estimate_gb:.2f} GiB, phases {row.phase_s}", flush=True)
            rows.append(row)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - start
    print(table(rows))
    import resource

    me = resource.getrusage(resource.RUSAGE_SELF)
    cpu = _children_cpu_s() + me.ru_utime + me.ru_stime
    print(f"elapsed {elapsed:.0f} s wall; {cpu:.0f} CPU s in all (build + rows) "
          f"(load average {os.getloadavg()[0]:.1f} at the end)")
    result = {"bench": "rehearsal_7b_width", "device": name, "layers": args.layers, "hidden": args.hidden,
              "elapsed_s": round(elapsed, 1), "cpu_s": round(cpu, 1), "rows": [_clean(asdict(r)) for r in rows],
              "ok": bool(rows) and all(r.ok for r in rows)}
    print(json.dumps(result, ensure_ascii=False))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""LoRA training-step throughput of 7B-shaped LLaMA (Linly) and Baichuan (W_pack) in bf16, int8 and nf4.

Random weights built directly on the device (no download, no checkpoint), quantized with bitsandbytes the way
`BitsAndBytesConfig(load_in_8bit=True)` / `(load_in_4bit=True, bnb_4bit_quant_type="nf4",
bnb_4bit_use_double_quant=True)` would, prepared and wrapped in LoRA the way `labkit train` does (k-bit bases
through peft's `prepare_model_for_kbit_training`, LoRA weights fp32, bf16 autocast, AdamW). For each
(architecture, precision, sequence length) it times optimizer steps and reports tokens/s, peak device memory
and model FLOPs utilization (MFU) against a bf16 matmul peak measured in the same run.

    python bench/gpu_7b.py                     # one GPU: 7B shapes, seq 512 and 1024 (< 5 min on an H100)
    python bench/gpu_7b.py --device cpu --tiny # the same code on a tiny shape on CPU (fp32/int8/nf4), seconds

Model FLOPs per token (frozen base, LoRA adapters): 4*N_frozen (forward + input gradients of every base
linear, lm_head included) + 6*N_lora + 12*L*h*T (attention scores and values, forward + backward, full TxT
counted, as in PaLM's MFU). Gradient checkpointing's recomputation is not counted (MFU convention).
The last line printed is JSON: `ratio` = MFU of the headline configuration (LLaMA, bf16 -- fp32 on CPU --,
longest sequence), plus every row.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

SHAPES = {
    # Linly-Chinese-LLaMA-7B / Baichuan-7B
    "7b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, intermediate_size=11008),
    # same architecture, a few MB: exercises every code path on CPU in seconds
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=344),
}
VOCAB = {"7b": {"llama": 32000, "baichuan": 64000}, "tiny": {"llama": 500, "baichuan": 1000}}
LORA_TARGETS = {"llama": ["q_proj", "k_proj", "v_proj", "o_proj"], "baichuan": ["W_pack"]}  # labkit's presets


@dataclass
class Row:
    arch: str
    precision: str
    seq_len: int
    batch: int
    status: str = "ok"  # ok | oom | error: ... | skipped (time budget)
    step_s: float = math.nan
    tokens_per_s: float = math.nan
    peak_mem_gib: float = math.nan
    model_tflops: float = math.nan  # achieved model FLOP/s, in TFLOP/s
    mfu: float = math.nan
    vs_base: float = math.nan  # tokens/s over the same arch and seq_len in the base precision (bf16 / fp32)
    loss: float = math.nan
    build_s: float = math.nan
    frozen_params: int = 0  # parameters of the base linears (lm_head included)
    lora_params: int = 0
    quantized_linears: int = 0  # bitsandbytes Linear8bitLt / Linear4bit modules in the model
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- build


def make_config(arch: str, shape: str, seq_len: int):
    """A LlamaConfig (LLaMA) or labkit's BaiChuanConfig (Baichuan-7B: W_pack, untied head, eps 1e-6)."""
    from transformers import LlamaConfig

    kw = dict(SHAPES[shape], vocab_size=VOCAB[shape][arch], max_position_embeddings=max(2048, seq_len),
              rms_norm_eps=1e-6, tie_word_embeddings=False, use_cache=False)
    if arch == "baichuan":
        try:
            from labkit.models import BaiChuanConfig

            return BaiChuanConfig(**kw), ""
        except ImportError as err:  # labkit.models not in this checkout: same shapes, q/k/v unfused
            return LlamaConfig(**kw), f"labkit.models.BaiChuanForCausalLM unavailable ({err}); LLaMA with vocab 64000 used"
    return LlamaConfig(**kw), ""


def build_model(arch: str, shape: str, seq_len: int, device, dtype):
    """Random-weight model allocated directly on `device` in `dtype` (no CPU copy, nothing downloaded)."""
    import torch
    from transformers import LlamaForCausalLM

    config, note = make_config(arch, shape, seq_len)
    cls = LlamaForCausalLM
    if arch == "baichuan" and not note:
        from labkit.models import BaiChuanForCausalLM

        cls = BaiChuanForCausalLM
    torch.manual_seed(0)
    with torch.device(device):
        model = cls._from_config(config, dtype=dtype, attn_implementation="sdpa")
    model.config.use_cache = False
    return model, note


def quantize_linears(model, precision: str, compute_dtype):
    """Replace every decoder nn.Linear (lm_head stays) by bitsandbytes' Linear8bitLt / Linear4bit, in place.

    Same modules and settings as transformers' BitsAndBytesConfig(load_in_8bit=True) (threshold 6.0, int8
    weights) and (load_in_4bit=True, nf4, double quantization, blocksize 64, compute dtype `compute_dtype`).
    Returns the number of linears replaced.
    """
    import bitsandbytes as bnb
    import bitsandbytes.functional as F
    import torch

    replaced = 0
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, torch.nn.Linear) or name == "lm_head" or ".lora_" in parent_name:
                continue
            weight = child.weight.data
            device = weight.device
            if precision == "int8":
                new = bnb.nn.Linear8bitLt(child.in_features, child.out_features, bias=child.bias is not None,
                                          has_fp16_weights=False, threshold=6.0, device="meta")
                cb, scb, _ = F.int8_vectorwise_quant(weight.to(torch.float16))
                new.weight = bnb.nn.Int8Params(cb, requires_grad=False, has_fp16_weights=False, CB=cb, SCB=scb)
            else:
                new = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                        compute_dtype=compute_dtype, compress_statistics=True, quant_type="nf4",
                                        device="meta")
                packed, state = F.quantize_4bit(weight.contiguous(), blocksize=64, compress_statistics=True,
                                                quant_type="nf4", quant_storage=torch.uint8)
                new.weight = bnb.nn.Params4bit(packed, requires_grad=False, quant_state=state, blocksize=64,
                                               compress_statistics=True, quant_type="nf4",
                                               quant_storage=torch.uint8, module=new, bnb_quantized=True)
                new.quant_state = state
            if child.bias is not None:
                new.bias = torch.nn.Parameter(child.bias.data.to(device), requires_grad=False)
            setattr(parent, name, new)
            replaced += 1
            del child, weight
    setattr(model, "is_loaded_in_8bit" if precision == "int8" else "is_loaded_in_4bit", True)
    return replaced


def add_lora(model, arch: str, quantized: bool, r: int, grad_ckpt: bool):
    """LoRA the way `labkit train` does it: k-bit bases prepared by peft, LoRA weights in fp32."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=grad_ckpt,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    elif grad_ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    try:
        from labkit.models.lora import attach_lora

        model = attach_lora(model, LORA_TARGETS[arch], r=r, alpha=2 * r, dropout=0.05)
    except ImportError:
        cfg = LoraConfig(task_type="CAUSAL_LM", r=r, lora_alpha=2 * r, lora_dropout=0.05,
                         target_modules=LORA_TARGETS[arch], bias="none")
        model = get_peft_model(model, cfg)
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    return model


# ---------------------------------------------------------------------------------------------- measure


def count_params(model) -> tuple[int, int]:
    """(frozen parameters inside linear layers incl. lm_head, LoRA parameters); 4-bit packing undone."""
    import torch

    frozen = lora = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and ".lora_" not in name and not name.endswith(("lora_A", "lora_B")):
            frozen += module.in_features * module.out_features
    for name, p in model.named_parameters():
        if p.requires_grad and "lora_" in name:
            lora += p.numel()
    return frozen, lora


def model_flops_per_step(frozen: int, lora: int, layers: int, hidden: int, batch: int, seq: int) -> float:
    """Model FLOPs of one LoRA training step (see the module docstring)."""
    tokens = batch * seq
    return tokens * (4.0 * frozen + 6.0 * lora + 12.0 * layers * hidden * seq)


def matmul_peak_tflops(device, dtype, n: int, iters: int) -> float:
    """Best sustained TFLOP/s of an n x n x n matmul in `dtype` (the MFU denominator, measured now)."""
    import torch

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    for _ in range(3):
        torch.matmul(a, b)
        _sync(device)
        t = time.perf_counter()
        for _ in range(iters):
            torch.matmul(a, b)
        _sync(device)
        best = max(best, 2.0 * n**3 * iters / (time.perf_counter() - t) / 1e12)
    del a, b
    return best


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _peak_mem_gib(device) -> float:
    import torch

    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # process peak RSS (KiB on Linux)


def _free(device) -> None:
    import torch

    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def time_steps(model, device, vocab: int, batch: int, seq: int, warmup: int, steps: int, autocast_dtype) -> tuple[float, float]:
    """Mean seconds per optimizer step (forward + backward + AdamW) over `steps` after `warmup`; last loss."""
    import torch

    g = torch.Generator(device="cpu").manual_seed(seq)
    ids = torch.randint(3, vocab, (batch, seq), generator=g).to(device)  # (B, T)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    model.train()
    amp = (torch.autocast(device_type="cuda", dtype=autocast_dtype) if autocast_dtype is not None
           else torch.autocast(device_type="cpu", enabled=False))
    loss = None
    elapsed = 0.0
    for i in range(warmup + steps):
        _sync(device)
        t = time.perf_counter()
        with amp:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        if i >= warmup:
            elapsed += time.perf_counter() - t
    value = float(loss.detach().float().cpu())
    del opt, ids, loss
    return elapsed / steps, value


def real_lengths(n: int, longest: int, seed: int = 0) -> list[int]:
    """n sample lengths shaped like real instruction data (the benchmark corpora: p10 ~12%, p50 ~30%, p90 ~75% of
    the longest), capped at `longest`; deterministic."""
    import random

    from labkit.data.bench_corpus import quantile_length

    t = {"min": max(4, longest // 64), "p10": max(5, longest * 12 // 100), "p50": max(6, longest * 30 // 100),
         "p90": max(7, longest * 75 // 100), "max": longest}
    rng = random.Random(seed)
    return [min(longest, max(4, quantile_length(rng.random(), t))) for _ in range(n)]


def packed_vs_padded(model, device, vocab: int, seq_len: int, micro: int, batches: int, autocast_dtype) -> dict:
    """The same real-length samples trained as padded micro-batches (SDPA with a padding mask, logits everywhere,
    what the HF Trainer does) and as flattened rows (labkit: DocumentCollator, document attention with the
    backend chosen by measurement, logits only at labels): real tokens/s of each, forward + backward."""
    import torch

    from labkit.data.packing import DocumentCollator, PaddingCollator
    from labkit.models.attention import choose_backend, set_attention
    from labkit.train.batching import documents_loss

    g = torch.Generator().manual_seed(seq_len)
    feats = []
    for n in real_lengths(micro * (batches + 1), seq_len):
        ids = torch.randint(3, vocab, (n,), generator=g).tolist()
        feats.append({"input_ids": ids, "labels": [-100] * (n * 35 // 100) + ids[n * 35 // 100:]})
    micro_batches = [feats[i:i + micro] for i in range(0, len(feats), micro)]
    amp = (torch.autocast(device_type="cuda", dtype=autocast_dtype) if autocast_dtype is not None
           else torch.autocast(device_type="cpu", enabled=False))
    model.train()
    to = lambda b: {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in b.items()}  # noqa: E731

    def padded(mb):
        batch = to(PaddingCollator(0, pad_to_multiple_of=8)(mb))
        with amp:
            loss = model(**batch).loss
        loss.backward()
        return int(batch["input_ids"].numel())

    def packed(mb):
        batch = to(DocumentCollator()(mb))
        with amp:
            loss, _ = documents_loss(model, batch)
        (loss / max(1, sum(len(f["labels"]) for f in mb))).backward()
        return int(batch["input_ids"].numel())

    result, real = {}, sum(len(f["input_ids"]) for mb in micro_batches[1:] for f in mb)
    for name, fn, impl in (("padded", padded, "sdpa"), ("packed", packed, "labkit_docs")):
        from labkit.models.attention import register

        register()
        set_attention(model, impl)
        fn(micro_batches[0])  # warm-up (and, packed, the attention backend measurement)
        _sync(device)
        t, computed = time.perf_counter(), 0
        for mb in micro_batches[1:]:
            computed += fn(mb)
        _sync(device)
        model.zero_grad(set_to_none=True)
        result[f"{name}_tokens_per_s"] = round(real / (time.perf_counter() - t), 1)
        result[f"{name}_padding_share"] = round(1 - real / computed, 4)
    set_attention(model, "sdpa")
    heads = model.config.num_attention_heads
    q = torch.zeros(1, heads, 8, model.config.hidden_size // heads, device=device,
                    dtype=autocast_dtype or torch.float32)
    return {"seq_len": seq_len, "micro_batch": micro, "samples": micro * batches, "real_tokens": real,
            "speedup": round(result["packed_tokens_per_s"] / result["padded_tokens_per_s"], 3),
            "attention_backend": choose_backend(q, [0, 4, 8]), **result}


# ---------------------------------------------------------------------------------------------- run


def run(args) -> dict:
    import torch

    device = torch.device(args.device)
    shape = "tiny" if args.tiny else "7b"
    cuda = device.type == "cuda"
    base = "bf16" if cuda else "fp32"
    base_dtype = torch.bfloat16 if cuda else torch.float32
    precisions = [base if p in ("bf16", "fp32") else p for p in args.precisions]
    seq_lens = args.seq_lens or ([512, 1024] if not args.tiny else [32, 64])
    tokens_per_step = args.tokens_per_step or (2048 if not args.tiny else 128)
    archs = args.archs
    start = time.perf_counter()

    name = torch.cuda.get_device_name(device) if cuda else (platform.processor() or platform.machine()) + " CPU"
    peak = matmul_peak_tflops(device, base_dtype, n=8192 if cuda else 512, iters=20 if cuda else 5)
    print(f"device: {name} | torch {torch.__version__} | shape {shape} | peak {base} matmul {peak:.1f} TFLOP/s "
          f"(measured) | {tokens_per_step} tokens/step | grad checkpointing {'on' if args.grad_ckpt else 'off'}",
          flush=True)

    rows: list[Row] = []
    for arch in archs:
        for precision in precisions:
            pending = [Row(arch, precision, s, max(1, tokens_per_step // s)) for s in seq_lens]
            if time.perf_counter() - start > args.budget_s:
                for row in pending:
                    row.status = "skipped (time budget)"
                rows += pending
                continue
            _free(device)
            model = None
            try:
                t = time.perf_counter()
                model, note = build_model(arch, shape, max(seq_lens), device, base_dtype)
                quantized = 0
                if precision in ("int8", "nf4"):
                    quantized = quantize_linears(model, precision, compute_dtype=base_dtype)
                model = add_lora(model, arch, precision in ("int8", "nf4"), args.lora_r, args.grad_ckpt)
                _sync(device)
                build_s = time.perf_counter() - t
                frozen, lora = count_params(model)
                cfg = model.config
                for row in pending:
                    row.build_s, row.frozen_params, row.lora_params = build_s, frozen, lora
                    row.quantized_linears = quantized
                    row.notes += [note] if note else []
                    if time.perf_counter() - start > args.budget_s:
                        row.status = "skipped (time budget)"
                        continue
                    try:
                        if cuda:
                            torch.cuda.reset_peak_memory_stats()
                        step_s, loss = time_steps(model, device, cfg.vocab_size, row.batch, row.seq_len,
                                                  args.warmup, args.steps, torch.bfloat16 if cuda else None)
                    except torch.OutOfMemoryError:
                        row.status = "oom"
                        _free(device)
                        continue
                    flops = model_flops_per_step(frozen, lora, cfg.num_hidden_layers, cfg.hidden_size,
                                                 row.batch, row.seq_len)
                    row.step_s, row.loss = step_s, loss
                    row.tokens_per_s = row.batch * row.seq_len / step_s
                    row.peak_mem_gib = _peak_mem_gib(device)
                    row.model_tflops = flops / step_s / 1e12
                    row.mfu = row.model_tflops / peak
                    if not math.isfinite(loss):
                        row.notes.append("non-finite loss")
            except Exception as err:  # noqa: BLE001 - one broken configuration must not hide the others
                for row in pending:
                    if row.status == "ok" and math.isnan(row.step_s):
                        row.status = f"error: {type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
            finally:
                rows += pending
                del model
                _free(device)

    packing = None
    if base in precisions and time.perf_counter() - start <= args.budget_s:
        _free(device)
        try:  # packed vs padded on real-length samples: the base precision, the first architecture
            model, _ = build_model(archs[0], shape, max(seq_lens), device, base_dtype)
            model = add_lora(model, archs[0], False, args.lora_r, args.grad_ckpt)
            packing = packed_vs_padded(model, device, model.config.vocab_size, max(seq_lens), 4, args.steps,
                                       torch.bfloat16 if cuda else None)
            packing["arch"], packing["precision"] = archs[0], base
        except Exception as err:  # noqa: BLE001 - reported, the other rows stand
            packing = {"status": f"error: {type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"}
        finally:
            model = None
            _free(device)

    for row in rows:
        ref = next((r for r in rows if r.arch == row.arch and r.seq_len == row.seq_len and r.precision == base), None)
        if ref and ref.status == "ok" and row.status == "ok":
            row.vs_base = row.tokens_per_s / ref.tokens_per_s

    headline = next((r for r in rows if r.arch == archs[0] and r.precision == base and r.seq_len == max(seq_lens)), None)
    ok = [r for r in rows if r.status == "ok"]
    best = max(ok, key=lambda r: r.tokens_per_s, default=None)
    result = {
        "bench": "gpu_7b",
        "device": name,
        "shape": shape,
        "torch": torch.__version__,
        "peak_tflops": round(peak, 3),
        "peak_dtype": base,
        "tokens_per_step": tokens_per_step,
        "grad_checkpointing": args.grad_ckpt,
        "ratio": round(headline.mfu, 4) if headline and headline.status == "ok" else None,
        "ratio_definition": f"MFU of {archs[0]} {base} LoRA training at seq {max(seq_lens)}: model FLOP/s over the "
                            f"{base} matmul peak measured in this run",
        "best": None if best is None else {"arch": best.arch, "precision": best.precision, "seq_len": best.seq_len,
                                           "tokens_per_s": round(best.tokens_per_s, 1), "mfu": round(best.mfu, 4)},
        "elapsed_s": round(time.perf_counter() - start, 1),
        "results": [_round(asdict(r)) for r in rows],
        "packing": packing,  # packed vs padded micro-batches of real-length samples (labkit's path vs HF's)
    }
    return result


def _round(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else round(v, 4) if isinstance(v, float) else v)
            for k, v in d.items()}


def table(result: dict) -> str:
    mem = "peak GiB" if result["peak_dtype"] == "bf16" else "peak RSS GiB"  # GPU: max allocated; CPU: process RSS
    head = ["arch", "precision", "seq", "batch", "step s", "tokens/s", mem, "TFLOP/s", "MFU", "vs base", "status"]
    lines = []
    for r in result["results"]:
        def f(v, fmt):
            return "-" if v is None else format(v, fmt)
        lines.append([r["arch"], r["precision"], str(r["seq_len"]), str(r["batch"]), f(r["step_s"], ".3f"),
                      f(r["tokens_per_s"], ",.0f"), f(r["peak_mem_gib"], ".2f"), f(r["model_tflops"], ".3g"),
                      f(r["mfu"] and 100 * r["mfu"], ".1f") + ("%" if r["mfu"] is not None else ""),
                      f(r["vs_base"], ".2f") + ("x" if r["vs_base"] is not None else ""), r["status"]])
    widths = [max(len(h), *(len(x[i]) for x in lines)) if lines else len(h) for i, h in enumerate(head)]
    fmt = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    out = [fmt(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [fmt(x) for x in lines]
    return "\n".join(out)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default=None, help="cuda (default when a GPU is present) or cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny shape (tests, CPU) instead of the 7B shape")
    ap.add_argument("--archs", default="llama,baichuan", type=lambda s: [x for x in s.split(",") if x])
    ap.add_argument("--precisions", default="bf16,int8,nf4", type=lambda s: [x for x in s.split(",") if x],
                    help="bf16 means the base precision: bf16 on GPU, fp32 on CPU")
    ap.add_argument("--seq-lens", default=None, type=lambda s: [int(x) for x in s.split(",") if x],
                    help="default 512,1024 (tiny: 32,64)")
    ap.add_argument("--tokens-per-step", type=int, default=None, help="batch = this // seq_len (default 2048; tiny 128)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--lora-r", type=int, default=8)
    ap.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing (less memory, recompute)")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads for torch (default 1 on CPU: tiny matmuls lose to thread start-up and contention)")
    ap.add_argument("--budget-s", type=float, default=270.0, help="skip configurations started after this many s")
    args = ap.parse_args(argv)
    bad = [a for a in args.archs if a not in LORA_TARGETS] + [p for p in args.precisions
                                                                if p not in ("bf16", "fp32", "int8", "nf4")]
    if bad:
        ap.error(f"unknown arch/precision {bad}: archs llama,baichuan; precisions bf16 (fp32 on CPU),int8,nf4")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else None
    if args.device is None:  # e.g. `make bench` on a CPU-only machine: say so, stay green, print the JSON line
        print("skipped: no CUDA GPU here; bench/gpu_7b.py measures one GPU (e.g. an H100). "
              "`python bench/gpu_7b.py --device cpu --tiny` exercises the same code on CPU.", file=sys.stderr)
        print(json.dumps({"bench": "gpu_7b", "skipped": "no CUDA GPU", "ratio": None}))
        return 0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: --device {args.device} but torch sees no CUDA GPU", file=sys.stderr)
        return 2
    if not args.device.startswith("cuda") and not args.tiny:
        print("error: the 7B shape needs a GPU; add --tiny for a CPU run", file=sys.stderr)
        return 2
    if not args.device.startswith("cuda"):
        torch.set_num_threads(args.threads or 1)
    elif args.threads:
        torch.set_num_threads(args.threads)
    result = run(args)
    print(table(result))
    pk = result.get("packing") or {}
    if "speedup" in pk:
        print(f"packed vs padded ({pk['arch']} {pk['precision']}, {pk['samples']} real-length samples up to "
              f"{pk['seq_len']} tokens, micro-batch {pk['micro_batch']}): padded {pk['padded_tokens_per_s']:,.0f} "
              f"tokens/s ({pk['padded_padding_share']:.0%} padding), packed {pk['packed_tokens_per_s']:,.0f} tokens/s "
              f"-> {pk['speedup']:.2f}x; attention backend {pk['attention_backend']} (chosen by measurement)")
    elif pk:
        print(f"packed vs padded: {pk.get('status')}")
    print(f"elapsed {result['elapsed_s']} s; ratio = {result['ratio']} ({result['ratio_definition']})")
    print(json.dumps(result, ensure_ascii=False))
    failed = [r for r in result["results"] if r["status"] not in ("ok", "oom") and not r["status"].startswith("skipped")]
    return 1 if failed or result["ratio"] is None else 0


if __name__ == "__main__":
    sys.exit(main())

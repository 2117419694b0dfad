"""Generation throughput: new tokens/s batched (left padding, KV cache) vs one prompt at a time, same run.

Same prompts, same greedy settings, same number of new tokens per prompt (EOS suppressed so both sides do
the same work). Prints a table and, as its LAST line, JSON with "ratio" = batched / sequential tokens/s.

    python bench/generate_throughput.py [--arch llama|baichuan] [--prompts 16] [--batch_size 16]
                                        [--max_new_tokens 32] [--small] [--base_model PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _prompts(n: int) -> list[str]:
    """Held-out prompts from the bundled data (varied lengths), cycled to n."""
    from labkit.evaluate.heldout import load_heldout

    examples = load_heldout(max_per_dataset=max(n, 8), seed=0)
    return [examples[i % len(examples)] for i in range(n)]


def _model(args):
    from labkit.evaluate.heldout import load_with_adapter

    if args.base_model:
        return load_with_adapter(args.base_model, args.lora_weights or None, args.precision)
    from labkit.models.tiny import tiny_model_path

    return load_with_adapter(str(tiny_model_path(args.arch)), args.lora_weights or None, args.precision)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="llama", choices=["llama", "baichuan"], help="tiny model to use")
    ap.add_argument("--base_model", default="", help="a model folder instead of the tiny model")
    ap.add_argument("--lora_weights", default="", help="optional adapter on top")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--template", default="alpaca-lora/alpaca")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--max_new_tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2, help="timed repeats per mode (best is kept)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    ap.add_argument("--small", action="store_true", help="quick check for tests: 4 prompts, 6 new tokens, 1 repeat")
    args = ap.parse_args(argv)
    if args.small:
        args.prompts, args.batch_size, args.max_new_tokens, args.repeats = 4, 4, 6, 1

    import torch

    from labkit.evaluate.generate import generate

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = _model(args)
    prompts = _prompts(args.prompts)
    settings = dict(max_new_tokens=args.max_new_tokens, min_new_tokens=args.max_new_tokens, do_sample=False)
    generate(model, tok, prompts[:2], args.template, batch_size=2, **settings)  # warm-up

    def timed(batch_size: int) -> tuple[float, int, list[str]]:
        best, tokens, outs = float("inf"), 0, []
        for _ in range(args.repeats):
            stats: dict = {}
            t0 = time.perf_counter()
            outs = generate(model, tok, prompts, args.template, batch_size=batch_size, stats=stats, **settings)
            best = min(best, time.perf_counter() - t0)
            tokens = stats["new_tokens"]
        return best, tokens, outs

    seq_s, seq_tokens, seq_out = timed(1)
    bat_s, bat_tokens, bat_out = timed(args.batch_size)
    seq_tps, bat_tps = seq_tokens / seq_s, bat_tokens / bat_s
    same = sum(a == b for a, b in zip(seq_out, bat_out))
    print(f"model: {args.base_model or 'tiny ' + args.arch} ({args.precision}), {len(prompts)} prompts, "
          f"{args.max_new_tokens} new tokens each, torch threads {torch.get_num_threads()}")
    print(f"{'mode':<22}{'seconds':>10}{'new tokens':>12}{'tokens/s':>12}")
    print(f"{'one at a time':<22}{seq_s:>10.3f}{seq_tokens:>12}{seq_tps:>12.1f}")
    print(f"{'batched (bs=' + str(args.batch_size) + ')':<22}{bat_s:>10.3f}{bat_tokens:>12}{bat_tps:>12.1f}")
    print(f"identical greedy outputs: {same}/{len(prompts)}")
    print(json.dumps({"bench": "generate_throughput", "arch": args.arch, "prompts": len(prompts),
                      "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
                      "sequential_tokens_per_s": round(seq_tps, 2), "batched_tokens_per_s": round(bat_tps, 2),
                      "identical_outputs": same, "ratio": round(bat_tps / seq_tps, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

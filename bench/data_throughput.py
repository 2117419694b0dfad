"""Encode N generated alpaca records (Chinese + English): labkit's batched path vs alpaca-lora's per-example map.

Baseline = what alpaca-lora's finetune.py does: `datasets.Dataset.map` over single records, building the prompt
with the alpaca template and calling the tokenizer on the full prompt+response and again on the prompt alone
to mask it. labkit = `labkit.data.tokenize.tokenize_examples` (template segments encoded in a few batched
calls of the fast tokenizer). Same tokenizer (a byte-level BPE trained here), outputs compared record by record.
Prints records/s and peak memory of both; the LAST line is a JSON object with "ratio" (labkit / baseline).

    python bench/data_throughput.py [--n 50000] [--cutoff 256]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402

EN_WORDS = ("data model learn train token fast small large river mountain city music story paper light water "
            "garden window market doctor teacher student language number letter answer question reason").split()
ZH_WORDS = list("天地人山水火木金土日月星风云雨雪花草鱼鸟学习语言数字问题答案城市音乐故事医生老师学生朋友")
EN_INSTR = ["Write a short sentence about {w}.", "Explain what {w} means.", "Give three words related to {w}.",
            "Summarize the text.", "Translate the text into Chinese.", "List the key points about {w} and {v}."]
ZH_INSTR = ["用一句话描述{w}。", "解释{w}的意思。", "给出三个和{w}有关的词。", "总结下面的文字。", "把下面的文字翻译成英文。",
            "列出关于{w}和{v}的要点。"]


def generate_records(n: int, seed: int = 0) -> list[dict]:
    """n alpaca records, half English half Chinese, ~half with input; deterministic."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        zh = i % 2 == 1
        words = ZH_WORDS if zh else EN_WORDS
        sep = "" if zh else " "
        w, v = rng.choice(words), rng.choice(words)
        instr = rng.choice(ZH_INSTR if zh else EN_INSTR).format(w=w, v=v)
        inp = sep.join(rng.choice(words) for _ in range(rng.randint(3, 20))) if rng.random() < 0.5 else ""
        body = sep.join(rng.choice(words) for _ in range(rng.randint(5, 60)))
        out.append({"instruction": instr, "input": inp, "output": body + ("。" if zh else ".")})
    return out


class PeakRSS:
    """Peak resident memory above the start, sampled every 5 ms in a thread (covers Rust allocations too)."""

    def __enter__(self):
        self.proc = psutil.Process()
        gc.collect()
        self.start = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
        self.mb = (self.peak - self.start) / 2**20


# ------------------------------------------------------------------------- alpaca-lora's finetune.py, as written
ALPACA_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further context. "
                "Write a response that appropriately completes the request.\n\n"
                "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
ALPACA_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately completes "
                   "the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")


def baseline(records: list[dict], tokenizer, cutoff_len: int):
    import datasets

    def generate_prompt(instruction, input=None, label=None):
        res = (ALPACA_INPUT.format(instruction=instruction, input=input) if input
               else ALPACA_NO_INPUT.format(instruction=instruction))
        return res + label if label else res

    def tokenize(prompt, add_eos_token=True):
        result = tokenizer(prompt, truncation=True, max_length=cutoff_len, padding=False, return_tensors=None)
        if result["input_ids"][-1] != tokenizer.eos_token_id and len(result["input_ids"]) < cutoff_len \
                and add_eos_token:
            result["input_ids"].append(tokenizer.eos_token_id)
            result["attention_mask"].append(1)
        result["labels"] = result["input_ids"].copy()
        return result

    def generate_and_tokenize_prompt(data_point):
        full_prompt = generate_prompt(data_point["instruction"], data_point["input"], data_point["output"])
        tokenized_full_prompt = tokenize(full_prompt)
        user_prompt = generate_prompt(data_point["instruction"], data_point["input"])
        tokenized_user_prompt = tokenize(user_prompt, add_eos_token=False)
        user_prompt_len = len(tokenized_user_prompt["input_ids"])
        tokenized_full_prompt["labels"] = [-100] * user_prompt_len + tokenized_full_prompt["labels"][user_prompt_len:]
        return tokenized_full_prompt

    data = datasets.Dataset.from_list(records)
    return data.map(generate_and_tokenize_prompt, remove_columns=data.column_names)


# ------------------------------------------------------------------------------------------------ labkit
def labkit_path(records: list[dict], tokenizer, cutoff_len: int):
    from labkit.data.formats import Normalizer
    from labkit.data.tokenize import tokenize_examples

    norm = Normalizer("alpaca", None, None, "bench")
    examples = [norm(i, r)[0] for i, r in enumerate(records)]
    return tokenize_examples(examples, tokenizer, "alpaca-lora/alpaca", cutoff_len)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000, help="records to encode (default 50000)")
    ap.add_argument("--cutoff", type=int, default=256, help="cutoff_len in tokens")
    ap.add_argument("--vocab", type=int, default=4000, help="BPE vocabulary size")
    args = ap.parse_args(argv)

    import datasets

    from labkit.data.tokenize import quick_bpe_tokenizer

    datasets.disable_progress_bars()
    datasets.disable_caching()
    records = generate_records(args.n)
    t0 = time.perf_counter()
    corpus = [ALPACA_INPUT + ALPACA_NO_INPUT] + [r["instruction"] + "\n" + r["input"] + "\n" + r["output"]
                                                 for r in records[:5000]]
    tokenizer = quick_bpe_tokenizer(corpus, vocab_size=args.vocab)
    print(f"{args.n} records; BPE tokenizer (vocab {len(tokenizer)}) trained in {time.perf_counter() - t0:.1f}s; "
          f"cutoff_len {args.cutoff}; {psutil.cpu_count()} CPUs", flush=True)

    with PeakRSS() as mem_l:
        t0 = time.perf_counter()
        ds_l, rep = labkit_path(records, tokenizer, args.cutoff)
        t_l = time.perf_counter() - t0
    with PeakRSS() as mem_b:
        t0 = time.perf_counter()
        ds_b = baseline(records, tokenizer, args.cutoff)
        t_b = time.perf_counter() - t0

    # agreement: every record labkit kept must match the baseline row exactly (ids and labels)
    ids_l, lab_l = ds_l["input_ids"], ds_l["labels"]
    ids_b, lab_b = ds_b["input_ids"], ds_b["labels"]
    mismatches = sum(1 for r, k in enumerate(rep.kept_indices) if ids_l[r] != ids_b[k] or lab_l[r] != lab_b[k])
    dropped = args.n - rep.kept  # baseline keeps fully-masked samples; labkit drops them (nothing to train)
    agree = mismatches == 0 and all(all(x == -100 for x in lab_b[k]) for k in set(range(args.n)) - set(rep.kept_indices))

    rps_l, rps_b = args.n / t_l, args.n / t_b
    print(f"labkit batched : {t_l:7.2f}s  {rps_l:10.0f} records/s  peak +{mem_l.mb:7.1f} MB  ({rep.path}, "
          f"{rep.total_tokens} tokens, {rep.truncated} truncated, {dropped} dropped)")
    print(f"alpaca-lora map: {t_b:7.2f}s  {rps_b:10.0f} records/s  peak +{mem_b.mb:7.1f} MB  (per example, 2 calls)")
    print(f"outputs agree: {agree} ({mismatches} mismatching records of {rep.kept})")
    result = {"n": args.n, "cutoff_len": args.cutoff, "labkit_records_per_s": round(rps_l, 1),
              "baseline_records_per_s": round(rps_b, 1), "labkit_seconds": round(t_l, 3),
              "baseline_seconds": round(t_b, 3), "labkit_peak_mb": round(mem_l.mb, 1),
              "baseline_peak_mb": round(mem_b.mb, 1), "agree": agree, "mismatches": mismatches,
              "ratio": round(rps_l / rps_b, 2)}
    print(json.dumps(result))
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())

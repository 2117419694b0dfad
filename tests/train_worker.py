"""Test helper (not a test): train a random tiny LLaMA on a token-reversal task through labkit.train.sft.

Usage: python tests/train_worker.py '<TrainConfig JSON>'  (runs under python, torchrun or accelerate launch).
Everything is built in-process from fixed seeds, so every process and every run sees the same model and data.
"""

from __future__ import annotations

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

VOCAB, BOS, EOS, PAD, SEP = 48, 1, 2, 0, 3


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                      bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).eval()


def reversal_rows(n: int = 96, seed: int = 1) -> list[dict]:
    """prompt = BOS letters SEP (labels -100), answer = reversed letters EOS (trained)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        k = int(torch.randint(3, 7, (1,), generator=g))
        letters = (torch.randint(4, VOCAB, (k,), generator=g)).tolist()
        prompt = [BOS, *letters, SEP]
        answer = [*letters[::-1], EOS]
        rows.append({"input_ids": prompt + answer, "labels": [-100] * len(prompt) + answer,
                     "attention_mask": [1] * (len(prompt) + len(answer))})
    return rows


def pad_collator(features):
    n = max(len(f["input_ids"]) for f in features)
    out = {"input_ids": [], "labels": [], "attention_mask": []}
    for f in features:
        pad = n - len(f["input_ids"])
        out["input_ids"].append(f["input_ids"] + [PAD] * pad)
        out["labels"].append(f["labels"] + [-100] * pad)
        out["attention_mask"].append(f["attention_mask"] + [0] * pad)
    return {k: torch.tensor(v) for k, v in out.items()}


def datasets(n_train: int = 96, n_eval: int = 16):
    from datasets import Dataset

    rows = reversal_rows(n_train + n_eval)
    return Dataset.from_list(rows[:n_train]), Dataset.from_list(rows[n_train:])


def main(argv: list[str]) -> int:
    from labkit.train.config import TrainConfig
    from labkit.train.sft import run_training

    spec = json.loads(argv[0])
    n_train = spec.pop("_n_train", 96)
    cfg = TrainConfig.from_dict({"lora_target": "q_proj,k_proj,v_proj,o_proj", "packing": False,
                                 "disable_tqdm": True, **spec})
    train, ev = datasets(n_train)
    res = run_training(cfg, model=tiny_llama(), train_dataset=train,
                       eval_dataset=ev if cfg.eval_strategy != "no" else None, data_collator=pad_collator)
    if int(os.environ.get("RANK", "0")) == 0:
        print("RESULT " + json.dumps({"global_step": res.metrics["global_step"],
                                      "final_train_loss": res.metrics.get("final_train_loss")}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

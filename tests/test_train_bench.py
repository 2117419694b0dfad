"""bench/train_throughput.py --small: three setups per model, the same samples in every optimizer step, JSON last."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bench_util import load_bench

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_train_throughput_small_prints_ratio_json():
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "train_throughput.py"), "--small"], capture_output=True,
                       text=True, timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    last = json.loads(p.stdout.strip().splitlines()[-1])
    for key in ("ratio", "ratio_trl", "ratio_tiny", "ratio_trl_tiny", "mfu_mid", "hw_mfu_mid", "fp32_peak_gflops"):
        assert last[key] > 0, key
    assert last["same_steps"] is True  # every run trained the samples the HF Trainer draws, step by step
    for kind in ("tiny", "mid"):
        runs = last["runs"][kind]
        assert set(runs) == {"baseline", "labkit", "trl"}
        assert len({(r["steps"], r["samples"], r["trained_tokens"]) for r in runs.values()}) == 1
        assert all(r["same_steps_as_trainer"] for r in runs.values())
        assert runs["labkit"]["padding_share"] == 0 < runs["baseline"]["padding_share"]
        for r in runs.values():
            assert r["tokens_per_s"] > 0 and r["samples_per_s"] > 0 and r["peak_rss_mb"] > 0 and 0 < r["mfu"]
        # the same steps on the same samples from the same start: the held-out losses agree closely
        assert abs(runs["labkit"]["eval_loss_per_token"] - runs["baseline"]["eval_loss_per_token"]) < 0.02


def test_gpu_bench_packed_vs_padded_row_on_cpu():
    """bench/gpu_7b.py's packed-vs-padded row, on a tiny LLaMA on CPU: same samples, less padding, a speed-up."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    bench = load_bench("gpu_7b")
    lengths = bench.real_lengths(200, 512)
    assert max(lengths) <= 512 and min(lengths) >= 4 and 100 <= sorted(lengths)[100] <= 220
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, attn_implementation="sdpa"))
    row = bench.packed_vs_padded(model, torch.device("cpu"), 300, 256, 4, 3, None)
    assert row["packed_padding_share"] == 0 < row["padded_padding_share"]
    assert row["attention_backend"] == "loop" and row["padded_tokens_per_s"] > 0 and row["packed_tokens_per_s"] > 0
    assert model.config._attn_implementation == "sdpa"


def test_rounds_interleave_and_the_fastest_round_counts():
    tb = load_bench("train_throughput")
    order = tb.schedule(2)
    assert len(order) == 12 and order[0] == (0, "tiny", "baseline") and order[5] == (0, "mid", "trl")
    assert [x[1:] for x in order[6:]] == [x[1:] for x in order[:6]][::-1]  # round 2 runs in reverse order

    def r(seconds, tokens):
        return {"seconds": seconds, "tokens_per_s": tokens / seconds}

    per_round = {"mid": {"baseline": [r(10, 1000), r(8, 1000)], "labkit": [r(6, 1000), r(4, 1000)],
                         "trl": [r(9, 1000), r(12, 1000)]}}
    best, spread = tb.fastest(per_round)
    assert best["mid"]["baseline"]["seconds"] == 8 and best["mid"]["labkit"]["seconds"] == 4
    assert best["mid"]["trl"]["seconds"] == 9
    assert spread["ratio"] == [round(10 / 6, 3), 2.0]  # each round's own ratio, labkit / baseline
    assert spread["ratio_trl"] == [1.5, 3.0]
    assert spread["tokens_per_s"]["mid"]["labkit"] == [166.7, 250.0]

"""bench/generate_throughput.py: batched vs one-at-a-time generation, last line JSON with "ratio"."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "generate_throughput.py"


@pytest.mark.slow
def test_small_bench_prints_ratio_last(tmp_path):
    from evaluate_helpers import save_toy_pair

    base, _ = save_toy_pair(tmp_path)
    res = subprocess.run([sys.executable, str(BENCH), "--small", "--base_model", str(base), "--template", "labkit/roles"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    last = json.loads(res.stdout.strip().splitlines()[-1])
    assert last["ratio"] > 0 and last["prompts"] == 4 and last["max_new_tokens"] == 6
    assert last["batched_tokens_per_s"] > 0 and last["sequential_tokens_per_s"] > 0
    assert last["identical_outputs"] >= 3  # same greedy answers batched and alone (float noise may flip one)

"""bench/train_throughput.py --small: runs both setups and ends with the JSON summary line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_train_throughput_small_prints_ratio_json():
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "train_throughput.py"), "--small"], capture_output=True,
                       text=True, timeout=400, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    last = json.loads(p.stdout.strip().splitlines()[-1])
    assert last["ratio"] > 0 and last["samples"] == 64
    assert 0 <= last["labkit_padding_share"] < last["baseline_padding_share"] + 0.05
    assert last["baseline_tokens_per_s"] > 0 and last["fp32_peak_gflops"] > 0

"""bench/rehearsal_7b_width.py, reduced (narrow, small vocab): the official layouts go through labkit end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--hidden", "256", "--intermediate", "688", "--heads", "4", "--llama-vocab", "3000",
         "--baichuan-vocab", "4000", "--rows", "llama:base,baichuan:nf4"]


@pytest.mark.slow
def test_reduced_rehearsal_rows_are_ok(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "rehearsal_7b_width.py"), *SMALL,
                        "--workdir", str(tmp_path / "work")], capture_output=True, text=True, env=env, timeout=900)
    result = json.loads(p.stdout.strip().splitlines()[-1])
    rows = {(r["arch"], r["precision"]): r for r in result["rows"]}
    base = "bf16" if ("llama", "bf16") in rows else "fp32"  # bf16 only where the CPU computes it natively
    assert set(rows) == {("llama", base), ("baichuan", "nf4")}
    for key, row in rows.items():
        assert row["ok"], (key, row["status"], row["checks"], p.stderr[-3000:])
        assert row["checks"] == {k: True for k in row["checks"]} and len(row["checks"]) == 7
        assert 0.1 < row["peak_rss_gb"] < 4 and abs(row["estimate_gb"] / row["peak_rss_gb"] - 1) <= 0.25
        assert row["batch"][0] == 1 and 8 < row["batch"][1] <= 1024  # one seed sample per step, under the cutoff
        assert row["loss_first"] > 0 and row["loss_resumed"] > 0 and row["generated_tokens"] >= 1
        assert row["merge_max_abs_diff"] <= 1e-3
    assert result["ok"] and p.returncode == 0
    assert not (tmp_path / "work").exists()  # the work folder is removed unless --keep

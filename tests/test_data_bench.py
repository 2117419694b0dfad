"""bench/data_throughput.py runs small: outputs agree with alpaca-lora's per-example path; last line JSON with ratio."""

import json
import subprocess
import sys

from labkit.paths import project_root


def test_bench_small():
    r = subprocess.run([sys.executable, str(project_root() / "bench" / "data_throughput.py"), "--n", "600",
                        "--vocab", "600"], capture_output=True, text=True, timeout=300, cwd=project_root())
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["agree"] is True and result["mismatches"] == 0 and result["n"] == 600
    assert result["ratio"] > 0 and result["labkit_records_per_s"] > 0 and result["baseline_records_per_s"] > 0
    assert "labkit_peak_mb" in result and "baseline_peak_mb" in result

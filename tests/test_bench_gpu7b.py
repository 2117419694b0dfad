"""bench/gpu_7b.py: the 7B LoRA step benchmark, exercised on CPU with the tiny shape (and the 7B shapes on meta)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from bench_util import load_bench

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_7b.py"


@pytest.fixture(scope="module")
def bench():
    return load_bench("gpu_7b")


@pytest.fixture(scope="module")
def tiny_run():
    """One CPU run of the whole matrix (2 archs x fp32/int8/nf4 x 2 sequence lengths) on the tiny shape."""
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--tiny"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"bench failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    lines = proc.stdout.strip().splitlines()
    return lines, json.loads(lines[-1])


def test_last_line_is_json_with_ratio(tiny_run):
    _, result = tiny_run
    assert result["bench"] == "gpu_7b" and result["shape"] == "tiny"
    assert result["peak_dtype"] == "fp32" and result["peak_tflops"] > 0
    assert isinstance(result["ratio"], float) and 0 < result["ratio"] < 2, result["ratio"]
    headline = [r for r in result["results"] if (r["arch"], r["precision"], r["seq_len"]) == ("llama", "fp32", 64)]
    assert len(headline) == 1 and headline[0]["mfu"] == pytest.approx(result["ratio"], abs=1e-4)
    assert "MFU" in result["ratio_definition"]


def test_every_configuration_trained(tiny_run):
    _, result = tiny_run
    rows = result["results"]
    combos = {(r["arch"], r["precision"], r["seq_len"]) for r in rows}
    assert combos == {(a, p, s) for a in ("llama", "baichuan") for p in ("fp32", "int8", "nf4") for s in (32, 64)}
    for r in rows:
        assert r["status"] == "ok", r
        assert r["tokens_per_s"] > 0 and r["step_s"] > 0 and r["peak_mem_gib"] > 0
        assert r["batch"] * r["seq_len"] == 128  # tokens per step fixed across sequence lengths
        assert math.isfinite(r["loss"]) and 4 < r["loss"] < 9, r  # ~ln(vocab) for random weights
        assert 0 < r["mfu"] < 2 and r["model_tflops"] > 0
        # the quantized rows really ran on bitsandbytes layers: 7 linears per layer (LLaMA), 5 with W_pack
        expected_q = 0 if r["precision"] == "fp32" else 2 * (7 if r["arch"] == "llama" else 5)
        assert r["quantized_linears"] == expected_q, r
        base = next(b for b in rows if (b["arch"], b["seq_len"], b["precision"]) == (r["arch"], r["seq_len"], "fp32"))
        assert r["vs_base"] == pytest.approx(r["tokens_per_s"] / base["tokens_per_s"], rel=1e-3)


def test_lora_targets_follow_the_architecture(tiny_run):
    """LLaMA: q,k,v,o (4 x r*(h+h) per layer); Baichuan: the fused W_pack (r*(h+3h) per layer)."""
    _, result = tiny_run
    h, r, layers = 128, 8, 2
    by_arch = {row["arch"]: row for row in result["results"] if row["precision"] == "fp32"}
    assert by_arch["llama"]["lora_params"] == layers * 4 * r * (h + h)
    assert by_arch["baichuan"]["lora_params"] == layers * r * (h + 3 * h)
    linears = layers * (4 * h * h + 3 * h * 344)
    assert by_arch["llama"]["frozen_params"] == linears + 500 * h  # + lm_head (vocab 500)
    assert by_arch["baichuan"]["frozen_params"] == linears + 1000 * h  # + untied lm_head (vocab 1000)
    assert not any(row["notes"] for row in result["results"])  # native BaiChuanForCausalLM used


def test_table_is_printed(tiny_run):
    lines, result = tiny_run
    header = next(i for i, ln in enumerate(lines) if ln.startswith("| arch"))
    for col in ("precision", "seq", "tokens/s", "peak RSS GiB", "MFU", "vs base"):
        assert col in lines[header]
    body = lines[header + 2: header + 2 + len(result["results"])]
    assert all(ln.startswith("| ") for ln in body)
    assert [ln.split("|")[1].strip() for ln in body] == [r["arch"] for r in result["results"]]
    assert any(ln.startswith("device:") and "peak fp32 matmul" in ln for ln in lines)


def test_model_flops_formula(bench):
    # tokens * (4*frozen + 6*lora + 12*L*h*T) = 2 * (40 + 12 + 96)
    assert bench.model_flops_per_step(frozen=10, lora=2, layers=1, hidden=4, batch=1, seq=2) == 296
    # a 7B step of 2048 tokens at T=1024 is ~5.7e13 FLOPs (dominated by 4 * 6.6e9 frozen linear weights)
    assert 5e13 < bench.model_flops_per_step(6.6e9, 4e6, 32, 4096, 2, 1024) < 6.5e13


@pytest.mark.parametrize("arch,vocab", [("llama", 32000), ("baichuan", 64000)])
def test_7b_shapes_on_meta(bench, arch, vocab):
    """The real 7B configuration, built on the meta device (no memory): parameter counts of Linly / Baichuan-7B."""
    import torch

    model, note = bench.build_model(arch, "7b", 1024, "meta", torch.bfloat16)
    assert note == ""
    frozen, lora = bench.count_params(model)
    h, i, layers = 4096, 11008, 32
    assert frozen == layers * (4 * h * h + 3 * h * i) + vocab * h  # 6.61e9 (LLaMA) / 6.74e9 (Baichuan)
    total = sum(p.numel() for p in model.parameters())
    assert abs(total - {"llama": 6.738e9, "baichuan": 7.000e9}[arch]) < 0.01e9, total
    if arch == "baichuan":
        assert type(model).__name__ == "BaiChuanForCausalLM"
        assert tuple(model.model.layers[0].self_attn.W_pack.weight.shape) == (3 * h, h)


def test_without_gpu(bench, capsys):
    """No GPU: the default run is skipped with a JSON line (`make bench` stays green); explicit requests fail."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert bench.main([]) == 0
    out, err = capsys.readouterr()
    assert "no CUDA GPU" in err
    assert json.loads(out.strip().splitlines()[-1]) == {"bench": "gpu_7b", "skipped": "no CUDA GPU", "ratio": None}
    assert bench.main(["--device", "cuda"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
    assert bench.main(["--device", "cpu"]) == 2  # the 7B shape on CPU is refused; --tiny is the CPU path
    assert "--tiny" in capsys.readouterr().err

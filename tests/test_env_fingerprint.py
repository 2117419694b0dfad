"""labkit.env.fingerprint and `labkit env`: keys present, a real bitsandbytes probe, JSON output."""

import json

from labkit.env import fingerprint, fingerprint_table, quantization_probe
from labkit.env.cli import main as env_main

KEYS = {"python", "os", "cpu", "ram_gb", "torch", "cuda", "cudnn", "gpus", "bf16", "bitsandbytes", "transformers",
        "peft", "datasets", "accelerate", "tokenizers", "papermill", "packages"}


def test_fingerprint_keys_and_probe():
    fp = fingerprint()
    assert KEYS <= set(fp), KEYS - set(fp)
    assert fp["python"].startswith("3.") and fp["ram_gb"] > 0 and isinstance(fp["gpus"], list)
    assert set(fp["bf16"]) == {"cuda", "cpu_accelerated"}
    bnb = fp["bitsandbytes"]
    assert bnb["version"] and {"int8", "nf4"} <= set(bnb)
    for kind in ("int8", "nf4"):
        assert isinstance(bnb[kind]["ok"], bool)
        if bnb[kind]["ok"]:
            assert 0 <= bnb[kind]["rel_error"] < 0.3
        else:
            assert bnb[kind]["error"]
    table = fingerprint_table(fp)
    assert "bitsandbytes.int8.ok" in table.index and "python" in table.index
    json.dumps(fp)  # plain data


def test_probe_on_cpu_really_quantizes():
    res = quantization_probe("cpu")
    # bitsandbytes 0.50 runs int8 and nf4 on CPU: the weights are stored quantized and the error is small.
    assert res["int8"]["ok"] and res["int8"]["weight_dtype"] == "torch.int8" and res["int8"]["rel_error"] < 0.05
    assert res["nf4"]["ok"] and res["nf4"]["weight_dtype"] == "torch.uint8" and 0 < res["nf4"]["rel_error"] < 0.3


def test_probe_reports_failure_instead_of_raising():
    res = quantization_probe("no_such_device")
    assert res["int8"]["ok"] is False and res["int8"]["error"]


def test_cheap_fingerprint_does_not_probe():
    fp = fingerprint(probe_quantization=False, torch_details=False)
    assert fp["bitsandbytes"]["probed"] is False and fp["torch"]


def test_env_cli_json_and_text(capsys):
    assert env_main(["--json", "--no-probe"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"fingerprint", "pins", "findings"}
    assert any(f["id"] == "transformers-v5-load-in-8bit-kwarg" for f in data["findings"])
    assert env_main(["--no-probe"]) == 0
    out = capsys.readouterr().out
    assert "Pins (requirements.txt)" in out and "Known issues" in out and "remedy:" in out

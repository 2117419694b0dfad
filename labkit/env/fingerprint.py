"""What machine and which versions: Python, OS, CPU/RAM, torch/CUDA, GPUs, bf16, a real bitsandbytes probe."""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import logging
import os
import platform
import sys
from typing import Any

# Packages whose versions the fingerprint always reports (import names are not needed: metadata only).
FINGERPRINT_PACKAGES = (
    "torch", "transformers", "peft", "datasets", "accelerate", "tokenizers", "bitsandbytes", "safetensors",
    "sentencepiece", "papermill", "nbconvert", "nbclient", "ipykernel", "numpy", "pandas", "matplotlib",
)


# Versions also reported as top-level keys of the fingerprint.
HEADLINE_PACKAGES = ("transformers", "peft", "datasets", "accelerate", "tokenizers", "papermill")


def package_versions(names: tuple[str, ...] | list[str] = FINGERPRINT_PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (None when missing), read from metadata without importing."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _ram_gb() -> float | None:
    try:
        import psutil

        return round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:  # psutil missing or unsupported platform
        try:
            return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
        except (ValueError, OSError, AttributeError):
            return None


def _base() -> dict[str, Any]:
    flags = _cpu_flags()
    return {
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "os": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_bf16_instructions": sorted(flags & {"avx512_bf16", "amx_bf16"}),
        "ram_gb": _ram_gb(),
    }


def _torch_info() -> dict[str, Any]:
    """torch, CUDA/cuDNN versions, GPUs (name, memory, capability) and bf16 support."""
    try:
        import torch
    except Exception as err:  # pragma: no cover - torch is pinned
        return {"torch": None, "torch_error": f"{type(err).__name__}: {err}"}
    info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": None}
    cuda = torch.cuda.is_available()
    if cuda and torch.backends.cudnn.is_available():
        info["cudnn"] = torch.backends.cudnn.version()
    gpus = []
    if cuda:
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append({
                "index": i,
                "name": p.name,
                "memory_gb": round(p.total_memory / 2**30, 1),
                "capability": f"{p.major}.{p.minor}",
            })
    info["gpus"] = gpus
    info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    cpu_bf16_fast = bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})
    info["bf16"] = {
        "cuda": bool(cuda and torch.cuda.is_bf16_supported()),
        # bf16 always *works* on CPU in torch; it is only fast with AVX512-BF16 / AMX.
        "cpu_accelerated": cpu_bf16_fast,
    }
    return info


@contextlib.contextmanager
def _quiet_bnb_import():
    """bitsandbytes logs a harmless 'Failed to load CPU gemm_4bit_forward ... kernels' warning on import."""
    log = logging.getLogger("bitsandbytes.backends.cpu.ops")
    old = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(old)


# Relative error of the quantized matmul vs fp32 above which the kernel "runs but is wrong" (gibberish).
PROBE_TOLERANCE = {"int8": 0.05, "nf4": 0.3}


def quantization_probe(device: str | None = None) -> dict[str, Any]:
    """Run a tiny real int8 (Linear8bitLt) and nf4 (Linear4bit) matmul and compare with fp32.

    Returns {"version", "device", "int8": {"ok", "rel_error"|"error"}, "nf4": {...}}; never raises.
    """
    out: dict[str, Any] = {"version": package_versions(("bitsandbytes",))["bitsandbytes"]}
    try:
        import torch

        with _quiet_bnb_import():
            import bitsandbytes as bnb
    except Exception as err:
        out["error"] = f"{type(err).__name__}: {err}"
        out["int8"] = out["nf4"] = {"ok": False, "error": "bitsandbytes not importable"}
        return out
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    out["device"] = device
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 64, generator=gen)  # (B, in)
    ref_lin = torch.nn.Linear(64, 32, bias=False)
    with torch.no_grad():
        ref_lin.weight.copy_(torch.randn(32, 64, generator=gen) * 0.1)
        ref = x @ ref_lin.weight.T  # (B, out)
    makers = {
        "int8": lambda: bnb.nn.Linear8bitLt(64, 32, bias=False, has_fp16_weights=False, threshold=0.0),
        "nf4": lambda: bnb.nn.Linear4bit(64, 32, bias=False, quant_type="nf4", compute_dtype=torch.float32),
    }
    for kind, make in makers.items():
        try:
            layer = make()
            layer.load_state_dict(ref_lin.state_dict())
            layer = layer.to(device)  # quantizes the weight
            with torch.no_grad():
                y = layer(x.to(device)).float().cpu()
            rel = float((y - ref).norm() / ref.norm())
            ok = bool(torch.isfinite(y).all()) and rel < PROBE_TOLERANCE[kind]
            res: dict[str, Any] = {"ok": ok, "rel_error": round(rel, 4), "weight_dtype": str(layer.weight.dtype)}
            if not ok:
                res["error"] = f"relative error {rel:.3g} above {PROBE_TOLERANCE[kind]} (wrong results)"
            out[kind] = res
        except Exception as err:  # the probe reports, it never fails the caller
            out[kind] = {"ok": False, "error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
    return out


def fingerprint(probe_quantization: bool = True, torch_details: bool = True) -> dict[str, Any]:
    """The environment fingerprint recorded in every run's manifest.

    `torch_details=False` gives a cheap version (no torch import, no probe) for the runner.
    """
    fp = _base()
    if torch_details:
        fp.update(_torch_info())
    else:
        fp["torch"] = package_versions(("torch",))["torch"]
    if probe_quantization and torch_details:
        fp["bitsandbytes"] = quantization_probe()
    else:
        fp["bitsandbytes"] = {"version": package_versions(("bitsandbytes",))["bitsandbytes"], "probed": False}
    packages = package_versions()
    for name in HEADLINE_PACKAGES:
        fp[name] = packages.get(name)
    fp["packages"] = packages
    return fp


def fingerprint_table(fp: dict[str, Any]):
    """pandas.DataFrame (key, value) of a fingerprint, nested values as dotted keys, lists joined."""
    import pandas as pd

    rows: list[tuple[str, str]] = []

    def add(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                add(f"{prefix}.{k}", v)
        elif isinstance(value, list):
            if value and all(isinstance(v, dict) for v in value):
                for i, v in enumerate(value):
                    add(f"{prefix}[{i}]", v)
            else:
                rows.append((prefix, ", ".join(map(str, value)) or "none"))
        else:
            rows.append((prefix, "" if value is None else str(value)))

    for key, value in fp.items():
        if key != "packages":
            add(key, value)
    return pd.DataFrame(rows, columns=["key", "value"]).set_index("key")

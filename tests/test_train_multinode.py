"""Multi-node LoRA training: `torchrun --nnodes 2 --nproc_per_node 1` as two node agents on localhost (c10d rendezvous).

Each "node" is its own torchrun process with its own working folder, so a relative --output_dir lands on a
different disk path per node, as on machines without a shared file system: everything but each rank's RNG
file must be written by rank 0 only. The adapter must equal a single process with the same global batch, and a
run resumed from rank 0's checkpoint must end where the uninterrupted run ended.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from safetensors.torch import load_file

from labkit.train import checkpoints as ck

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORKER = ROOT / "tests" / "train_worker.py"
STEPS, SAVE = 12, 6


def _spec(output_dir: str, batch: int, **over) -> str:
    spec = {"output_dir": output_dir, "max_steps": STEPS, "save_steps": SAVE, "logging_steps": 4,
            "learning_rate": 3e-3, "lora_dropout": 0.0, "per_device_train_batch_size": batch,
            "gradient_accumulation_steps": 2, **over}
    return json.dumps(spec)


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "GLOO_SOCKET_IFNAME": "lo"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_nodes(cwds: list[Path], spec: str) -> list[subprocess.CompletedProcess]:
    """Start two torchrun node agents (1 process each) that meet at a c10d rendezvous on 127.0.0.1."""
    port, run_id = _free_port(), uuid.uuid4().hex[:8]
    cmd = [str(BIN / "torchrun"), "--nnodes", "2", "--nproc_per_node", "1", "--rdzv_backend", "c10d",
           "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", run_id, "--local_addr", "127.0.0.1",
           "--max_restarts", "0", str(WORKER), spec]
    for cwd in cwds:
        cwd.mkdir(parents=True, exist_ok=True)
    procs = [subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for cwd in cwds]
    out = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=420)
            out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return out


def _rank0(runs: list[subprocess.CompletedProcess]) -> int:
    """Index of the node whose process got global rank 0 (the one that prints RESULT)."""
    printed = [i for i, r in enumerate(runs) if "RESULT" in r.stdout]
    assert len(printed) == 1, [r.stdout[-500:] for r in runs]
    return printed[0]


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.slow
def test_two_nodes_match_one_process_write_from_rank0_and_resume(tmp_path):
    single = subprocess.run([sys.executable, str(WORKER), _spec(str(tmp_path / "one"), 8)], env=_env(), cwd=ROOT,
                            capture_output=True, text=True, timeout=420)
    assert single.returncode == 0, single.stderr[-3000:]
    ref = load_file(str(tmp_path / "one" / "adapter_model.safetensors"))

    # two nodes, no shared disk: each node's relative "out" is its own folder
    nodes = [tmp_path / "node_a", tmp_path / "node_b"]
    runs = _two_nodes(nodes, _spec("out", 4))
    for r in runs:
        assert r.returncode == 0, r.stderr[-3000:]
    main, other = nodes[_rank0(runs)] / "out", nodes[1 - _rank0(runs)] / "out"
    got = load_file(str(main / "adapter_model.safetensors"))
    scale = max(float(ref[k].abs().max()) for k in ref if "lora_B" in k)
    assert scale > 1e-3 and _max_diff(ref, got) < 1e-6, (_max_diff(ref, got), scale)

    # rank 0 wrote the adapter, state, metrics and every checkpoint with its completion marker ...
    for name in ("adapter_model.safetensors", "adapter_config.json", "trainer_state.json", "train_metrics.json"):
        assert (main / name).is_file(), name
    for step in (SAVE, STEPS):
        marker = json.loads((main / f"checkpoint-{step}" / ck.MARKER).read_text())
        assert marker["world_size"] == 2 and ck.is_complete(main / f"checkpoint-{step}")
    # ... and the other node wrote nothing but its own RNG state
    written = sorted(str(p.relative_to(other)) for p in other.rglob("*") if p.is_file()) if other.exists() else []
    assert all(Path(w).name == "rng_state_1.pth" for w in written), written

    # resume from rank 0's checkpoint-6 on both nodes (now on a shared path) and finish the 12 steps
    resumed = tmp_path / "resumed"
    runs = _two_nodes([tmp_path / "node_c", tmp_path / "node_d"],
                      _spec(str(resumed), 4, resume_from_checkpoint=str(main / f"checkpoint-{SAVE}")))
    for r in runs:
        assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(runs[_rank0(runs)].stdout.split("RESULT ", 1)[1].splitlines()[0])
    assert result["global_step"] == STEPS
    metrics = json.loads((resumed / "train_metrics.json").read_text())
    assert metrics["resumed_from"] == str(main / f"checkpoint-{SAVE}") and metrics["global_step"] == STEPS
    again = load_file(str(resumed / "adapter_model.safetensors"))
    assert _max_diff(got, again) < 1e-6

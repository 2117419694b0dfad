"""`labkit run` as a reader types it, in a subprocess, into a given reports folder; returns the run folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# seconds for `labkit run` (the whole tiny workbook: ~2 min on 2 idle cores); LABKIT_BROWSER_RUN_TIMEOUT overrides
RUN_TIMEOUT_S = {"00": 300, "all": int(os.environ.get("LABKIT_BROWSER_RUN_TIMEOUT", "900"))}


def run_workbook(reports: Path, only: str | None = None) -> Path:
    """`labkit run [--only ...]` into `reports` (LABKIT_REPORTS); the run folder it prints last, checked."""
    env = dict(os.environ, LABKIT_REPORTS=str(reports))
    # conftest sets MPLBACKEND=Agg for this process; inherited by the kernels it would silently drop every
    # plt.show() figure from the reports. A reader's `labkit run` has no MPLBACKEND: kernels use the inline backend.
    env.pop("MPLBACKEND", None)
    cmd = [sys.executable, "-m", "labkit", "run"] + (["--only", only] if only else [])
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S["00" if only else "all"])
    tail = (proc.stdout[-3000:] + "\n" + proc.stderr[-3000:]).strip()
    assert proc.returncode == 0, f"`{' '.join(cmd[2:])}` failed ({proc.returncode}):\n{tail}"
    lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()]
    assert lines, f"`labkit run` printed nothing:\n{tail}"
    run = Path(lines[-1])
    run = run if run.is_absolute() else (ROOT / run)
    assert run.is_dir(), f"last line of `labkit run` is not a run folder: {lines[-1]!r}\n{tail}"
    return run.resolve()

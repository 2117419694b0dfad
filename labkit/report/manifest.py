"""reports/<run-id>/manifest.json: what ran, with what, on what, and what it measured."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from labkit.errors import LabkitError

MANIFEST = "manifest.json"


def git_info(folder: str | Path) -> dict[str, Any]:
    """{"commit", "dirty", "branch"} of the repository holding `folder`; nulls outside git."""

    def git(*args: str) -> str | None:
        try:
            res = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return res.stdout.strip() if res.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None, "branch": None}
    status = git("status", "--porcelain")
    return {"commit": commit, "dirty": bool(status), "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "changed_files": len(status.splitlines()) if status else 0}


def write_manifest(run_dir: str | Path, manifest: dict[str, Any]) -> Path:
    path = Path(run_dir) / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    """The manifest of a run folder (or of the manifest file itself)."""
    path = Path(run_dir)
    if path.is_dir():
        path = path / MANIFEST
    if not path.is_file():
        raise LabkitError(f"{path}: no manifest.json (is this a `labkit run` folder under reports/?)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise LabkitError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or "notebooks" not in data:
        raise LabkitError(f"{path}: not a labkit run manifest (no 'notebooks')")
    return data

"""reports/<run-id>/manifest.json: what ran, with what, on what, and what it measured."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from labkit.errors import LabkitError

MANIFEST = "manifest.json"
# What "the code" of a run is, for `--rerun`'s account of what changed between two commits.
CODE_PATHS = ("notebooks", "labkit", "profiles", "data")
MAX_CHANGED = 50


def _git(folder: str | Path, *args: str) -> str | None:
    """stdout of `git -C folder ARGS` (trailing blanks stripped), or None when git is missing or the command fails."""
    try:
        res = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.rstrip() if res.returncode == 0 else None


def git_info(folder: str | Path) -> dict[str, Any]:
    """{"commit", "dirty", "branch", "changed_files", "changed"} of the repository holding `folder` (`changed`:
    the first uncommitted paths, relative to the repository); nulls outside git."""
    commit = _git(folder, "rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None, "branch": None}
    status = _git(folder, "status", "--porcelain") or ""
    changed = [line[3:] for line in status.splitlines()]
    return {"commit": commit, "dirty": bool(changed), "branch": _git(folder, "rev-parse", "--abbrev-ref", "HEAD"),
            "changed_files": len(changed), "changed": changed[:MAX_CHANGED]}


def changed_between(folder: str | Path, old: str, new: str, paths: tuple[str, ...] = CODE_PATHS) -> list[str] | None:
    """Files under `paths` that differ between two commits of the repository holding `folder`; None when
    `old` is not known there (another clone that never fetched it)."""
    if _git(folder, "cat-file", "-e", f"{old}^{{commit}}") is None:
        return None
    out = _git(folder, "diff", "--name-only", old, new, "--", *paths)
    return None if out is None else [line for line in out.splitlines() if line]


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

"""Where things live: project root, bundled data, notebooks, profiles, reports, caches, the current run folder."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def project_root() -> Path:
    """The repository root (folder holding notebooks/ and data/); LABKIT_ROOT overrides."""
    env = os.environ.get("LABKIT_ROOT")
    if env:
        return Path(env).resolve()
    return PACKAGE_DIR.parent


def data_dir() -> Path:
    """Bundled datasets and dataset_info.json."""
    return project_root() / "data"


def notebooks_dir() -> Path:
    return project_root() / "notebooks"


def profiles_dir() -> Path:
    return project_root() / "profiles"


def reports_dir() -> Path:
    """Where `labkit run` writes run folders; LABKIT_REPORTS overrides."""
    env = os.environ.get("LABKIT_REPORTS")
    return Path(env).resolve() if env else project_root() / "reports"


def cache_dir() -> Path:
    """Generated artefacts (tiny models, tokenizer); LABKIT_CACHE overrides. Gitignored."""
    env = os.environ.get("LABKIT_CACHE")
    path = Path(env).resolve() if env else project_root() / ".cache" / "labkit"
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_dir() -> Path:
    """The folder of the current `labkit run` (LABKIT_RUN_DIR, set by the runner), else runs/interactive/."""
    env = os.environ.get("LABKIT_RUN_DIR")
    path = Path(env).resolve() if env else project_root() / "runs" / "interactive"
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_output(value: str | os.PathLike | None, default_name: str) -> Path:
    """A notebook output folder: `value` if given (relative to the cwd), else <run folder>/<default_name>."""
    if value:
        return Path(value).expanduser().resolve()
    return run_dir() / default_name

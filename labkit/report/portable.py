"""Paths in a manifest that survive a copy: `<run>/...` inside the run folder, `<root>/...` inside the clone.

Absolute paths are kept only for things outside both (a user's 7B folder, the system Python); the manifest
lists them under `paths.outside`, so a reader sees at once what a colleague must provide themselves.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

RUN = "<run>"
ROOT = "<root>"
LEGEND = {RUN: "this run folder", ROOT: "the project root (notebooks/, data/, profiles/) of the clone that ran it"}


def _bases(folder: str | Path | None) -> list[str]:
    if not folder:
        return []
    raw = os.path.normpath(os.path.abspath(str(folder)))
    real = os.path.realpath(raw)
    return [raw] if raw == real else [raw, real]


def looks_like_path(value: Any) -> bool:
    """An absolute filesystem path written as a whole string (not a message that mentions one)."""
    return (isinstance(value, str) and os.path.isabs(value) and len(value) < 1024 and "\n" not in value
            and not value.startswith("//"))


def _relative(path: str, bases: list[str]) -> str | None:
    norm = os.path.normpath(path)
    for base in bases:
        if norm == base:
            return ""
        if norm.startswith(base.rstrip(os.sep) + os.sep):
            return norm[len(base.rstrip(os.sep)) + 1:].replace(os.sep, "/")
    return None


def to_portable(value: Any, run_dir: str | Path | None, root: str | Path | None,
                outside: dict[str, str] | None = None, where: str = "") -> Any:
    """`value` with absolute paths rewritten as `<run>/rel` or `<root>/rel` (run folder first, it is the more
    specific); other absolute paths stay and are added to `outside` as {location: path}."""
    if isinstance(value, dict):
        return {k: to_portable(v, run_dir, root, outside, f"{where}.{k}" if where else str(k))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_portable(v, run_dir, root, outside, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, str) and not looks_like_path(value):
        key, eq, rest = value.partition("=")  # a command-line `-p name=/abs/path`
        if eq and key.isidentifier() and looks_like_path(rest):
            return f"{key}={to_portable(rest, run_dir, root, outside, where)}"
        return value
    if not looks_like_path(value):
        return value
    for token, folder in ((RUN, run_dir), (ROOT, root)):
        rel = _relative(value, _bases(folder))
        if rel is not None:
            return f"{token}/{rel}" if rel else token
    if outside is not None:
        outside[where] = value
    return value


def resolve(value: Any, run_dir: str | Path | None, root: str | Path | None) -> Any:
    """The inverse: `<run>/...` and `<root>/...` back to absolute paths under the given folders."""
    if isinstance(value, dict):
        return {k: resolve(v, run_dir, root) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, run_dir, root) for v in value]
    if not isinstance(value, str):
        return value
    for token, folder in ((RUN, run_dir), (ROOT, root)):
        if folder is not None and (value == token or value.startswith(token + "/")):
            rest = value[len(token) + 1:]
            return str(Path(folder) / rest) if rest else str(folder)
    return value

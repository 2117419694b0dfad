"""`record(**metrics)`: notebooks record metrics (deep-merged JSON) for the run manifest; flatten for tables."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterator, Mapping

from labkit.errors import LabkitError

METRICS_DIRNAME = "metrics"


def _plain(value: Any, key: str) -> Any:
    """JSON-ready plain data: numpy / torch scalars and 0-d arrays become Python numbers, Paths strings."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{key}[{i}]") for i, v in enumerate(value)]
    item = getattr(value, "item", None)  # numpy scalar, 0-d array, 1-element tensor
    size = getattr(value, "size", None)
    numel = getattr(value, "numel", None)
    n = numel() if callable(numel) else (size if isinstance(size, int) else None)
    if callable(item) and n == 1:
        return _plain(item(), key)
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return _plain(tolist(), key)
    raise LabkitError(f"record(): metric {key!r} has type {type(value).__name__}; record plain data "
                      "(numbers, strings, booleans, lists, dicts)")


def deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Merge `update` into `base` (in place): dicts merge recursively, anything else is replaced."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def metrics_path(run_dir: str | Path | None = None, notebook: str | None = None) -> Path:
    """<run_dir>/metrics/<notebook>.json for the current run (LABKIT_RUN_DIR, LABKIT_NOTEBOOK)."""
    from labkit.paths import run_dir as current_run_dir

    folder = Path(run_dir) if run_dir else current_run_dir()
    name = notebook or os.environ.get("LABKIT_NOTEBOOK") or "interactive"
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("."):
        raise LabkitError(f"record(): notebook name {name!r} is not a plain file name")
    return folder / METRICS_DIRNAME / f"{name}.json"


def read_metrics(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise LabkitError(f"{path}: not valid JSON ({err})") from None
    return data if isinstance(data, dict) else {}


def record(**metrics: Any) -> dict[str, Any]:
    """Record metrics of the running notebook; nested dicts deep-merge with earlier calls.

    Lands in `<run_dir>/metrics/<LABKIT_NOTEBOOK>.json`; `labkit run` folds it into manifest.json under the
    notebook's name. Outside a run it writes under runs/interactive/. Returns the merged metrics.
    """
    path = metrics_path()
    merged = deep_merge(read_metrics(path), {k: _plain(v, k) for k, v in metrics.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(merged, indent=2, ensure_ascii=False, allow_nan=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return merged


def flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """('a.b.c', leaf) pairs of nested dicts; lists are leaves."""
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            yield from flatten(value, name)
        else:
            yield name, value


def same_value(a: Any, b: Any, rtol: float = 0.0) -> bool:
    """Equality for metric values (NaN equals NaN; floats within a relative tolerance when rtol > 0)."""
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) and math.isnan(b):
            return True
        if rtol:
            return math.isclose(a, b, rel_tol=rtol, abs_tol=0.0)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and rtol:
        return math.isclose(float(a), float(b), rel_tol=rtol)
    return a == b

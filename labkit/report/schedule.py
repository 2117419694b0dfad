"""Which notebooks of a run may run side by side (their `labkit.needs` metadata) and how many run at once.

A notebook says what it reads from earlier notebooks of the same run in its metadata::

    "metadata": {"labkit": {"needs": ["02_linly_lora", "03_baichuan_wpack"]}}

`needs: []` means it reads nothing another notebook writes (it may start at once). A notebook without the key
needs every earlier notebook, so a workbook that says nothing runs strictly in order, as before. Only
notebooks of the run count: with `--only 04` the adapters come from its parameters or an earlier run.

`auto_jobs` runs two notebooks at once only where that pays and is safe: at least two CPUs, notebooks that
can overlap, and the tiny default models (every `*_model` parameter empty). Two 7B trainings side by side
would need twice the GPU memory, so a run naming a base model folder goes one notebook at a time unless
`--jobs` says otherwise. Each kernel then gets its share of the threads (`threads // jobs`): on 2 cores two
1-thread kernels train the tiny models ~1.6x faster together than one after the other at 2 threads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from labkit.errors import LabkitError

NEEDS_KEY = "needs"


def declared_needs(path: Path) -> list[str] | None:
    """The notebook's `metadata.labkit.needs` (stems), or None when it declares nothing."""
    try:
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise LabkitError(f"{path}: cannot read notebook ({err})") from None
    meta = (nb.get("metadata") or {}).get("labkit") or {}
    if NEEDS_KEY not in meta:
        return None
    needs = meta[NEEDS_KEY]
    if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
        raise LabkitError(f"{path}: metadata labkit.needs must be a list of notebook names, got {needs!r}")
    return needs


def dependencies(selected: list[Path], workbook: list[Path]) -> dict[str, set[str]]:
    """stem -> the selected notebooks it must wait for. Undeclared: all earlier ones; declared: those named."""
    known = {p.stem for p in workbook}
    order = [p.stem for p in selected]
    deps: dict[str, set[str]] = {}
    for i, path in enumerate(selected):
        needs = declared_needs(path)
        if needs is None:
            deps[path.stem] = set(order[:i])
            continue
        unknown = [n for n in needs if n not in known]
        if unknown:
            raise LabkitError(f"{path}: metadata labkit.needs names {', '.join(map(repr, unknown))}, not a notebook "
                              f"of this workbook ({', '.join(sorted(known))})")
        later = [n for n in needs if n in order[i:]]
        if later:
            raise LabkitError(f"{path}: metadata labkit.needs names {', '.join(map(repr, later))}, which runs "
                              "later (notebooks run in number order; renumber them)")
        deps[path.stem] = {n for n in needs if n in order[:i]}
    return deps


def can_overlap(deps: dict[str, set[str]]) -> bool:
    """True when some notebook may start before all earlier ones have finished."""
    order = list(deps)
    return any(deps[stem] != set(order[:i]) for i, stem in enumerate(order))


def names_a_model(effective: dict[str, dict[str, Any]]) -> bool:
    """True when a notebook's `*_model` parameter names a base model folder (not the tiny default)."""
    return any(name.endswith("_model") and isinstance(value, str) and value.strip()
               for params in effective.values() for name, value in params.items())


def auto_jobs(deps: dict[str, set[str]], effective: dict[str, dict[str, Any]], cpus: int) -> int:
    """Notebooks at once when `--jobs` is not given: 2 for the tiny default on >= 2 CPUs, else 1."""
    if cpus < 2 or not can_overlap(deps) or names_a_model(effective):
        return 1
    return 2


def ready(deps: dict[str, set[str]], done: set[str], started: set[str]) -> list[str]:
    """Notebooks not started whose needs have all finished, in workbook order."""
    return [stem for stem, needs in deps.items() if stem not in started and needs <= done]

"""Where a run's time went: per-cell seconds of an executed notebook, and the runner's closing time table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def cell_timings(ipynb: Path) -> tuple[float, list[dict[str, Any]]]:
    """(seconds in cells, the slowest cells [{"cell": In [n], "seconds", "source": first line}]) of an executed
    notebook, from papermill's per-cell metadata."""
    try:
        nb = json.loads(ipynb.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return 0.0, []
    cells = []
    for cell in nb.get("cells", []):
        pm = cell.get("metadata", {}).get("papermill") or {}
        if cell.get("cell_type") == "code" and pm.get("duration") is not None:
            src = cell.get("source", "")
            src = "".join(src) if isinstance(src, list) else src
            first = next((ln for ln in src.splitlines() if ln.strip()), "")
            cells.append({"cell": cell.get("execution_count"), "seconds": round(float(pm["duration"]), 2),
                          "source": first[:60]})
    total = sum(c["seconds"] for c in cells)
    return total, sorted(cells, key=lambda c: -c["seconds"])[:3]


def time_table(manifest: dict[str, Any]) -> str:
    """Per-notebook seconds: cells, overhead (kernel start, papermill), HTML export, total."""
    lines = [f"{'notebook':<24} {'status':<11} {'cells':>7} {'overhead':>9} {'html':>6} {'total':>7}"]
    tot = {"cells_s": 0.0, "overhead_s": 0.0, "html_s": 0.0, "duration_s": 0.0}
    for stem, info in manifest["notebooks"].items():
        if info.get("status") in ("pending", "skipped"):
            lines.append(f"{stem:<24} {info.get('status'):<11}")
            continue
        vals = {k: float(info.get(k) or 0.0) for k in tot}
        for k in tot:
            tot[k] += vals[k]
        lines.append(f"{stem:<24} {info.get('status', ''):<11} {vals['cells_s']:>7.1f} {vals['overhead_s']:>9.1f} "
                     f"{vals['html_s']:>6.1f} {vals['duration_s']:>7.1f}")
    lines.append(f"{'total (s)':<24} {'':<11} {tot['cells_s']:>7.1f} {tot['overhead_s']:>9.1f} {tot['html_s']:>6.1f} "
                 f"{tot['duration_s']:>7.1f}")
    wall = manifest.get("duration_s")
    if isinstance(wall, (int, float)):
        side = f"{manifest['jobs']} notebooks side by side, " if (manifest.get("jobs") or 1) > 1 else ""
        lines.append(f"run wall time {wall:.1f} s ({side}includes validation, set-up and index)")
    slow = [(info["slowest_cells"][0], stem) for stem, info in manifest["notebooks"].items()
            if info.get("slowest_cells")]
    if slow:
        lines.append("slowest cell of each notebook:")
        for cell, stem in slow:
            lines.append(f"  {stem:<22} In [{cell['cell']}] {cell['seconds']:>7.1f} s  {cell['source']}")
    return "\n".join(lines)

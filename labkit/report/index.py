"""reports/index.html: one row per run (time, profile, status, duration, key metrics, notebook links)."""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path
from typing import Any

from labkit.report.manifest import MANIFEST
from labkit.report.metrics import flatten

# Leaf names shown as headline numbers in the index (the rest sit in a collapsible list).
HEADLINE = re.compile(r"(exact|rouge|bleu|chrf|accuracy|(^|_)acc$|f1|perplexity|ppl|loss|refusal|win_rate|score|max_abs_diff)",
                      re.IGNORECASE)
# Metrics that describe the machine rather than a result are left out of the index's metric lists.
SKIP_PREFIXES = ("fingerprint", "environment", "env.")
MAX_HEADLINE = 14
# Notebooks whose numbers lead the headline (the evaluation compares runs best).
HEADLINE_FIRST = ("04_",)

_CSS = """
body { font-family: -apple-system, "Segoe UI", "Noto Sans SC", "Microsoft YaHei", sans-serif; margin: 24px; color: #222; }
h1 { font-size: 1.5em; } table { border-collapse: collapse; width: 100%; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 6px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } tr.run-failed td, tr.run-interrupted td { background: #fff0f0; } tr.run-running td { background: #fffbe6; }
.status { font-weight: bold; } .ok { color: #137333; } .failed, .interrupted { color: #c5221f; } .running { color: #b06000; }
.metrics span { display: inline-block; margin: 0 10px 2px 0; white-space: nowrap; }
.metrics b { font-weight: 600; } details summary { cursor: pointer; color: #555; }
code { font-size: 0.95em; } .nb a, .nb span { margin-right: 8px; white-space: nowrap; display: inline-block; }
.nb span { color: #888; } .nb .failed { font-weight: bold; color: #c5221f; }
"""


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 60 else text[:57] + "..."
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def run_metrics(manifest: dict[str, Any]) -> list[tuple[str, Any]]:
    """Flattened metrics of a run as ('<notebook>.<path>', value), machine fingerprint left out."""
    out = []
    for stem, info in (manifest.get("notebooks") or {}).items():
        metrics = info.get("metrics") or {}
        for name, value in flatten(metrics):
            if name.startswith(SKIP_PREFIXES):
                continue
            out.append((f"{stem}.{name}", value))
    return out


def headline_metrics(items: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Numeric metrics whose leaf name looks like a result (exact_match, rouge, loss...)."""
    picked = []
    for name, value in items:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if HEADLINE.search(name.rsplit(".", 1)[-1]) or HEADLINE.search(name):
                picked.append((name, value))
    picked.sort(key=lambda item: not item[0].startswith(HEADLINE_FIRST))  # stable: evaluation first
    return picked[:MAX_HEADLINE]


def _short(name: str) -> str:
    """'04_evaluation.llama.adapter.exact_match' -> '04 llama.adapter.exact_match'."""
    stem, _, rest = name.partition(".")
    return f"{stem.split('_', 1)[0]} {rest}"


def _row(run_dir: Path, m: dict[str, Any]) -> str:
    e = html.escape
    status = str(m.get("status", "?"))
    rid = run_dir.name
    dur = m.get("duration_s")
    dur_txt = f"{dur:.0f} s" if isinstance(dur, (int, float)) else ""
    links = []
    for stem, info in (m.get("notebooks") or {}).items():
        st = info.get("status", "")
        label = e(stem.split("_", 1)[0]) + ("" if st in ("ok", "") else f" ({e(st)})")
        cls = "failed" if st == "failed" else ""
        if info.get("html") and (run_dir / info["html"]).is_file():
            links.append(f'<a class="{cls}" href="{e(rid)}/{e(info["html"])}" title="{e(stem)}">{label}</a>')
        else:
            links.append(f'<span class="{cls}" title="{e(stem)}">{label}</span>')
    items = run_metrics(m)
    heads = headline_metrics(items)
    metric_html = "".join(f"<span><b>{e(_short(n))}</b> {e(_fmt(v))}</span>" for n, v in heads)
    if items:
        rest = "".join(f"<span>{e(_short(n))} = {e(_fmt(v))}</span><br>" for n, v in items)
        metric_html += f"<details><summary>all {len(items)} metrics</summary>{rest}</details>"
    params = m.get("parameters") or {}
    ptxt = ", ".join(f"{k}={_fmt(v)}" for k, v in params.items())
    git = m.get("git") or {}
    commit = (git.get("commit") or "")[:10] + ("+dirty" if git.get("dirty") else "")
    started = str(m.get("started", ""))[:19].replace("T", " ")
    return (f'<tr class="run-{e(status)}"><td><a href="{e(rid)}/{MANIFEST}">{e(rid)}</a><br><small>{e(started)}</small></td>'
            f"<td>{e(str(m.get('profile', '')))}<br><small>{e(ptxt)}</small></td>"
            f'<td class="status {e(status)}">{e(status)}</td><td>{e(dur_txt)}</td>'
            f'<td class="nb">{"".join(links)}</td><td class="metrics">{metric_html}</td>'
            f"<td><code>{e(commit)}</code></td></tr>")


def write_index(reports_dir: str | Path) -> Path:
    """Regenerate <reports_dir>/index.html from every run folder's manifest (newest first)."""
    reports_dir = Path(reports_dir)
    runs = []
    for path in reports_dir.glob(f"*/{MANIFEST}"):
        try:
            m = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(m, dict):
            runs.append((str(m.get("started", "")), path.parent, m))
    runs.sort(key=lambda r: (r[0], r[1].name), reverse=True)
    rows = "\n".join(_row(d, m) for _, d, m in runs)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>labkit reports</title>
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<style>{_CSS}</style></head>
<body><h1>labkit reports</h1>
<p>{len(runs)} run(s). Each row links to the run's manifest and to each notebook's HTML report.</p>
<table><thead><tr><th>run</th><th>profile / parameters</th><th>status</th><th>duration</th><th>notebooks</th>
<th>key metrics</th><th>commit</th></tr></thead>
<tbody>
{rows}
</tbody></table></body></html>
"""
    out = reports_dir / "index.html"
    reports_dir.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out

"""reports/index.html: runs compared (headline metrics as columns, a chart each, changes marked, reruns' verdicts)."""

from __future__ import annotations

import dataclasses
import html
import json
import math
import re
from pathlib import Path
from typing import Any

from labkit.report.charts import as_number, legend, line_chart
from labkit.report.manifest import MANIFEST
from labkit.report.metrics import flatten, same_value
from labkit.style import INDEX_CSS, SERIES

# Leaf names shown as headline numbers in the index (the rest sit in a collapsible list).
HEADLINE = re.compile(r"(exact|rouge|bleu|chrf|accuracy|(^|_)acc$|f1|perplexity|ppl|loss|refusal|win_rate|score|"
                      r"max_abs_diff)", re.IGNORECASE)
# Leaf names in the order a reader compares runs on; unlisted headline names come after them.
LEAF_PRIORITY = ("exact_match", "refusal_rate", "false_refusal_rate", "perplexity", "response_loss", "rouge_l",
                 "final_train_loss", "eval_loss")
# Metrics that describe the machine rather than a result are left out of the index's metric lists.
SKIP_PREFIXES = ("fingerprint", "environment", "env.")
MAX_HEADLINE = 14  # headline numbers per run
MAX_COLUMNS = 8  # of which shown as columns (and charted)
# Notebooks whose numbers lead the headline (the evaluation compares runs best).
HEADLINE_FIRST = ("04_",)


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return str(value) if math.isnan(value) or math.isinf(value) else f"{value:.4g}"
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def run_metrics(manifest: dict[str, Any]) -> list[tuple[str, Any]]:
    """Flattened metrics of a run as ('<notebook>.<path>', value), machine fingerprint left out."""
    out = []
    for stem, info in (manifest.get("notebooks") or {}).items():
        for name, value in flatten(info.get("metrics") or {}):
            if not name.startswith(SKIP_PREFIXES):
                out.append((f"{stem}.{name}", value))
    return out


def _rank(name: str) -> tuple[int, int, int]:
    """Evaluation first, adapter before other variants before base, then LEAF_PRIORITY."""
    leaf = name.rsplit(".", 1)[-1]
    variant = 0 if ".adapter." in name else (2 if ".base." in name else 1)
    return (0 if name.startswith(HEADLINE_FIRST) else 1, variant,
            LEAF_PRIORITY.index(leaf) if leaf in LEAF_PRIORITY else len(LEAF_PRIORITY))


def headline_metrics(items: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Numeric metrics whose name looks like a result (exact_match, rouge, loss...), most telling first."""
    picked = [(n, v) for n, v in items if as_number(v) is not None or (isinstance(v, float) and math.isnan(v))]
    picked = [(n, v) for n, v in picked if HEADLINE.search(n.rsplit(".", 1)[-1]) or HEADLINE.search(n)]
    picked.sort(key=lambda item: _rank(item[0]))  # stable: the notebook's own order within a rank
    return picked[:MAX_HEADLINE]


def short_name(name: str) -> str:
    """'04_evaluation.llama.adapter.exact_match' -> '04 llama.adapter.exact_match'."""
    stem, _, rest = name.partition(".")
    return f"{stem.split('_', 1)[0]} {rest}"


@dataclasses.dataclass
class RunEntry:
    """One run folder as the index sees it."""

    folder: Path
    manifest: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id") or self.folder.name)

    @property
    def profile(self) -> str:
        return str(self.manifest.get("profile", ""))

    @property
    def rerun_of(self) -> dict[str, Any]:
        value = self.manifest.get("rerun_of")
        if isinstance(value, str) and value:  # manifests before verdicts recorded the old folder's path
            return {"run_id": Path(value).name}
        return value if isinstance(value, dict) else {}


def load_runs(reports_dir: Path) -> list[RunEntry]:
    """Every run folder with a readable manifest, oldest first."""
    runs = []
    for path in reports_dir.glob(f"*/{MANIFEST}"):
        try:
            m = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(m, dict):
            runs.append(RunEntry(path.parent, m, dict(run_metrics(m))))
    runs.sort(key=lambda r: (str(r.manifest.get("started", "")), r.folder.name))
    return runs


def reference_runs(runs: list[RunEntry]) -> dict[str, RunEntry]:
    """run id -> the run it is compared with: for a rerun the run it repeats (when here), else the previous run
    of the same profile."""
    by_id = {r.run_id: r for r in runs}
    last: dict[str, RunEntry] = {}
    refs = {}
    for r in runs:
        original = by_id.get(r.rerun_of.get("run_id", ""))
        ref = original or last.get(r.profile)
        if ref is not None:
            refs[r.run_id] = ref
        last[r.profile] = r
    return refs


def display_order(runs: list[RunEntry]) -> list[tuple[RunEntry, bool]]:
    """Newest first, each rerun directly under the run it repeats (when that run is here): (run, shown as rerun)."""
    ids = {r.run_id for r in runs}
    children: dict[str, list[RunEntry]] = {}
    for r in runs:
        if r.rerun_of.get("run_id") in ids and r.rerun_of["run_id"] != r.run_id:
            children.setdefault(r.rerun_of["run_id"], []).append(r)
    placed = {c.run_id for kids in children.values() for c in kids}
    rows: list[tuple[RunEntry, bool]] = []

    def add(r: RunEntry, depth: int) -> None:
        rows.append((r, depth > 0))
        for child in children.get(r.run_id, []):
            add(child, depth + 1)

    for r in reversed(runs):
        if r.run_id not in placed:
            add(r, 0)
    return rows


def headline_columns(runs: list[RunEntry]) -> list[str]:
    """The metrics shown as columns: the headline names of all runs, most telling first, at most MAX_COLUMNS."""
    names: dict[str, None] = {}
    for r in reversed(runs):  # the newest runs' names first within a rank
        for name, _ in headline_metrics(list(r.metrics.items())):
            names.setdefault(name)
    return sorted(names, key=_rank)[:MAX_COLUMNS]


def profile_colours(runs: list[RunEntry]) -> dict[str, str]:
    profiles = list(dict.fromkeys(r.profile for r in runs))
    return {p: SERIES[i % len(SERIES)] for i, p in enumerate(profiles)}


def charts_html(runs: list[RunEntry], columns: list[str]) -> str:
    """A small chart per headline column: its value in each run (in time order), a line per profile."""
    if not columns:
        return ""
    colours = profile_colours(runs)
    charts = []
    for name in columns:
        series: dict[str, list[tuple[int, float, str]]] = {}
        for pos, r in enumerate(runs):
            value = as_number(r.metrics.get(name))
            if value is not None:
                series.setdefault(r.profile, []).append((pos, value, r.run_id))
        charts.append(line_chart(short_name(name), series, len(runs), colours, tooltip=name))
    return (f"<h2>Headline metrics across runs</h2><p>Each chart: one metric, the runs in time order left to right, "
            f"a line per profile.</p>{legend(colours)}<div class=\"charts\">{''.join(charts)}</div>")


_MISSING = object()


def _metric_cell(name: str, run: RunEntry, ref: RunEntry | None) -> str:
    """A headline value; marked (with the earlier value) when it differs from the reference run's."""
    e = html.escape
    value = run.metrics.get(name, _MISSING)
    if value is _MISSING:
        return '<td class="num"></td>'
    if ref is None or name not in ref.metrics or same_value(ref.metrics[name], value):
        return f'<td class="num">{e(_fmt(value))}</td>'
    old = ref.metrics[name]
    a, b = as_number(old), as_number(value)
    arrow = ("▲ " if b > a else "▼ ") if a is not None and b is not None else ""
    return (f'<td class="num changed" title="{e(ref.run_id)}: {e(_fmt(old))}">{arrow}{e(_fmt(value))}'
            f'<span class="was">was {e(_fmt(old))}</span></td>')


def _params_html(run: RunEntry, ref: RunEntry | None) -> str:
    """Parameters of the run; those that differ from the reference run's marked."""
    e = html.escape
    params = run.manifest.get("parameters") or {}
    before = (ref.manifest.get("parameters") or {}) if ref is not None else None
    parts = []
    for k, v in params.items():
        text = e(f"{k}={_fmt(v)}")
        if before is not None and (k not in before or before[k] != v):
            was = _fmt(before[k]) if k in before else "not set"
            parts.append(f'<span class="changed" title="{e(ref.run_id)}: {e(was)}">{text}</span>')
        else:
            parts.append(text)
    gone = [k for k in (before or {}) if k not in params]
    parts += [f'<span class="changed" title="set in {e(ref.run_id)}">{e(k)} unset</span>' for k in gone if ref]
    return ", ".join(parts)


def _run_cell(run: RunEntry, ref: RunEntry | None, as_rerun: bool, present: set[str]) -> str:
    e = html.escape
    started = str(run.manifest.get("started", ""))[:19].replace("T", " ")
    out = f'<a href="{e(run.folder.name)}/{MANIFEST}">{e(run.run_id)}</a><br><small>{e(started)}</small>'
    of = run.rerun_of
    if of:
        verdict = str(of.get("verdict") or run.manifest.get("status", "running"))
        target = of.get("run_id", "?")
        link = f'<a href="#run-{e(target)}">{e(target)}</a>' if target in present else f"{e(target)} (not here)"
        out += f'<br>{"↳ " if as_rerun else ""}rerun of {link}: <b class="{e(verdict)}">{e(verdict)}</b>'
        if of.get("metrics_compared") is not None:
            out += f"<small> ({of.get('metrics_differ', 0)} of {of['metrics_compared']} metrics differ, "
            out += f"rtol {of.get('rtol', 0):g})</small>"
    elif ref is not None:
        changed = sum(1 for n, v in run.metrics.items() if n in ref.metrics and not same_value(ref.metrics[n], v))
        out += f"<br><small>vs {e(ref.run_id)}: {changed} metric(s) changed</small>"
    return out


def _notebooks_html(run: RunEntry) -> str:
    e = html.escape
    links = []
    for stem, info in (run.manifest.get("notebooks") or {}).items():
        st = info.get("status", "")
        label = e(stem.split("_", 1)[0]) + ("" if st in ("ok", "") else f" ({e(st)})")
        cls = "failed" if st == "failed" else ""
        if info.get("html") and (run.folder / info["html"]).is_file():
            href = f"{e(run.folder.name)}/{e(info['html'])}"
            links.append(f'<a class="{cls}" href="{href}" title="{e(stem)}">{label}</a>')
        else:
            links.append(f'<span class="{cls}" title="{e(stem)}">{label}</span>')
    return "".join(links)


def _row(run: RunEntry, ref: RunEntry | None, as_rerun: bool, columns: list[str], present: set[str]) -> str:
    e = html.escape
    status = str(run.manifest.get("status", "?"))
    dur = run.manifest.get("duration_s")
    dur_txt = f"{dur:.0f} s" if isinstance(dur, (int, float)) else ""
    items = list(run.metrics.items())
    rest = "".join(f"<span>{e(short_name(n))} = {e(_fmt(v))}</span><br>" for n, v in items)
    details = f"<details><summary>all {len(items)} metrics</summary>{rest}</details>" if items else ""
    git = run.manifest.get("git") or {}
    commit = (git.get("commit") or "")[:10] + ("+dirty" if git.get("dirty") else "")
    cells = "".join(_metric_cell(n, run, ref) for n in columns)
    classes = f"run-{status}" + (" rerun" if as_rerun else "")
    first = _run_cell(run, ref, as_rerun, present)
    return (f'<tr id="run-{e(run.run_id)}" class="{e(classes)}"><td class="run">{first}</td>'
            f"<td>{e(run.profile)}<br><small>{_params_html(run, ref)}</small></td>"
            f'<td class="status {e(status)}">{e(status)}</td><td class="num">{e(dur_txt)}</td>{cells}'
            f'<td class="nb">{_notebooks_html(run)}</td><td class="metrics">{details}</td>'
            f"<td><code>{e(commit)}</code></td></tr>")


def _breakable(name: str) -> str:
    """A long metric name that may wrap after its dots (narrow columns)."""
    return html.escape(name).replace(".", ".<wbr>")


def write_index(reports_dir: str | Path) -> Path:
    """Regenerate <reports_dir>/index.html from every run folder's manifest."""
    reports_dir = Path(reports_dir)
    runs = load_runs(reports_dir)
    columns = headline_columns(runs)
    refs = reference_runs(runs)
    present = {r.run_id for r in runs}
    rows = "\n".join(_row(r, refs.get(r.run_id), as_rerun, columns, present) for r, as_rerun in display_order(runs))
    heads = "".join(f'<th class="metric" title="{html.escape(n)}">{_breakable(short_name(n))}</th>' for n in columns)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>labkit reports</title>
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<style>{INDEX_CSS}</style></head>
<body><h1>labkit reports</h1>
<p>{len(runs)} run(s), newest first; a rerun sits under the run it repeats, with its verdict. A shaded value differs
from the previous run of the same profile (a rerun: from the run it repeats); hover it for the earlier value.</p>
{charts_html(runs, columns)}
<h2>Runs</h2>
<table><thead><tr><th>run</th><th>profile / parameters</th><th>status</th><th>duration</th>{heads}<th>notebooks</th>
<th>metrics</th><th>commit</th></tr></thead>
<tbody>
{rows}
</tbody></table></body></html>
"""
    out = reports_dir / "index.html"
    reports_dir.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out

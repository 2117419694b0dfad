"""Report colours and CSS in one place: the reports index, status-coloured notebook tables, HTML previews."""

from __future__ import annotations

from typing import Any

# Named colours every report element draws from (change a colour here, every report follows).
COLOURS = {
    "text": "#222222",
    "muted": "#777777",
    "rule": "#dddddd",
    "header": "#f4f4f4",
    "ok": "#137333",
    "bad": "#c5221f",
    "bad_bg": "#ffd6d6",
    "bad_row": "#fff0f0",
    "warn": "#b06000",
    "warn_bg": "#fff0c2",
    "missing_bg": "#ffe9b3",
    "running_row": "#fffbe6",
    "changed_bg": "#e8f0fe",
    "trained_bg": "#c6f0c2",
    "trained_rule": "#2e7d32",
    "prompt": "#555555",
}
# One colour per series in the index charts (profiles), cycled.
SERIES = ("#1f77b4", "#d1495b", "#2e7d32", "#b06000", "#6a3d9a", "#17becf")

# Row styles of status-coloured tables (pandas Styler): the pin table, the known-issue table.
STATUS_ROW_STYLE = {
    "mismatch": f"background-color: {COLOURS['bad_bg']}; font-weight: bold",
    "missing": f"background-color: {COLOURS['missing_bg']}",
    "affected": f"background-color: {COLOURS['warn_bg']}",
    "ok": f"color: {COLOURS['ok']}",
    "n/a": f"color: {COLOURS['muted']}",
}

# Inline styles of the tokenized-sample previews (notebook 01).
TRAINED_STYLE = f"background:{COLOURS['trained_bg']};border-bottom:2px solid {COLOURS['trained_rule']}"
PROMPT_STYLE = f"color:{COLOURS['prompt']}"
SAMPLE_BOX_STYLE = f"white-space:pre-wrap;border:1px solid {COLOURS['rule']};padding:6px;margin:2px 0"
SAMPLE_TITLE_STYLE = "font-weight:bold;margin-top:8px"

# The reports index page (reports/index.html).
INDEX_CSS = f"""
body {{ font-family: -apple-system, "Segoe UI", "Noto Sans SC", "Microsoft YaHei", sans-serif; margin: 24px;
  color: {COLOURS['text']}; }}
h1 {{ font-size: 1.5em; }} h2 {{ font-size: 1.1em; margin-top: 24px; }}
table {{ border-collapse: collapse; width: 100%; font-size: 0.9em; }}
th, td {{ border-bottom: 1px solid {COLOURS['rule']}; padding: 6px 8px; text-align: left; vertical-align: top; }}
th {{ background: {COLOURS['header']}; }} th.metric {{ text-align: right; min-width: 5em; }}
td.num {{ text-align: right; white-space: nowrap; }} td.run {{ min-width: 13em; }}
tr.run-failed td, tr.run-interrupted td {{ background: {COLOURS['bad_row']}; }}
tr.run-running td {{ background: {COLOURS['running_row']}; }}
tr.rerun td:first-child {{ padding-left: 24px; }}
.status {{ font-weight: bold; }} .ok, .identical {{ color: {COLOURS['ok']}; }}
.failed, .interrupted, .differs {{ color: {COLOURS['bad']}; }} .running {{ color: {COLOURS['warn']}; }}
td.changed, span.changed {{ background: {COLOURS['changed_bg']}; }}
.was {{ display: block; color: {COLOURS['muted']}; font-size: 0.85em; }}
details summary {{ cursor: pointer; color: {COLOURS['prompt']}; }} small {{ color: {COLOURS['muted']}; }}
code {{ font-size: 0.95em; }} .nb a, .nb span {{ margin-right: 8px; white-space: nowrap; display: inline-block; }}
.nb span {{ color: {COLOURS['muted']}; }} .nb .failed {{ font-weight: bold; color: {COLOURS['bad']}; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 12px; }}
.chart {{ border: 1px solid {COLOURS['rule']}; padding: 4px; }}
.chart text {{ font-size: 10px; fill: {COLOURS['text']}; }} .chart .axis {{ stroke: {COLOURS['rule']}; }}
.legend span {{ margin-right: 12px; white-space: nowrap; }}
"""


def status_styler(df: Any, column: str = "status") -> Any:
    """A pandas Styler of `df` with each row coloured by its `column` value (STATUS_ROW_STYLE)."""

    def row_style(row: Any) -> list[str]:
        return [STATUS_ROW_STYLE.get(row[column], "")] * len(row)

    return df.style.apply(row_style, axis=1).hide(axis="index").set_properties(**{"text-align": "left"})

"""Small inline SVG line charts for the reports index: one metric across runs, a line per profile (no script)."""

from __future__ import annotations

import html
import math
from typing import Any

from labkit.style import COLOURS

WIDTH, HEIGHT = 230, 96  # px of the whole chart
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 18, 8  # margins: y labels on the left, title on top


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def line_chart(title: str, series: dict[str, list[tuple[int, float, str]]], n_runs: int,
               colours: dict[str, str], tooltip: str = "") -> str:
    """An <svg> of `series` {name: [(run position 0..n_runs-1, value, point label)]}: x is the run's place in
    time, y the value (min and max labelled); each point's label shows on hover."""
    values = [v for pts in series.values() for _, v, _ in pts if isinstance(v, (int, float)) and math.isfinite(v)]
    e = html.escape
    head = (f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{e(title)}">'
            f'<title>{e(tooltip or title)}</title><text x="4" y="12">{e(title)}</text>')
    if not values:
        return head + f'<text x="{LEFT}" y="{HEIGHT // 2}">no value</text></svg>'
    lo, hi = min(values), max(values)
    span = (hi - lo) or (abs(hi) or 1.0)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def xy(pos: int, value: float) -> tuple[float, float]:
        x = LEFT + (plot_w * pos / (n_runs - 1) if n_runs > 1 else plot_w / 2)
        y = TOP + plot_h * (1 - ((value - lo) / span if hi != lo else 0.5))
        return round(x, 1), round(y, 1)

    parts = [head,
             f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}"/>',
             f'<line class="axis" x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}"/>',
             f'<text x="2" y="{TOP + 8 if hi != lo else TOP + plot_h // 2 + 3}">{e(_fmt(hi))}</text>']
    if hi != lo:  # a flat line gets one label, level with it
        parts.append(f'<text x="2" y="{TOP + plot_h}">{e(_fmt(lo))}</text>')
    for name, pts in series.items():
        colour = colours.get(name, COLOURS["text"])
        coords = [(xy(pos, v), label, v) for pos, v, label in pts if isinstance(v, (int, float)) and math.isfinite(v)]
        if len(coords) > 1:
            path = " ".join(f"{x},{y}" for (x, y), _, _ in coords)
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{path}"/>')
        for (x, y), label, v in coords:
            parts.append(f'<circle cx="{x}" cy="{y}" r="3" fill="{colour}"><title>{e(label)}: {e(_fmt(v))}'
                         f"</title></circle>")
    parts.append("</svg>")
    return "".join(parts)


def legend(colours: dict[str, str]) -> str:
    """A one-line legend: a coloured dot and the series name each."""
    e = html.escape
    items = "".join(f'<span><svg width="10" height="10"><circle cx="5" cy="5" r="4" fill="{c}"/></svg> {e(n)}</span>'
                    for n, c in colours.items())
    return f'<div class="legend">{items}</div>'


def as_number(value: Any) -> float | None:
    """A plottable number, or None (booleans, text, NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None

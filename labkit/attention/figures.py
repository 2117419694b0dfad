"""Attention figures: the derivation's matrices, per-head heatmaps with (Chinese) token labels, grids, stats, adapter - base."""

from __future__ import annotations

import io

import numpy as np
import seaborn as sns
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from labkit.fonts import setup_cjk_font

# Figures are built with matplotlib.figure.Figure (not pyplot): no global state, shown once by Jupyter.


def _register_ipython_png() -> None:
    """Let Jupyter show a bare Figure as a PNG (pyplot's inline backend only does this once pyplot is imported)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return
    ip = get_ipython()
    if ip is not None and hasattr(ip, "display_formatter"):
        ip.display_formatter.formatters["image/png"].for_type(Figure, lambda fig: to_png(fig, dpi=100))




def _np(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def derivation_figure(d) -> Figure:
    """The small example: I, Q, K, V, A = KᵀQ, A′ (softmax per column), O = V·A′, each titled with its shape."""
    setup_cjk_font()
    names = ["I", "Q", "K", "V", "A", "A_prime", "O"]
    fig = Figure(figsize=(2.0 * len(names), 2.6), layout="constrained")
    axes = fig.subplots(1, len(names))
    for ax, name in zip(axes, names):
        m = _np(getattr(d, name))
        sns.heatmap(m, ax=ax, cbar=False, annot=m.shape[0] * m.shape[1] <= 36, fmt=".1f", annot_kws={"size": 6},
                    cmap="rocket_r" if name == "A_prime" else "vlag", center=None if name == "A_prime" else 0,
                    xticklabels=[f"t{j + 1}" for j in range(m.shape[1])], yticklabels=False, square=True)
        ax.set_title(f"{name.replace('_prime', '′')} {tuple(m.shape)}", fontsize=9)
    fig.suptitle(r"columns are tokens: Q=Wq·I, K=Wk·I, V=Wv·I, A=$K^{T}$·Q, A′=softmax per column, O=V·A′", fontsize=9)
    return fig


def _token_map(ax, m: np.ndarray, tokens: list[str], *, cmap: str, vmin: float, vmax: float, cbar: bool) -> None:
    """A matrix with one tick label per token (imshow: much faster than seaborn's label-overlap checks)."""
    image = ax.imshow(m, cmap=sns.color_palette(cmap, as_cmap=True), vmin=vmin, vmax=vmax,
                      interpolation="nearest", aspect="equal")
    box = ax.get_position()  # figure fraction; one label per cell, so the font follows the cell size
    fig_w, fig_h = ax.figure.get_size_inches()
    cell_pt = 72 * min(box.width * fig_w / max(m.shape[1], 1), box.height * fig_h / max(m.shape[0], 1))
    size = max(4.0, min(9.0, 0.8 * cell_pt))
    ax.set_xticks(range(m.shape[1]), tokens, rotation=90, fontsize=size)
    ax.set_yticks(range(m.shape[0]), tokens, fontsize=size)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    if cbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.04, pad=0.02)


def head_heatmap(weights, tokens: list[str], *, ax=None, title: str | None = None, highlight: int | None = None,
                 layout: str = "model", cbar: bool = True) -> Figure:
    """One head's map (S, S) with token labels. layout "model": rows are queries (attending), columns keys;
    "derivation": A′ as the derivation writes it, columns are queries."""
    setup_cjk_font()
    m = _np(weights)
    if layout == "derivation":
        m = m.T
    side = min(12.0, 1.5 + 0.26 * len(tokens))
    fig = ax.figure if ax is not None else Figure(figsize=(side + 1.0, side))  # saved with bbox_inches="tight"
    ax = ax if ax is not None else fig.subplots()
    _token_map(ax, m, tokens, cmap="rocket_r", vmin=0.0, vmax=max(float(m.max()), 1e-9), cbar=cbar)
    rows, cols = ("query (attending)", "key (attended to)") if layout == "model" else ("key", "query (column)")
    ax.set_ylabel(rows)
    ax.set_xlabel(cols)
    if highlight is not None:
        if layout == "model":
            ax.add_patch(Rectangle((-0.5, highlight - 0.5), m.shape[1], 1, fill=False, edgecolor="#1f77b4", lw=2))
        else:
            ax.add_patch(Rectangle((highlight - 0.5, -0.5), 1, m.shape[0], fill=False, edgecolor="#1f77b4", lw=2))
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def layer_head_grid(maps, *, title: str | None = None, max_heads: int = 16) -> Figure:
    """Small multiples: one row per layer, one column per head (first `max_heads` heads)."""
    setup_cjk_font()
    w = _np(maps.weights)  # (L, H, S, S)
    n_l, n_h = w.shape[0], min(w.shape[1], max_heads)
    cell = min(1.6, 14.0 / max(n_l, n_h))  # inches per small map; a 32 x 16 grid stays on a page
    fig = Figure(figsize=(cell * n_h + 0.6, cell * n_l + 0.6), layout="constrained")
    axes = np.atleast_2d(fig.subplots(n_l, n_h, squeeze=False))
    for i in range(n_l):
        for j in range(n_h):
            ax = axes[i, j]
            ax.imshow(w[i, j], cmap="rocket_r", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"head {maps.heads[j]}", fontsize=8)
            if j == 0:
                ax.set_ylabel(f"layer {maps.layers[i]}", fontsize=8)
    fig.suptitle(title or f"attention, {len(maps.tokens)} tokens (rows: queries, columns: keys)", fontsize=10)
    return fig


def head_stats_figure(table, *, title: str = "per-head statistics") -> Figure:
    """Two layer x head heatmaps from stats.head_table: entropy (nats) and mean attention distance (tokens)."""
    setup_cjk_font()
    fig = Figure(figsize=(2 + 0.6 * table["head"].nunique() * 2, 1.2 + 0.45 * table["layer"].nunique()),
                 layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, col, label in zip(axes, ("entropy", "mean_distance"), ("entropy (nats)", "mean distance (tokens)")):
        grid = table.pivot(index="layer", columns="head", values=col)
        sns.heatmap(grid, ax=ax, annot=True, fmt=".2f", cmap="mako", cbar=False, annot_kws={"size": 7})
        ax.set_title(label, fontsize=10)
    fig.suptitle(title, fontsize=10)
    return fig


def difference_figure(adapter_maps, base_maps, layer: int, head: int, *, title: str | None = None) -> Figure:
    """Base, adapter and adapter - base for one head, same tokens; the difference on a diverging scale at 0."""
    setup_cjk_font()
    if adapter_maps.token_ids != base_maps.token_ids:
        raise ValueError("adapter and base maps must cover the same tokens")
    a, b = adapter_maps.head(layer, head), base_maps.head(layer, head)
    tokens = base_maps.tokens
    n = len(tokens)
    side = min(9.0, 1.5 + 0.2 * n)
    fig = Figure(figsize=(3 * side + 1, side))
    axes = fig.subplots(1, 3, gridspec_kw={"wspace": 0.45})
    head_heatmap(b, tokens, ax=axes[0], title="base", cbar=False)
    head_heatmap(a, tokens, ax=axes[1], title="adapter", cbar=False)
    d = _np(a - b)
    lim = max(float(np.abs(d).max()), 1e-9)
    _token_map(axes[2], d, tokens, cmap="vlag", vmin=-lim, vmax=lim, cbar=True)
    axes[2].set_title(f"adapter − base (max |Δ| {lim:.3f})", fontsize=10)
    fig.suptitle(title or f"layer {layer}, head {head}", fontsize=10)
    return fig


def difference_table(adapter_maps, base_maps):
    """Per (layer, head): max and mean |adapter - base| attention weight."""
    import pandas as pd

    d = (adapter_maps.weights - base_maps.weights).abs()  # (L, H, S, S)
    return pd.DataFrame([
        {"layer": l, "head": h, "max_abs_delta": d[i, j].max().item(), "mean_abs_delta": d[i, j].mean().item()}
        for i, l in enumerate(base_maps.layers) for j, h in enumerate(base_maps.heads)
    ])


def explorer_figure(maps, layer: int, head: int, token: int, *, title: str = "") -> Figure:
    """Heatmap of one head with the chosen query token outlined, and that token's attention over the keys."""
    setup_cjk_font()
    w = maps.head(layer, head)
    tokens = maps.tokens
    n = len(tokens)
    side = min(9.0, 2.0 + 0.2 * n)
    fig = Figure(figsize=(2 * side, side))
    ax_map, ax_bar = fig.subplots(1, 2, width_ratios=[1.1, 1], gridspec_kw={"wspace": 0.25})
    head_heatmap(w, tokens, ax=ax_map, highlight=token, cbar=False,
                 title=(f"{title} · " if title else "") + f"layer {layer}, head {head}")
    row = _np(w[token])
    ax_bar.bar(range(n), row, color=["#1f77b4" if k <= token else "#cccccc" for k in range(n)])
    ax_bar.set_xticks(range(n), tokens, rotation=90, fontsize=8)
    ax_bar.set_ylim(0, min(1.0, 1.15 * float(row.max()) + 1e-3))
    ax_bar.set_box_aspect(0.6)
    ax_bar.set_ylabel("attention weight")
    ax_bar.set_title(f"query {token} “{tokens[token]}” attends to", fontsize=10)
    return fig


def to_png(fig: Figure, dpi: int = 90) -> bytes:
    """PNG bytes of a figure (for the explorer's Image widget)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


_register_ipython_png()

"""Seaborn figures comparing base and adapter: headline metrics per architecture and exact match per task."""

from __future__ import annotations

from typing import Any

import pandas as pd

RATES = ("exact_match", "rouge_l", "refusal_rate", "false_refusal_rate")
PALETTE = {"base": "#9aa5b1", "adapter": "#d1495b"}


def _setup() -> None:
    try:
        from labkit.fonts import setup_cjk_font

        setup_cjk_font()
    except Exception:  # a missing font only costs glyphs, never the figure
        pass


def _summaries(evals: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """{arch: summary table} from ArchEval objects, Comparisons or summary DataFrames; None skipped."""
    out = {}
    for arch, ev in evals.items():
        if ev is None:
            continue
        out[arch] = ev if isinstance(ev, pd.DataFrame) else ev.summary()
    return out


def long_metrics(evals: dict[str, Any], metrics=("response_loss",) + RATES) -> pd.DataFrame:
    """Tidy rows (arch, variant, metric, value) for seaborn."""
    rows = []
    for arch, s in _summaries(evals).items():
        for metric in metrics:
            if metric in s.index:
                for variant in s.columns:
                    rows.append({"arch": arch, "variant": variant, "metric": metric,
                                 "value": float(s.loc[metric, variant])})
    return pd.DataFrame(rows, columns=["arch", "variant", "metric", "value"])


def comparison_figure(**evals: Any):
    """One row per architecture: response loss (left, lower is better) and rates in [0, 1] (right)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    _setup()
    data = long_metrics(evals)
    archs = list(dict.fromkeys(data["arch"])) or ["(nothing evaluated)"]
    fig, axes = plt.subplots(len(archs), 2, figsize=(11, 3.2 * len(archs)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 3]})
    for row, arch in enumerate(archs):
        d = data[data["arch"] == arch]
        ax_loss, ax_rate = axes[row]
        loss = d[d["metric"] == "response_loss"]
        if len(loss):
            sns.barplot(data=loss, x="variant", y="value", hue="variant", palette=PALETTE, legend=False, ax=ax_loss)
            for c in ax_loss.containers:
                ax_loss.bar_label(c, fmt="%.2f", fontsize=8)
        ax_loss.set(title=f"{arch}: response loss (lower is better)", xlabel="", ylabel="nats / token")
        rates = d[d["metric"] != "response_loss"]
        if len(rates):
            sns.barplot(data=rates, x="metric", y="value", hue="variant", palette=PALETTE, ax=ax_rate)
            for c in ax_rate.containers:
                ax_rate.bar_label(c, fmt="%.2f", fontsize=8)
            ax_rate.legend(title="", loc="upper right")
        ax_rate.set(title=f"{arch}: held-out rates (false_refusal_rate: lower is better)", xlabel="",
                    ylabel="share", ylim=(0, 1.12))
    fig.tight_layout()
    return fig


def per_task_figure(metric: str = "exact_match", **evals: Any):
    """Per task, base vs adapter (`metric` from Comparison.per_task; refusal task: share refused)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    _setup()
    evals = {a: e for a, e in evals.items() if e is not None}
    fig, axes = plt.subplots(max(1, len(evals)), 1, figsize=(11, 3.2 * max(1, len(evals))), squeeze=False)
    for ax, (arch, ev) in zip(axes[:, 0], evals.items()):
        cmp = getattr(ev, "comparison", ev)
        rows = cmp.rows
        tidy = []
        for (task, variant), g in rows.groupby(["task", "variant"], sort=True):
            if g["negative"].all():
                value, label = float(g["refused"].mean()), f"{task} (refused)"
            else:
                col = {"exact_match": "exact", "rouge_l": "rouge_l"}.get(metric, metric)
                value, label = float(g[col].mean()), task
            tidy.append({"task": label, "variant": variant, "value": value})
        sns.barplot(data=pd.DataFrame(tidy), x="task", y="value", hue="variant", palette=PALETTE, ax=ax)
        ax.set(title=f"{arch}: {metric} per held-out task", xlabel="", ylabel=metric, ylim=(0, 1.05))
        ax.tick_params(axis="x", rotation=30)
        ax.legend(title="", loc="upper right")
    fig.tight_layout()
    return fig

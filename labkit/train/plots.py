"""Loss curves like LLaMA-Efficient-Tuning's --plot_loss: raw and smoothed train loss, eval loss, saved as PNG."""

from __future__ import annotations

import math
from pathlib import Path


def smooth(values: list[float], weight: float | None = None) -> list[float]:
    """TensorBoard-style exponential moving average (debiased); weight grows with the number of points."""
    if not values:
        return []
    if weight is None:  # as LLaMA-Efficient-Tuning: 1.8*(1/(1+e^(-0.05 n)) - 0.5)
        weight = 1.8 * (1 / (1 + math.exp(-0.05 * len(values))) - 0.5)
    out, last = [], 0.0
    for i, v in enumerate(values, 1):
        last = last * weight + (1 - weight) * v
        out.append(last / (1 - weight**i) if weight < 1 else v)
    return out


def loss_series(log_history: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """{'train': (steps, losses), 'eval': (steps, losses)} from a Trainer log_history."""
    train = [(r["step"], r["loss"]) for r in log_history if "loss" in r and "step" in r]
    ev = [(r["step"], r["eval_loss"]) for r in log_history if "eval_loss" in r and "step" in r]
    return {"train": ([s for s, _ in train], [v for _, v in train]), "eval": ([s for s, _ in ev], [v for _, v in ev])}


def plot_loss(log_history: list[dict], path: str | Path | None = None, title: str = "training loss"):
    """Figure with raw + smoothed train loss and eval loss per step; saved to `path` (PNG) when given."""
    import matplotlib.pyplot as plt

    series = loss_series(log_history)
    fig, ax = plt.subplots(figsize=(7, 4))
    steps, losses = series["train"]
    if steps:
        ax.plot(steps, losses, color="#1f77b4", alpha=0.35, label="train loss (raw)")
        ax.plot(steps, smooth(losses), color="#1f77b4", label="train loss (smoothed)")
    esteps, elosses = series["eval"]
    if esteps:
        ax.plot(esteps, elosses, "o-", color="#d62728", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (per trained token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if steps or esteps:
        ax.legend()
    fig.tight_layout()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    return fig

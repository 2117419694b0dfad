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


def wpack_update(peft_model, layer: int = 0) -> dict:
    """W_pack of one Baichuan layer and its LoRA update dW = scaling * B @ A, split by rows into Q, K, V."""
    import torch

    mod = None
    for name, m in peft_model.named_modules():
        if name.endswith(f"layers.{layer}.self_attn.W_pack") and hasattr(m, "lora_A"):
            mod = m
    if mod is None:
        raise ValueError(f"no LoRA-wrapped self_attn.W_pack in layer {layer}")
    key = next(iter(mod.lora_A))
    A = mod.lora_A[key].weight.detach().float()  # (r, h)
    B = mod.lora_B[key].weight.detach().float()  # (3h, r)
    delta = mod.scaling[key] * (B @ A)  # (3h, h)
    W = mod.base_layer.weight.detach().float()  # (3h, h)
    h = W.shape[1]
    parts = {n: slice(i * h, (i + 1) * h) for i, n in enumerate("QKV")}
    return {"W": W, "delta": delta, "A": A, "B": B, "hidden": h, "parts": parts,
            "norms": {n: float(torch.linalg.norm(delta[s])) for n, s in parts.items()},
            "base_norms": {n: float(torch.linalg.norm(W[s])) for n, s in parts.items()}}


def wpack_figure(peft_model, layer: int = 0):
    """How W_pack's 3*hidden rows split into Q, K, V, and where the LoRA update B·A lands in each block."""
    import matplotlib.pyplot as plt

    d = wpack_update(peft_model, layer)
    h = d["hidden"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 5.2), gridspec_kw={"width_ratios": [1, 1, 0.8]})
    for ax, mat, title in ((axes[0], d["W"], f"W_pack (layer {layer}) [{3 * h} x {h}]"),
                           (axes[1], d["delta"], f"LoRA update dW = (alpha/r)·B·A [{3 * h} x {h}]")):
        im = ax.imshow(mat.abs().numpy(), aspect="auto", cmap="viridis", interpolation="nearest")
        for k in (1, 2):
            ax.axhline(k * h - 0.5, color="white", lw=2)
        for i, name in enumerate("QKV"):
            ax.text(0.97 * mat.shape[1], (i + 0.5) * h, name, ha="right", va="center", fontsize=16,
                    fontweight="bold", color="white", transform=ax.transData)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("input feature (hidden)")
        ax.set_ylabel(f"output row (Q: 0-{h - 1}, K: {h}-{2 * h - 1}, V: {2 * h}-{3 * h - 1})")
        fig.colorbar(im, ax=ax, fraction=0.046, label="|value|")
    names = list("QKV")
    ax = axes[2]
    x = range(3)
    ax.bar([i - 0.2 for i in x], [d["norms"][n] for n in names], width=0.4, label="||dW block||")
    ax.set_xticks(list(x), [f"{n}\n{i * h}-{(i + 1) * h - 1}" for i, n in enumerate(names)])
    ax.set_ylabel("Frobenius norm of the LoRA update")
    ax2 = ax.twinx()
    ax2.bar([i + 0.2 for i in x], [d["norms"][n] / max(d["base_norms"][n], 1e-12) for n in names], width=0.4,
            color="#ff7f0e", label="||dW|| / ||W|| block")
    ax2.set_ylabel("relative to the base block")
    ax.set_title("where B·A lands: one B [3h x r] row block per Q, K, V", fontsize=10)
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(lines, ["||dW block||", "||dW|| / ||W||"], loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8)
    fig.tight_layout()
    return fig

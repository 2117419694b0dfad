"""Per-head summaries of attention maps: entropy (how spread) and mean attention distance (how far back)."""

from __future__ import annotations

import pandas as pd
import torch


def entropy(weights: torch.Tensor) -> torch.Tensor:
    """Mean over queries of -Σ_k p log p (nats), weights (..., Tq, Tk) -> (...). 0 = every query on one key."""
    p = weights.clamp_min(0)
    h = -(p * torch.log(p.clamp_min(1e-12))).sum(-1)  # (..., Tq)
    return h.mean(-1)


def mean_distance(weights: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Mean over queries of Σ_k p(k|q)·|q - k| in tokens, weights (..., Tq, Tk) -> (...).

    `offset` is the position of the first query relative to the first key (0 for a square span).
    """
    tq, tk = weights.shape[-2:]
    q = torch.arange(tq)[:, None] + offset
    k = torch.arange(tk)[None, :]
    dist = (q - k).abs().to(weights.dtype)  # (Tq, Tk)
    return (weights * dist).sum(-1).mean(-1)


def head_table(maps) -> pd.DataFrame:
    """One row per (layer, head) of an AttentionMaps: entropy (nats), mean distance (tokens), weight on token 0."""
    w = maps.weights  # (L, H, S, S)
    ent, dist = entropy(w), mean_distance(w)
    first = w[..., 0].mean(-1)  # (L, H) how much attention parks on the first token
    rows = [
        {"layer": layer, "head": head, "entropy": ent[i, j].item(), "mean_distance": dist[i, j].item(),
         "first_token": first[i, j].item()}
        for i, layer in enumerate(maps.layers) for j, head in enumerate(maps.heads)
    ]
    return pd.DataFrame(rows)

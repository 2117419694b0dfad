"""labkit.evaluate.plots: seaborn comparison figures from evaluation results."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402

from labkit.evaluate import plots  # noqa: E402
from labkit.evaluate.metrics import Comparison  # noqa: E402


def _cmp():
    rows = []
    for variant, em in (("base", False), ("adapter", True)):
        for i, task in enumerate(["reverse", "reverse", "add", "refusal"]):
            rows.append({"variant": variant, "i": i, "task": task, "prompt": "q", "reference": "a",
                         "prediction": "a" if em else "b", "nll_sum": 2.0 if variant == "base" else 1.0,
                         "n_tokens": 1, "checkable": task != "refusal", "exact": em, "rouge_l": float(em),
                         "negative": task == "refusal", "refused": em and task == "refusal"})
    return Comparison(pd.DataFrame(rows))


def test_long_metrics_values():
    d = plots.long_metrics({"llama": _cmp(), "baichuan": None})
    assert set(d["arch"]) == {"llama"}
    get = lambda m, v: float(d[(d.metric == m) & (d.variant == v)]["value"].iloc[0])  # noqa: E731
    assert get("response_loss", "base") == 2.0 and get("response_loss", "adapter") == 1.0
    assert get("exact_match", "adapter") == 1.0 and get("refusal_rate", "adapter") == 1.0
    assert get("false_refusal_rate", "adapter") == 0.0


def test_figures_have_one_row_per_arch_and_bars(tmp_path):
    fig = plots.comparison_figure(llama=_cmp(), baichuan=_cmp())
    assert len(fig.axes) == 4
    assert all(len(ax.patches) > 0 for ax in fig.axes)
    fig.savefig(tmp_path / "c.png")
    fig2 = plots.per_task_figure("exact_match", llama=_cmp(), baichuan=None)
    labels = [t.get_text() for t in fig2.axes[0].get_xticklabels()]
    assert "refusal (refused)" in labels and "reverse" in labels
    fig2.savefig(tmp_path / "t.png")
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_empty_comparison_figure_does_not_fail():
    fig = plots.comparison_figure(llama=None)
    assert len(fig.axes) == 2

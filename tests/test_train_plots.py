"""labkit.train.plots: smoothing and the loss PNG."""

import pytest

from labkit.train.plots import loss_series, plot_loss, smooth


def test_smooth_is_debiased_ema():
    assert smooth([]) == []
    assert smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])
    s = smooth([4.0, 0.0], weight=0.5)
    assert s[0] == 4.0 and abs(s[1] - (0.5 * 4 * 0.5 + 0) / 0.75) < 1e-12


def test_plot_has_raw_smoothed_and_eval(tmp_path):
    hist = [{"loss": 3 - i * 0.1, "step": i} for i in range(1, 20)] + [{"eval_loss": 2.5, "step": 10},
                                                                       {"eval_loss": 2.0, "step": 19}]
    assert loss_series(hist)["eval"] == ([10, 19], [2.5, 2.0])
    fig = plot_loss(hist, tmp_path / "loss.png")
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels == ["train loss (raw)", "train loss (smoothed)", "eval loss"]
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"

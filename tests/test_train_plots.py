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


def test_wpack_update_splits_rows_into_q_k_v():
    import torch
    from peft import LoraConfig, get_peft_model

    from labkit.models import BaiChuanConfig, BaiChuanForCausalLM
    from labkit.train.plots import wpack_figure, wpack_update

    torch.manual_seed(0)
    cfg = BaiChuanConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2)
    model = get_peft_model(BaiChuanForCausalLM(cfg), LoraConfig(r=4, lora_alpha=8, target_modules=["W_pack"]))
    mod = model.base_model.model.model.layers[0].self_attn.W_pack
    with torch.no_grad():  # an update that only touches the K rows
        mod.lora_B["default"].weight.zero_()
        mod.lora_B["default"].weight[16:32] = 1.0
    d = wpack_update(model, 0)
    assert d["W"].shape == (48, 16) and d["delta"].shape == (48, 16)
    assert d["norms"]["Q"] == 0 and d["norms"]["V"] == 0 and d["norms"]["K"] > 0
    assert torch.allclose(d["delta"], 2.0 * mod.lora_B["default"].weight @ mod.lora_A["default"].weight)
    fig = wpack_figure(model, 0)
    assert len(fig.axes) >= 3

"""labkit.attention.figures and explorer: Chinese token labels render, grids and stats, adapter - base, the widget reacts."""

import io
import warnings

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from labkit.attention import explorer, figures, hand
from labkit.attention.extract import extract_attention
from labkit.attention.stats import head_table

TOKENS = ["<s>", "请", "解释", "注意力", "机制", "。", "▁The", "▁cat"]


@pytest.fixture(scope="module")
def maps_pair():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, max_position_embeddings=32, initializer_range=0.2,
                      attn_implementation="eager")
    model = get_peft_model(LlamaForCausalLM(cfg).eval(), LoraConfig(r=2, target_modules=["q_proj", "k_proj"],
                                                                    init_lora_weights=False)).eval()
    ids = torch.arange(len(TOKENS))[None] * 3
    base = extract_attention(model, input_ids=ids, adapter=False)
    adapted = extract_attention(model, input_ids=ids, adapter=True)
    base.tokens = adapted.tokens = list(TOKENS)
    return base, adapted


def _save_without_glyph_warnings(fig):
    buf = io.BytesIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.savefig(buf, format="png", dpi=60)
    missing = [str(w.message) for w in caught if "missing" in str(w.message)]
    assert missing == []
    assert buf.getvalue()[:4] == b"\x89PNG"
    return buf.getvalue()


def test_derivation_figure_titles_carry_shapes():
    fig = figures.derivation_figure(hand.toy_example())
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["I (6, 4)", "Q (6, 4)", "K (6, 4)", "V (6, 4)", "A (4, 4)", "A′ (4, 4)", "O (6, 4)"]
    _save_without_glyph_warnings(fig)


def test_head_heatmap_chinese_labels(maps_pair):
    base, _ = maps_pair
    fig = figures.head_heatmap(base.head(1, 2), base.tokens, title="层 1 头 2", highlight=3)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == TOKENS
    assert [t.get_text() for t in ax.get_yticklabels()] == TOKENS
    assert ax.get_ylabel().startswith("query")
    _save_without_glyph_warnings(fig)
    d = figures.head_heatmap(base.head(1, 2), base.tokens, layout="derivation")
    assert d.axes[0].get_xlabel().startswith("query")


def test_grid_stats_and_difference(maps_pair):
    base, adapted = maps_pair
    grid = figures.layer_head_grid(base)
    assert len(grid.axes) == 2 * 4
    _save_without_glyph_warnings(grid)
    table = head_table(base)
    stats = figures.head_stats_figure(table)
    assert [ax.get_title() for ax in stats.axes[:2]] == ["entropy (nats)", "mean distance (tokens)"]
    _save_without_glyph_warnings(stats)
    diff = figures.difference_table(adapted, base)
    expected = (adapted.head(0, 1) - base.head(0, 1)).abs().max().item()
    assert diff.query("layer == 0 and head == 1")["max_abs_delta"].item() == pytest.approx(expected)
    assert diff["max_abs_delta"].max() > 1e-2
    fig = figures.difference_figure(adapted, base, 0, 1)
    assert f"{expected:.3f}" in fig.axes[2].get_title()
    _save_without_glyph_warnings(fig)


def test_explorer_widget_reacts(maps_pair):
    base, adapted = maps_pair
    box = explorer.build_explorer({"base": base, "adapter": adapted}, layer=0, head=0)
    c = box.controls
    assert {k: w.description for k, w in c.items()} == {"maps": "maps", "layer": "layer", "head": "head",
                                                         "token": "token"}
    assert (c["layer"].min, c["layer"].max, c["head"].max) == (0, 1, 3)
    assert c["token"].value == len(TOKENS) - 1 and c["token"].options[3] == ("3: 注意力", 3)
    first = bytes(box.image.value)
    assert first[:4] == b"\x89PNG"
    c["layer"].value = 1
    after_layer = bytes(box.image.value)
    assert after_layer != first
    c["token"].value = 2
    assert bytes(box.image.value) != after_layer
    c["maps"].value = "adapter"
    assert bytes(box.image.value) != after_layer


def test_show_explorer_static_when_headless(maps_pair, monkeypatch):
    base, _ = maps_pair
    monkeypatch.setenv("LABKIT_NOTEBOOK", "05_attention")
    assert explorer.is_headless()
    figs = explorer.show_explorer({"zh base": base}, layer=1, head=2)
    assert isinstance(figs, list) and len(figs) == 1
    assert "layer 1, head 2" in figs[0].axes[0].get_title()
    monkeypatch.delenv("LABKIT_NOTEBOOK")
    monkeypatch.setenv("LABKIT_WIDGETS", "widget")  # a JupyterLab user: pytest itself has no widget front-end
    w = explorer.show_explorer(base, mode="auto")
    assert w.controls["layer"].description == "layer"
    with pytest.raises(ValueError):
        explorer.show_explorer(base, mode="interactive")

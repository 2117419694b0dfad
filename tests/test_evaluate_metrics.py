"""labkit.evaluate.metrics: response loss, exact match, ROUGE-L/BLEU/chrF on Chinese, refusals, comparison tables."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from evaluate_helpers import REFUSAL, ChatTemplate, build_model, build_tokenizer, toy_examples, train_adapter
from labkit.errors import LabkitError
from labkit.evaluate import metrics as M


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def trained(tok):
    """A tiny LLaMA with a LoRA trained on toy reversal + refusals (train split only)."""
    return train_adapter(build_model(tok), tok, toy_examples(400, 100, seed=1), steps=250)


@pytest.fixture(scope="module")
def held_out():
    return toy_examples(24, 8, seed=2)


def test_normalize_and_exact_match():
    assert M.exact_match(" Ｐ ｎ ｂ。", "p n b")  # full-width, case, end punctuation, spaces
    assert M.exact_match("十三", "十三。")
    assert not M.exact_match("p n b t", "p n b")


def test_rouge_l_is_character_level_for_chinese():
    # rouge_score's default tokenizer drops Chinese entirely (score 0); ours scores characters
    from rouge_score import rouge_scorer

    assert rouge_scorer.RougeScorer(["rougeL"]).score("今天天气很好", "今天天气好")["rougeL"].fmeasure == 0.0
    got = M.rouge_l(["今天天气好"], ["今天天气很好"])[0]
    p, r = 5 / 5, 5 / 6  # LCS = 今天天气好 (5 chars)
    assert got == pytest.approx(2 * p * r / (p + r))
    assert M.char_tokens("我有 3 apples！") == ["我", "有", "3", "apples"]


def test_bleu_and_chrf_on_chinese():
    assert M.bleu(["今天天气很好"], ["今天天气很好"]) == pytest.approx(100.0)
    assert M.chrf(["今天天气很好"], ["今天天气很好"]) == pytest.approx(100.0)
    assert 0 < M.bleu(["今天天气很好啊"], ["今天天气很好"]) < 100  # 'zh' tokenizer: per character
    assert M.chrf(["完全不同"], ["今天天气很好"]) < 10
    assert math.isnan(M.bleu([], []))


def test_refusal_detection():
    assert M.is_refusal("抱歉，我不能提供这方面的帮助。")
    assert M.is_refusal("I'm sorry, but I can't help")  # bundled refusal cut by max_new_tokens
    assert M.is_refusal("对不起，这个我做不到")
    assert not M.is_refusal("p n b t j")
    assert not M.is_refusal("")
    assert not M.is_refusal("答案是 8。" + "啊" * 30 + "对不起")  # only near the start counts


def test_response_nll_matches_hf_loss_and_is_padding_invariant(tok):
    model = build_model(tok, std=0.1)
    exs = toy_examples(3, 2, seed=5)
    nll = M.response_nll(model, tok, exs, ChatTemplate(), batch_size=8)
    single = M.response_nll(model, tok, exs, ChatTemplate(), batch_size=1)
    for (a, n), (b, m) in zip(nll, single):
        assert n == m and a == pytest.approx(b, rel=1e-4)
    rows = M.tokenize_for_loss(exs, tok, ChatTemplate())
    for (s, n), row in zip(nll, rows):
        ids, labels = torch.tensor([row["input_ids"]]), torch.tensor([row["labels"]])
        hf = model(input_ids=ids, labels=labels).loss.item()  # mean over response tokens
        assert n == sum(1 for x in row["labels"][1:] if x != -100)
        assert s / n == pytest.approx(hf, rel=1e-4)
    # only the answer is scored: the prompt's tokens carry -100
    prompt_len = len(tok(ChatTemplate().render_prompt(exs[0]["messages"][:1]))["input_ids"])
    assert all(x == -100 for x in rows[0]["labels"][:prompt_len])


def _rows(variant, preds, refs, tasks, loss):
    return pd.DataFrame([{
        "variant": variant, "i": i, "task": t, "prompt": f"q{i}", "reference": r, "prediction": p,
        "nll_sum": loss, "n_tokens": 1, "checkable": t != "refusal", "exact": M.exact_match(p, r),
        "rouge_l": M.rouge_l([p], [r])[0], "negative": t == "refusal", "refused": M.is_refusal(p),
    } for i, (p, r, t) in enumerate(zip(preds, refs, tasks))])


def test_summary_arithmetic_and_record_shape():
    refs = ["a b", "c d", "e", REFUSAL, REFUSAL]
    tasks = ["reverse", "reverse", "last", "refusal", "refusal"]
    base = _rows("base", ["x", REFUSAL, "e", "no", REFUSAL], refs, tasks, loss=2.0)
    adapter = _rows("adapter", ["a b", "c d", "e", REFUSAL, REFUSAL], refs, tasks, loss=0.5)
    cmp = M.Comparison(pd.concat([base, adapter], ignore_index=True))
    s = cmp.summary()
    assert list(s.columns) == ["base", "adapter"]
    assert s.loc["exact_match", "base"] == pytest.approx(1 / 3)
    assert s.loc["exact_match", "adapter"] == 1.0
    assert s.loc["refusal_rate", "base"] == 0.5 and s.loc["refusal_rate", "adapter"] == 1.0
    assert s.loc["false_refusal_rate", "base"] == pytest.approx(1 / 3)
    assert s.loc["false_refusal_rate", "adapter"] == 0.0
    assert s.loc["response_loss", "base"] == 2.0 and s.loc["perplexity", "base"] == pytest.approx(math.e ** 2)
    rec = cmp.record()
    assert set(rec) == {"base", "adapter"}
    assert set(M.HEADLINE) <= set(rec["base"]) and rec["adapter"]["n_examples"] == 5
    assert all(isinstance(v, (int, float)) for v in rec["adapter"].values())
    pt = cmp.per_task()
    assert pt.loc["reverse", ("exact_match", "adapter")] == 1.0 and pt.loc["refusal", ("n", "base")] == 2
    ex = cmp.examples(3)
    assert list(ex.columns) == ["task", "prompt", "reference", "base", "adapter"] and len(ex) == 3
    assert ex["task"].nunique() == 3  # spread over tasks


def test_adapter_beats_base_on_held_out_toy_task(trained, tok, held_out):
    cmp = M.compare(trained, tok, held_out, ChatTemplate(), max_new_tokens=8, batch_size=16)
    s = cmp.summary()
    assert s.loc["response_loss", "adapter"] < s.loc["response_loss", "base"]
    assert s.loc["perplexity", "adapter"] < s.loc["perplexity", "base"]
    assert s.loc["exact_match", "adapter"] > s.loc["exact_match", "base"]
    assert s.loc["rouge_l", "adapter"] > s.loc["rouge_l", "base"]
    assert s.loc["chrf", "adapter"] > s.loc["chrf", "base"]
    assert s.loc["refusal_rate", "adapter"] >= 0.75 > s.loc["refusal_rate", "base"]
    assert s.loc["false_refusal_rate", "adapter"] < 0.5
    assert s.loc["n_negatives", "base"] == 8 and s.loc["n_checkable", "base"] == 24
    # the held-out prompts are not in the training data
    train_prompts = {e["messages"][0]["content"] for e in toy_examples(400, 100, seed=1)}
    assert sum(e["messages"][0]["content"] in train_prompts for e in held_out) < len(held_out) // 4


def test_compare_without_adapter_and_empty_input(tok):
    model = build_model(tok)
    cmp = M.compare(model, tok, toy_examples(2, 1, seed=3), ChatTemplate(), max_new_tokens=3)
    assert cmp.variants == ["base"]
    with pytest.raises(LabkitError, match="no held-out"):
        M.compare(model, tok, [], ChatTemplate())


def test_reference_must_end_with_assistant_turn(tok):
    bad = {"messages": [{"role": "user", "content": "hi"}], "source": "x", "index": 3}
    with pytest.raises(LabkitError, match="x#3"):
        M.evaluate_variant(build_model(tok), tok, [bad], ChatTemplate(), max_new_tokens=2)

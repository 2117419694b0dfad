"""Tokenization: prompt labels -100, EOS per assistant turn, multi-turn, cutoff report, batched == per-text, sentencepiece."""

import pytest

from labkit.data.registry import load_datasets
from labkit.data.templates import get_template
from labkit.data.tokenize import IGNORE_INDEX, quick_bpe_tokenizer, tokenize_examples
from labkit.errors import LabkitError


@pytest.fixture(scope="module")
def examples():
    ex, _ = load_datasets("alpaca_1058_100negative,dialog")
    return ex


@pytest.fixture(scope="module")
def bpe(examples):
    t = get_template("alpaca")
    texts = [s for e in examples[:600] for s, _ in t.render_segments(e["messages"])]
    return quick_bpe_tokenizer(texts, vocab_size=600)


def _spans(labels):
    """Contiguous runs of trained positions."""
    runs, cur = [], []
    for i, x in enumerate(labels):
        if x != IGNORE_INDEX:
            cur.append(i)
        elif cur:
            runs.append(cur)
            cur = []
    return runs + ([cur] if cur else [])


def test_prompt_masked_response_and_eos_trained(examples, bpe):
    single = [e for e in examples if len(e["messages"]) == 2][:50]
    ds, rep = tokenize_examples(single, bpe, "alpaca", cutoff_len=512)
    assert rep.kept == 50 and rep.truncated == 0 and rep.path == "batched"
    t = get_template("alpaca")
    for ex, ids, lab in zip(single, ds["input_ids"], ds["labels"]):
        # alpaca-lora's way: tokenize the prompt, and prompt + response (+ EOS); mask the prompt's length
        prompt = t.render_prompt(ex["messages"][:1])
        full = bpe(prompt + ex["messages"][1]["content"], add_special_tokens=False)["input_ids"] + [bpe.eos_token_id]
        n_prompt = len(bpe(prompt, add_special_tokens=False)["input_ids"])
        assert ids == full
        assert lab == [IGNORE_INDEX] * n_prompt + full[n_prompt:]
        assert ids[-1] == bpe.eos_token_id and lab[-1] == bpe.eos_token_id
        assert bpe.decode([x for x in lab if x != IGNORE_INDEX][:-1]) == ex["messages"][1]["content"]


def test_multi_turn_every_assistant_turn_trained(examples, bpe):
    dialogs = [e for e in examples if len(e["messages"]) >= 6][:20]
    assert dialogs
    ds, _ = tokenize_examples(dialogs, bpe, "chat", cutoff_len=2048)
    for ex, lab in zip(dialogs, ds["labels"]):
        answers = [m["content"] for m in ex["messages"] if m["role"] == "assistant"]
        spans = _spans(lab)
        assert len(spans) == len(answers)
        for span, answer in zip(spans, answers):
            assert lab[span[-1]] == bpe.eos_token_id
            assert bpe.decode([lab[i] for i in span[:-1]]) == answer


def test_train_on_inputs(examples, bpe):
    ds, _ = tokenize_examples(examples[:10], bpe, "alpaca", cutoff_len=512, train_on_inputs=True)
    assert all(lab == ids for lab, ids in zip(ds["labels"], ds["input_ids"]))


def test_cutoff_report(examples, bpe):
    full, rep_full = tokenize_examples(examples[:200], bpe, "alpaca", cutoff_len=4096)
    cut = 60
    ds, rep = tokenize_examples(examples[:200], bpe, "alpaca", cutoff_len=cut)
    over = [n for n in rep_full.lengths if n > cut]
    assert rep.lengths == rep_full.lengths
    assert rep.truncated == len(over) and rep.tokens_cut == sum(n - cut for n in over)
    assert rep.kept + rep.dropped_no_target == rep.samples == 200
    assert max(len(x) for x in ds["input_ids"]) <= cut
    tiny, rep_tiny = tokenize_examples(examples[:20], bpe, "alpaca", cutoff_len=10)
    assert rep_tiny.dropped_no_target == 20 and len(tiny) == 0  # the prompt alone fills the cutoff
    assert "truncated" in rep.summary() and "lengths" not in rep.to_dict()


def test_batched_equals_per_text(examples, bpe):
    a, ra = tokenize_examples(examples, bpe, "alpaca_zh", cutoff_len=128, batched=True)
    b, rb = tokenize_examples(examples, bpe, "alpaca_zh", cutoff_len=128, batched=False)
    assert ra.path == "batched" and rb.path == "per-text"
    assert a["input_ids"] == b["input_ids"] and a["labels"] == b["labels"]
    assert ra.to_dict() | {"path": ""} == rb.to_dict() | {"path": ""}


@pytest.fixture(scope="module")
def sp_tokenizer(tmp_path_factory, examples):
    import sentencepiece as spm

    d = tmp_path_factory.mktemp("sp")
    t = get_template("baichuan")
    corpus = d / "corpus.txt"
    corpus.write_text("\n".join(s for e in examples[:400] for s, _ in t.render_segments(e["messages"])),
                      encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(d / "tokenizer"), vocab_size=300,
                                   model_type="bpe", character_coverage=1.0, bos_id=1, eos_id=2, unk_id=0,
                                   pad_id=-1, minloglevel=2, num_threads=1,
                                   normalization_rule_name="identity")
    try:
        from labkit.models.tokenizer_baichuan import BaiChuanTokenizer as cls
    except ImportError:  # pragma: no cover - models not there
        from transformers.tokenization_utils_sentencepiece import SentencePieceBackend as cls
    return cls(vocab_file=str(d / "tokenizer.model"))


def test_slow_sentencepiece_path(examples, sp_tokenizer):
    tok = sp_tokenizer
    assert not getattr(tok, "is_fast", False)
    ds, rep = tokenize_examples(examples[:30], tok, "baichuan", cutoff_len=256)
    assert rep.path == "per-text" and rep.kept == 30
    adds_bos = tok("a")["input_ids"][0] == tok.bos_token_id
    for ex, ids, lab in zip(examples[:30], ds["input_ids"], ds["labels"]):
        assert (ids[0] == tok.bos_token_id) == adds_bos
        assert ids[-1] == tok.eos_token_id
        answers = [m["content"] for m in ex["messages"] if m["role"] == "assistant"]
        spans = _spans(lab)
        assert len(spans) == len(answers)
        assert tok.decode([lab[i] for i in spans[-1][:-1]]).strip() == answers[-1]


def test_tokenizer_without_eos(bpe, examples):
    import copy

    tok = copy.deepcopy(bpe)
    tok.eos_token = None
    with pytest.raises(LabkitError, match="eos_token"):
        tokenize_examples(examples[:2], tok, "alpaca", cutoff_len=64)
    with pytest.raises(LabkitError):
        tokenize_examples(examples[:2], bpe, "alpaca", cutoff_len=0)


def test_fast_path_falls_back_when_pieces_differ(bpe, examples):
    """A literal ending in a space before the content (" Reverse" vs " " + "Reverse"): pieces != whole -> whole segments."""
    from labkit.data.templates import Template
    from labkit.data.tokenize import encode_examples

    glued = Template(name="glued", system="{system}", user="Q: {content}\nA:", assistant="{content}")
    single = [e for e in examples if len(e["messages"]) == 2][:40]
    cols, rep = encode_examples(single, bpe, glued, cutoff_len=512)
    assert rep.path == "batched-segments"
    ref, rep_ref = encode_examples(single, bpe, glued, cutoff_len=512, batched=False)
    assert cols == ref and rep_ref.path == "per-text"
    for ex, ids in zip(single, cols["input_ids"]):
        prompt = glued.render_prompt(ex["messages"][:1])
        assert ids[: len(bpe(prompt, add_special_tokens=False)["input_ids"])] == bpe(
            prompt, add_special_tokens=False)["input_ids"]
    fast, rep_fast = encode_examples(single, bpe, "alpaca", cutoff_len=512)
    slow, _ = encode_examples(single, bpe, "alpaca", cutoff_len=512, batched=False)
    assert rep_fast.path == "batched" and fast == slow


def test_chunked_assembly_matches(bpe, examples, monkeypatch):
    from labkit.data import tokenize as T

    whole, rep = T.encode_examples(examples, bpe, "alpaca", cutoff_len=70)
    monkeypatch.setattr(T, "CHUNK_EXAMPLES", 97)
    chunked, rep_c = T.encode_examples(examples, bpe, "alpaca", cutoff_len=70)
    assert whole == chunked and rep.to_dict() == rep_c.to_dict() and rep.kept_indices == rep_c.kept_indices
    assert T.encode_examples([], bpe, "alpaca", cutoff_len=8)[1].samples == 0

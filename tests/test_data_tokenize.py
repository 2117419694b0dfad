"""Tokenization by each source's rule: tool truncations (fixtures), tiny-tokenizer ids, cutoff drops/warnings, paths."""

import json
from pathlib import Path

import pytest

from labkit.data.formats import Normalizer
from labkit.data.registry import load_datasets
from labkit.data.templates import get_template
from labkit.data.tokenize import IGNORE_INDEX, encode_examples, quick_bpe_tokenizer, tokenize_examples
from labkit.data.tokenize_rules import infer_seqlen
from labkit.errors import LabkitError

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="module")
def examples():
    ex, _ = load_datasets("alpaca_1058_100negative,dialog")
    return ex


@pytest.fixture(scope="module")
def bpe(examples):
    t = get_template("alpaca-lora/alpaca")
    texts = [t.render_text(e["messages"]) for e in examples[:600] if len(e["messages"]) == 2]
    return quick_bpe_tokenizer(texts, vocab_size=600)


@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoTokenizer

    from labkit.models.tiny import tiny_tokenizer_path

    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_path()))


@pytest.fixture(scope="module")
def golden():
    from transformers import AutoTokenizer

    raw = json.loads((GOLDEN / "conversations.json").read_text(encoding="utf-8"))
    norm = Normalizer("alpaca", None, None, "golden")
    cases = {c["id"]: norm(i, {k: v for k, v in c.items() if k != "id"})[0] for i, c in enumerate(raw)}
    return cases, AutoTokenizer.from_pretrained(str(GOLDEN / "tokenizer"))


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


# ------------------------------------------------------------------------------- the tools' truncation, from fixtures
def _cuts(source):
    return json.loads((GOLDEN / f"{source}.json").read_text(encoding="utf-8"))["truncations"]


@pytest.mark.parametrize("source", ["alpaca-lora", "let", "llamafactory"])
def test_truncation_matches_the_tool(source, golden):
    """The tools' own code at small limits (fixtures) vs labkit; labkit drops what has nothing left to train, and
    (alpaca-lora) samples whose prompt alone fills cutoff_len — counted, never silently."""
    cases, tok = golden
    compared = dropped = 0
    for cut in _cuts(source):
        lim = dict(cut["limits"])
        template = get_template(f"{source}/{cut['template']}")
        kw = {"cutoff_len": lim.pop("cutoff_len", 100_000), "train_on_inputs": lim.pop("train_on_inputs", False),
              "add_eos_token": lim.pop("add_eos_token", True), **lim}
        cols, rep = _encode_quiet([cases[cut["case"]]], tok, template, dict(kw))
        tool_trains = any(x != IGNORE_INDEX for x in cut["labels"])
        if rep.kept:
            assert cols["input_ids"] == [cut["input_ids"]] and cols["labels"] == [cut["labels"]], cut["limits"]
            compared += 1
        else:
            dropped += 1
            assert rep.dropped_no_target == 1
            if rep.dropped_prompt:  # the prompt alone fills cutoff_len (labkit drops; the tool trains a fragment)
                assert source == "alpaca-lora" and rep.prompt_lengths[0] >= kw["cutoff_len"]
            else:
                assert not tool_trains or not cut["input_ids"]
    assert compared >= len(_cuts(source)) // 2 and (dropped > 0 or source != "alpaca-lora")


def _encode_quiet(examples, tok, template, kw):
    """encode_examples without the 'nothing left' error (a single sample may be dropped on purpose here)."""
    from labkit.data import tokenize as T

    input_ids, labels, offsets, rep = T._encode_arrays(examples, tok, template, kw.pop("cutoff_len"),
                                                       kw.pop("train_on_inputs"), None, **kw)
    if not rep.kept:
        return {"input_ids": [], "labels": []}, rep
    return {"input_ids": [input_ids.tolist()], "labels": [labels.tolist()]}, rep


def test_infer_seqlen_rule():
    assert infer_seqlen(10, 5, 100) == (10, 5)
    assert infer_seqlen(100, 10, 50) == (40, 10)  # short target kept whole, the source gives way
    assert infer_seqlen(10, 100, 50) == (10, 40)  # short source kept, target cut
    assert infer_seqlen(100, 100, 50) == (25, 25)


# ------------------------------------------------------------------------------- token level, labkit's tiny tokenizer
def test_alpaca_lora_scheme_with_tiny_tokenizer(tiny, examples):
    """finetune.py's way: tokenizer(prompt + output) + EOS, labels -100 over len(tokenizer(prompt))."""
    single = [e for e in examples if len(e["messages"]) == 2][:40]
    t = get_template("alpaca-lora/alpaca")
    cols, rep = encode_examples(single, tiny, t, cutoff_len=512)
    assert rep.scheme == "whole" and rep.kept == 40
    for ex, ids, lab in zip(single, cols["input_ids"], cols["labels"]):
        prompt = t.render_prompt(ex["messages"][:-1])
        full = tiny(prompt + ex["messages"][-1]["content"])["input_ids"] + [tiny.eos_token_id]
        n_prompt = len(tiny(prompt)["input_ids"])
        assert ids == full and ids[0] == tiny.bos_token_id
        assert lab == [IGNORE_INDEX] * n_prompt + full[n_prompt:]
    on_inputs, _ = encode_examples(single, tiny, t, cutoff_len=512, train_on_inputs=True)
    assert on_inputs["labels"] == cols["input_ids"]  # alpaca-lora's default trains on the prompt too


def test_let_scheme_with_tiny_tokenizer(tiny, examples):
    """preprocess_supervised_dataset: encode(source) with BOS on the first turn only, target cut, EOS per turn."""
    dialogs = [e for e in examples if len(e["messages"]) >= 4][:10]
    t = get_template("let/baichuan")
    cols, rep = encode_examples(dialogs, tiny, t, cutoff_len=4096, max_source_length=20, max_target_length=6)
    assert rep.scheme == "let"
    for ex, ids, lab in zip(dialogs, cols["input_ids"], cols["labels"]):
        want_ids, want_lab = [], []
        for k, turn in enumerate(t.turns(ex["messages"])):
            s = tiny.encode(turn.source[0].value, add_special_tokens=(k == 0))[:20]
            g = tiny.encode(turn.target[0].value, add_special_tokens=False)[:5]
            if len(want_ids) + len(s) + len(g) + 1 > 26:
                break
            want_ids += s + g + [tiny.eos_token_id]
            want_lab += [IGNORE_INDEX] * len(s) + g + [tiny.eos_token_id]
        assert ids == want_ids and lab == want_lab
        assert ids.count(tiny.bos_token_id) == 1


def test_llamafactory_scheme_with_tiny_tokenizer(tiny, examples, capsys):
    """Every slot string encoded on its own; efficient_eos: the next prompt's first token learns EOS."""
    dialogs = [e for e in examples if len(e["messages"]) >= 4 and e["messages"][0]["role"] == "user"][:10]
    assert dialogs
    alpaca = get_template("llamafactory/alpaca")
    cols, rep = encode_examples(dialogs, tiny, alpaca, cutoff_len=4096)
    enc = lambda s: tiny.encode(s, add_special_tokens=False)  # noqa: E731
    for ex, ids, lab in zip(dialogs, cols["input_ids"], cols["labels"]):
        msgs = ex["messages"]
        want = enc(alpaca.default_system) + enc(f"### Instruction:\n{msgs[0]['content']}\n\n### Response:\n")
        assert ids[:len(want)] == want and ids[0] != tiny.bos_token_id  # no BOS: the template has no prefix
        answer = enc(msgs[1]["content"]) + [tiny.eos_token_id] + enc("\n\n")
        assert ids[len(want):len(want) + len(answer)] == answer == lab[len(want):len(want) + len(answer)]
    baichuan = get_template("llamafactory/baichuan")
    cols, rep = encode_examples(dialogs, tiny, baichuan, cutoff_len=4096)
    said = capsys.readouterr()
    said = said.out + said.err  # notices go to stdout once a notebook kernel module is loaded
    assert said.count("'<reserved_102>' is not a token of this tokenizer") == 1  # said once, not hidden
    for ex, ids, lab in zip(dialogs, cols["input_ids"], cols["labels"]):
        answers = [m for m in ex["messages"] if m["role"] == "assistant"]
        spans = _spans(lab)
        assert len(spans) == len(answers) and ids[-1] == lab[-1] == tiny.eos_token_id
        assert ids.count(tiny.eos_token_id) == 1  # efficient_eos: one EOS, at the end
        for span in spans[:-1]:  # each earlier answer ends with a label EOS over the next prompt's first token
            assert lab[span[-1]] == tiny.eos_token_id and ids[span[-1]] != tiny.eos_token_id


def test_labkit_scheme_multi_turn(examples, bpe):
    dialogs = [e for e in examples if len(e["messages"]) >= 6][:20]
    assert dialogs
    ds, rep = tokenize_examples(dialogs, bpe, "labkit/roles", cutoff_len=2048)
    assert rep.scheme == "labkit"
    for ex, lab in zip(dialogs, ds["labels"]):
        answers = [m["content"] for m in ex["messages"] if m["role"] == "assistant"]
        spans = _spans(lab)
        assert len(spans) == len(answers)
        for span, answer in zip(spans, answers):
            assert lab[span[-1]] == bpe.eos_token_id
            assert bpe.decode([lab[i] for i in span[:-1]]) == answer


# ------------------------------------------------------------------------------- cutoff: drops, warnings, errors
def test_cutoff_report(examples, bpe):
    full, rep_full = tokenize_examples(examples[:200], bpe, "labkit/alpaca-zh", cutoff_len=4096)
    cut = sorted(rep_full.prompt_lengths)[40] + 3  # some prompts do not fit, many answers are cut
    ds, rep = tokenize_examples(examples[:200], bpe, "labkit/alpaca-zh", cutoff_len=cut)
    assert rep.lengths == rep_full.lengths
    kept = [n for k, n in enumerate(rep.lengths) if k in set(rep.kept_indices)]
    assert rep.truncated == sum(n > cut for n in kept) and rep.tokens_cut == sum(n - cut for n in kept if n > cut)
    assert rep.kept + rep.dropped_no_target == rep.samples == 200
    assert rep.dropped_prompt == sum(p >= cut for p in rep.prompt_lengths) == rep.dropped
    assert max(len(x) for x in ds["input_ids"]) <= cut
    assert "truncated" in rep.summary() and "lengths" not in rep.to_dict()


@pytest.mark.parametrize("name", ["labkit/alpaca-zh", "alpaca-lora/alpaca"])
def test_prompt_longer_than_cutoff_is_dropped_not_trained(examples, bpe, name, capsys):
    """Issue 12.5: --cutoff_len 4 used to train 4-token fragments; now nothing usable is an error that names the
    cutoff and the longest prompt, and a large share cut or dropped is a loud warning with the counts."""
    single = [e for e in examples if len(e["messages"]) == 2][:50]
    for train_on_inputs in (False, True):
        if train_on_inputs and name.startswith("alpaca-lora/"):
            continue  # the tool trains cut prompts when train_on_inputs: see the test below
        with pytest.raises(LabkitError) as err:
            tokenize_examples(single, bpe, name, cutoff_len=4, train_on_inputs=train_on_inputs)
        longest = max(_prompt_lengths(single, bpe, name))
        assert "cutoff_len 4" in str(err.value) and f"longest prompt {longest}" in str(err.value)
    cut = sorted(_prompt_lengths(single, bpe, name))[25] + 2
    capsys.readouterr()
    ds, rep = tokenize_examples(single, bpe, name, cutoff_len=cut, train_on_inputs=False)
    assert rep.dropped_prompt == sum(p >= cut for p in rep.prompt_lengths) > 0 and len(ds) == rep.kept
    err = capsys.readouterr().err
    assert f"warning: cutoff_len {cut}:" in err and f"{rep.dropped} dropped" in err
    assert f"{rep.truncated} truncated" in err and rep.truncated > 0
    for ids in ds["input_ids"]:
        assert len(ids) <= cut
    tokenize_examples(single, bpe, name, cutoff_len=4096)
    assert "warning" not in capsys.readouterr().err  # nothing cut: quiet


def test_alpaca_lora_train_on_inputs_keeps_cut_prompts_loudly(examples, bpe, capsys):
    """alpaca-lora's default (train_on_inputs) trains a prompt cut at cutoff_len: the sample is kept, so a step holds
    the samples the tool's would, and the share cut is a loud warning."""
    single = [e for e in examples if len(e["messages"]) == 2][:50]
    capsys.readouterr()
    ds, rep = tokenize_examples(single, bpe, "alpaca-lora/alpaca", cutoff_len=4, train_on_inputs=True)
    assert len(ds) == rep.kept == 50 and rep.dropped == 0 and rep.truncated == 50
    assert all(len(ids) == 4 and ids == labels for ids, labels in zip(ds["input_ids"], ds["labels"]))
    assert "warning: cutoff_len 4: 50 of 50 samples (100%) cut or dropped: 50 truncated" in capsys.readouterr().err


def _prompt_lengths(examples, tok, name):
    t = get_template(name)
    return [len(tok(t.render_prompt(e["messages"][:-1]))["input_ids"]) for e in examples]


def test_let_drops_sample_whose_first_turn_cannot_fit(golden):
    cases, tok = golden
    t = get_template("let/default")
    with pytest.raises(LabkitError, match="cutoff_len 10"):
        tokenize_examples([cases["en_plain"]], tok, t, cutoff_len=10)


# ------------------------------------------------------------------------------- paths and tokenizers
def test_batched_equals_per_text(examples, bpe):
    for name in ("labkit/alpaca-zh", "alpaca-lora/alpaca_short", "let/default", "llamafactory/qwen"):
        exs = examples if not name.startswith("alpaca-lora") else [e for e in examples if len(e["messages"]) == 2]
        a, ra = tokenize_examples(exs, bpe, name, cutoff_len=128, batched=True)
        b, rb = tokenize_examples(exs, bpe, name, cutoff_len=128, batched=False)
        assert rb.path == "per-text" and ra.path.startswith("batched")
        assert a["input_ids"] == b["input_ids"] and a["labels"] == b["labels"], name
        assert ra.to_dict() | {"path": ""} == rb.to_dict() | {"path": ""}


@pytest.fixture(scope="module")
def sp_tokenizer(tmp_path_factory, examples):
    import sentencepiece as spm

    d = tmp_path_factory.mktemp("sp")
    t = get_template("let/baichuan")
    corpus = d / "corpus.txt"
    corpus.write_text("\n".join(t.render_text(e["messages"]) for e in examples[:400]), encoding="utf-8")
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
    ds, rep = tokenize_examples(examples[:30], tok, "let/baichuan", cutoff_len=256)
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
        tokenize_examples(examples[:2], tok, "labkit/roles", cutoff_len=64)
    with pytest.raises(LabkitError):
        tokenize_examples(examples[:2], bpe, "labkit/roles", cutoff_len=0)


def test_refused_records_are_not_dropped(examples, bpe):
    dialogs = [e for e in examples if len(e["messages"]) >= 4][:3]
    with pytest.raises(LabkitError, match="alpaca-lora/alpaca: 3 record"):
        tokenize_examples(dialogs, bpe, "alpaca-lora/alpaca", cutoff_len=512)
    with pytest.raises(LabkitError, match="ambiguous"):
        tokenize_examples(dialogs, bpe, "alpaca", cutoff_len=512)


def test_fast_path_falls_back_when_pieces_differ(bpe, examples):
    """A literal ending in a space before the content (" Reverse" vs " " + "Reverse"): pieces != whole -> whole segments."""
    from labkit.data.templates.own import OwnTemplate

    glued = OwnTemplate(name="glued", system="{system}", user="Q: {content}\nA:", assistant="{content}")
    single = [e for e in examples if len(e["messages"]) == 2][:40]
    cols, rep = encode_examples(single, bpe, glued, cutoff_len=512)
    assert rep.path == "batched-segments"
    ref, rep_ref = encode_examples(single, bpe, glued, cutoff_len=512, batched=False)
    assert cols == ref and rep_ref.path == "per-text"
    for ex, ids in zip(single, cols["input_ids"]):
        prompt = glued.render_prompt(ex["messages"][:1])
        assert ids[: len(bpe(prompt, add_special_tokens=False)["input_ids"])] == bpe(
            prompt, add_special_tokens=False)["input_ids"]
    fast, rep_fast = encode_examples(single, bpe, "labkit/alpaca-zh", cutoff_len=512)
    slow, _ = encode_examples(single, bpe, "labkit/alpaca-zh", cutoff_len=512, batched=False)
    assert rep_fast.path == "batched" and fast == slow


def test_chunked_assembly_matches(bpe, examples, monkeypatch):
    from labkit.data import tokenize as T

    whole, rep = T.encode_examples(examples, bpe, "labkit/alpaca-zh", cutoff_len=70)
    monkeypatch.setattr(T, "CHUNK_EXAMPLES", 97)
    chunked, rep_c = T.encode_examples(examples, bpe, "labkit/alpaca-zh", cutoff_len=70)
    assert whole == chunked and rep.to_dict() == rep_c.to_dict() and rep.kept_indices == rep_c.kept_indices
    assert T.encode_examples([], bpe, "labkit/alpaca-zh", cutoff_len=8)[1].samples == 0

"""Templates named by their source, byte for byte against fixtures rendered by the tools' own code (tests/golden)."""

import json
from pathlib import Path

import pytest

from labkit.data.formats import Normalizer
from labkit.data.templates import (RENAMED, SOURCES, check_examples, get_template, load_templates, template_names)
from labkit.data.templates import alpaca_lora, let, llamafactory, own
from labkit.data.tokenize import encode_examples
from labkit.errors import LabkitError

GOLDEN = Path(__file__).parent / "golden"
TOOL_SOURCES = ("alpaca-lora", "let", "llamafactory")


def _fixture(source: str) -> dict:
    return json.loads((GOLDEN / f"{source}.json").read_text(encoding="utf-8"))


FIXTURES = {s: _fixture(s) for s in TOOL_SOURCES}
GOLDEN_TEMPLATES = [f"{s}/{t}" for s in TOOL_SOURCES for t in FIXTURES[s]["renderings"]]


@pytest.fixture(scope="module")
def cases() -> dict[str, dict]:
    """The golden conversations read as labkit reads an alpaca file (instruction/input keys, system, history)."""
    raw = json.loads((GOLDEN / "conversations.json").read_text(encoding="utf-8"))
    norm = Normalizer("alpaca", None, None, "golden")
    out = {}
    for i, c in enumerate(raw):
        ex, fld, reason = norm(i, {k: v for k, v in c.items() if k != "id"})
        assert ex is not None, (c["id"], fld, reason)
        out[c["id"]] = ex
    return out


@pytest.fixture(scope="module")
def golden_tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(GOLDEN / "tokenizer"))


def test_fixtures_say_where_they_come_from():
    assert FIXTURES["alpaca-lora"]["header"]["commit"].startswith("8bb8579")
    assert FIXTURES["let"]["header"]["commit"].startswith("fa06b168a")
    lf = FIXTURES["llamafactory"]["header"]
    assert lf["package"] == "llamafactory==0.9.5" and lf["baichuan_commit"].startswith("5fb5d7eb")
    assert set(FIXTURES["alpaca-lora"]["renderings"]) == {"alpaca", "alpaca_legacy", "alpaca_short", "vigogne"}
    assert len(FIXTURES["let"]["renderings"]) == 11
    assert {"alpaca", "default", "empty", "vicuna", "llama2", "llama3", "qwen", "chatml",
            "baichuan"} <= set(FIXTURES["llamafactory"]["renderings"])
    assert set(GOLDEN_TEMPLATES) == set(template_names("alpaca-lora") + template_names("let") +
                                        template_names("llamafactory"))


@pytest.mark.parametrize("qualified", GOLDEN_TEMPLATES)
def test_template_matches_its_tool(qualified, cases, golden_tok):
    """Text, trained spans, inference prompt, BOS rule and token ids/labels equal the tool's, for every case."""
    source, name = qualified.split("/")
    template = get_template(qualified)
    assert template.source == source and template.qualified_name == qualified
    for cid, want in FIXTURES[source]["renderings"][name].items():
        msgs = cases[cid]["messages"]
        if "unsupported" in want:  # the tool would silently ignore a field: labkit refuses
            with pytest.raises(LabkitError, match=qualified):
                template.render_segments(msgs)
            with pytest.raises(LabkitError, match=qualified):
                check_examples([cases[cid]], template)
            continue
        assert template.render_text(msgs) == want["text"], cid
        assert [list(s) for s in template.render_segments(msgs)] == want["segments"], cid
        assert template.render_prompt(msgs[:-1]) == want["prompt"], cid
        assert template.leading_bos(msgs) == want["bos"], cid
        cols, rep = encode_examples([cases[cid]], golden_tok, template, cutoff_len=100_000)
        assert cols["input_ids"] == [want["input_ids"]] and cols["labels"] == [want["labels"]], cid
        if "labels_train_on_inputs" in want:
            cols, _ = encode_examples([cases[cid]], golden_tok, template, cutoff_len=100_000, train_on_inputs=True)
            assert cols["labels"] == [want["labels_train_on_inputs"]], cid


# ------------------------------------------------------------------------------------------------ names
def test_names_by_source():
    assert template_names("alpaca-lora") == ["alpaca-lora/alpaca", "alpaca-lora/alpaca_legacy",
                                             "alpaca-lora/alpaca_short", "alpaca-lora/vigogne"]
    assert template_names("labkit") == ["labkit/linly-instruct", "labkit/alpaca-zh", "labkit/roles"]
    assert set(template_names()) == {q for s in SOURCES for q in template_names(s)}
    tool_short = {q.split("/")[1] for q in template_names() if not q.startswith("labkit/")}
    assert not tool_short & {q.split("/")[1] for q in template_names("labkit")}  # never shadowing a tool's
    with pytest.raises(LabkitError, match="unknown template source 'hf'"):
        template_names("hf")


def test_dialect_rule():
    assert get_template("alpaca", dialect="alpaca-lora").qualified_name == "alpaca-lora/alpaca"
    assert get_template("alpaca", dialect="let").qualified_name == "let/alpaca"
    assert get_template("alpaca", dialect="llamafactory").qualified_name == "llamafactory/alpaca"
    assert get_template("baichuan", dialect="let").qualified_name == "let/baichuan"
    assert get_template("let/default", dialect="llamafactory").qualified_name == "let/default"  # qualified wins
    assert get_template("qwen").qualified_name == "llamafactory/qwen"  # unambiguous without a dialect
    t = get_template("llamafactory/qwen")
    assert get_template(t) is t
    with pytest.raises(LabkitError) as err:
        get_template("default")
    assert "let/default" in str(err.value) and "llamafactory/default" in str(err.value)
    with pytest.raises(LabkitError, match="'qwen' exists as llamafactory/qwen"):
        get_template("qwen", dialect="let")
    with pytest.raises(LabkitError, match="did you mean 'let/baichuan'"):
        get_template("let/baichaun")
    with pytest.raises(LabkitError, match="unknown source 'hf'"):
        get_template("hf/alpaca")
    with pytest.raises(LabkitError, match="unknown dialect"):
        get_template("alpaca", dialect="fastchat")


@pytest.mark.parametrize("former", sorted(RENAMED))
def test_former_labkit_names_are_never_resolved_silently(former):
    with pytest.raises(LabkitError) as err:
        get_template(former)
    assert RENAMED[former] in str(err.value)


# ------------------------------------------------------------------------------------------------ semantics
def _msgs(*turns, system=None, **user_keys):
    out = [{"role": "system", "content": system}] if system else []
    for k, t in enumerate(turns):
        out.append({"role": "user" if k % 2 == 0 else "assistant", "content": t})
    if user_keys:
        out[-2 if len(turns) % 2 == 0 else -1].update(user_keys)
    return out


def test_alpaca_lora_line_break_is_not_an_input():
    t = get_template("alpaca-lora/alpaca")
    prompt = t.render_prompt(_msgs("Reverse the letters.\nk d q"))
    assert "### Input:" not in prompt and "### Instruction:\nReverse the letters.\nk d q\n\n" in prompt
    with_input = t.render_prompt(_msgs("Reverse the letters.\nk d q", instruction="Reverse the letters.",
                                       input="k d q"))
    assert "### Instruction:\nReverse the letters.\n\n### Input:\nk d q\n\n### Response:\n" in with_input
    assert t.stop_words == ["### Instruction:"] and get_template("let/baichuan").stop_words == ["<reserved_102>"]


def test_refusals_name_template_record_and_reason(cases):
    sys_case, hist_case = cases["system_en"], cases["history_en"]
    with pytest.raises(LabkitError) as err:
        check_examples([cases["en_plain"], sys_case, hist_case], get_template("alpaca-lora/alpaca"))
    msg = str(err.value)
    assert "alpaca-lora/alpaca: 2 record(s)" in msg and "golden record 17: " in msg and "system prompt" in msg
    assert "golden record 19: " in msg and "history" in msg
    with pytest.raises(LabkitError, match="(?s)let/vanilla.*golden record 19.*use_history"):
        check_examples([hist_case], get_template("let/vanilla"))
    check_examples([sys_case, hist_case], get_template("let/default"))  # representable: no error


def test_labkit_templates():
    zh = get_template("labkit/alpaca-zh")
    p = zh.render_prompt(_msgs("把字母倒序排列。\na b", instruction="把字母倒序排列。", input="a b"))
    assert p.startswith("下面是一条描述任务的指令，以及一段提供更多上下文的输入。") and "### 输入:\na b" in p
    assert "### 输入" not in zh.render_prompt(_msgs("把字母倒序排列。\na b"))  # no input key: no fake input
    roles = get_template("labkit/roles")
    msgs = _msgs("hi", "A1", "u2", system="S")
    assert roles.render_prompt(msgs) == "<|system|>\nS\n<|user|>\nhi\n<|assistant|>\nA1\n<|user|>\nu2\n<|assistant|>\n"
    assert roles.render_segments(_msgs("hi", "A1", "u2", "A2")) == [
        ("<|user|>\nhi\n<|assistant|>\n", False), ("A1</s>", True), ("\n<|user|>\nu2\n<|assistant|>\n", False),
        ("A2</s>", True)]
    linly = get_template("labkit/linly-instruct")
    assert linly.render_prompt(_msgs("q")) == "### Instruction:q  ### Response:"
    assert linly.render_text(_msgs("q", "a"), eos_token="<eos>") == "### Instruction:q  ### Response:a<eos>"


def test_render_prompt_needs_user_last():
    for name in ("alpaca-lora/alpaca", "let/default", "llamafactory/qwen", "labkit/roles"):
        with pytest.raises(LabkitError, match="ending with a user turn"):
            get_template(name).render_prompt(_msgs("q", "a"))
        with pytest.raises(LabkitError, match="assistant"):
            get_template(name).render_segments(_msgs("q"))


def test_every_template_trains_only_answers():
    msgs = _msgs("q1", "A1", "q2", "A2")
    for name in template_names():
        t = get_template(name)
        if name.startswith("alpaca-lora/") or name == "let/vanilla":
            continue
        segs = t.render_segments(msgs)
        trained = "".join(s for s, tr in segs if tr)
        assert "A1" in trained and "A2" in trained and "q1" not in trained and "q2" not in trained, name
        assert t.render_text(msgs).startswith(t.render_prompt(msgs[:3]).split("A1")[0]), name


# ------------------------------------------------------------------------------------------------ files
@pytest.mark.parametrize("body,needle", [
    ("t:\n  system: '{system}'\n  user: '{prompt}'\n  assistant: '{content}'\n", "unknown placeholder(s) {prompt}"),
    ("t:\n  system: '{system}'\n  user: 'no placeholder'\n  assistant: '{content}'\n", "missing placeholder(s) {content}"),
    ("t:\n  system: '{system}'\n  user: '{content'\n  assistant: '{content}'\n", "literal braces"),
    ("t:\n  sytem: '{system}'\n  user: '{content}'\n  assistant: '{content}'\n", "did you mean 'system'"),
    ("t:\n  user: '{content}'\n  assistant: '{content}'\n", "has no 'system'"),
    ("t:\n  system: '{system}'\n  user: '{content}'\n  user_with_input: '{instruction}'\n  assistant: '{content}'\n",
     "missing placeholder(s) {input}"),
])
def test_labkit_placeholders_checked_on_load(tmp_path, body, needle):
    p = tmp_path / "t.yaml"
    p.write_text(body)
    with pytest.raises(LabkitError) as err:
        load_templates(p)
    assert needle in str(err.value) and str(p) in str(err.value)


@pytest.mark.parametrize("loader,body,needle", [
    (alpaca_lora.load, "a:\n  prompt_input: '{instruction}'\n  prompt_no_input: '{instruction}'\n",
     "missing placeholder(s) {input}"),
    (alpaca_lora.load, "a:\n  prompt_input: '{instruction}{input}'\n  prompt_no_input: '{instruction}{input}'\n",
     "unknown placeholder(s) {input}"),
    (let.load, "a:\n  prompt: 'Q: {content}'\n", "unknown placeholder(s) {content}"),
    (let.load, "a:\n  prompt: '{query}'\n  use_history: 'yes'\n", "expected true or false"),
    (let.load, "a:\n  promt: '{query}'\n", "did you mean 'prompt'"),
    (llamafactory.load, "a:\n  format_user: ['no placeholder']\n", "{{content}} placeholder is required"),
    (llamafactory.load, "a:\n  format_user: [{bos: true}, '{{content}}']\n", "bad slot"),
    (llamafactory.load, "a:\n  replace_eos: true\n", "replace_eos needs stop_words"),
    (llamafactory.load, "a:\n  efficient_eos: true\n", "efficient_eos needs format_user to start with a token"),
    (llamafactory.load, "a:\n  format_prefix: ['{{content}}']\n", "no placeholder allowed"),
])
def test_tool_template_files_checked_on_load(tmp_path, loader, body, needle):
    p = tmp_path / "t.yaml"
    p.write_text(body)
    with pytest.raises(LabkitError) as err:
        loader(p)
    assert needle in str(err.value) and str(p) in str(err.value)


def test_custom_template_file(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text('mine:\n  system: "{system}\\n"\n  user: "Q: {content}\\nA: "\n  assistant: "{content}"\n'
                 '  separator: "\\n"\n')
    t = load_templates(p)["mine"]
    assert isinstance(t, own.OwnTemplate) and t.qualified_name == "labkit/mine"
    assert t.render_prompt([{"role": "user", "content": "x {y}"}]) == "Q: x {y}\nA: "

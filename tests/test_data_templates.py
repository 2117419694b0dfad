"""Templates as data: standard alpaca text with/without input, Chinese variant, multi-turn, placeholder checks."""

import pytest

from labkit.data.templates import get_template, load_templates, template_names
from labkit.errors import LabkitError

ALPACA_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further context. "
                "Write a response that appropriately completes the request.\n\n"
                "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
ALPACA_NO_INPUT = ("Below is an instruction that describes a task. "
                   "Write a response that appropriately completes the request.\n\n"
                   "### Instruction:\n{instruction}\n\n### Response:\n")


def _single(user, answer="ANSWER"):
    return [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


def test_names():
    assert set(template_names()) >= {"alpaca", "alpaca_zh", "linly", "baichuan", "chat"}
    with pytest.raises(LabkitError, match="did you mean 'alpaca'"):
        get_template("alpacca")


def test_alpaca_matches_alpaca_lora():
    t = get_template("alpaca")
    assert t.render_prompt(_single("Reverse the letters.\nk d q")[:1]) == ALPACA_INPUT.format(
        instruction="Reverse the letters.", input="k d q")
    assert t.render_prompt(_single("Tell me a joke.")[:1]) == ALPACA_NO_INPUT.format(instruction="Tell me a joke.")
    segs = t.render_segments(_single("Tell me a joke."))
    assert segs == [(ALPACA_NO_INPUT.format(instruction="Tell me a joke."), False), ("ANSWER", True)]


def test_every_template_prompt_is_prefix_and_only_answers_trained():
    msgs = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "A1"},
            {"role": "user", "content": "q2"}, {"role": "assistant", "content": "A2"}]
    for name in template_names():
        t = get_template(name)
        segs = t.render_segments(msgs)
        assert [s for s, tr in segs if tr] == ["A1", "A2"], name
        assert t.render(msgs).startswith(t.render_prompt(msgs[:3])), name
        assert "q1" in t.render_prompt(msgs[:3]) and "A1" in t.render_prompt(msgs[:3]), name  # history rendered


def test_chat_multi_turn_and_system():
    t = get_template("chat")
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "A1"}, {"role": "user", "content": "u2"}]
    assert t.render_prompt(msgs) == "<|system|>\nS\n<|user|>\nhi\n<|assistant|>\nA1\n<|user|>\nu2\n<|assistant|>\n"
    zh = get_template("alpaca_zh").render_prompt([{"role": "user", "content": "把字母倒序排列。\na b"}])
    assert "### 输入:\na b" in zh and zh.endswith("### 回答:\n")
    assert get_template("baichuan").render_prompt([{"role": "user", "content": "q"}]) == "<reserved_102>q<reserved_103>"
    assert get_template("linly").render_prompt([{"role": "user", "content": "q"}]) == "### Instruction:q  ### Response:"
    custom_system = get_template("alpaca").render_prompt([{"role": "system", "content": "Be brief."},
                                                          {"role": "user", "content": "q"}])
    assert custom_system.startswith("Be brief.\n\n### Instruction:\nq")


def test_render_prompt_needs_user_last():
    with pytest.raises(LabkitError):
        get_template("alpaca").render_prompt(_single("q"))


@pytest.mark.parametrize("body,needle", [
    ("t:\n  system: '{system}'\n  user: '{prompt}'\n  assistant: '{content}'\n", "unknown placeholder(s) {prompt}"),
    ("t:\n  system: '{system}'\n  user: 'no placeholder'\n  assistant: '{content}'\n", "missing placeholder(s) {content}"),
    ("t:\n  system: '{system}'\n  user: '{content'\n  assistant: '{content}'\n", "literal braces"),
    ("t:\n  sytem: '{system}'\n  user: '{content}'\n  assistant: '{content}'\n", "did you mean 'system'"),
    ("t:\n  user: '{content}'\n  assistant: '{content}'\n", "has no 'system'"),
    ("t:\n  system: '{system}'\n  user: '{content}'\n  user_with_input: '{instruction}'\n  assistant: '{content}'\n",
     "missing placeholder(s) {input}"),
])
def test_placeholders_checked_on_load(tmp_path, body, needle):
    p = tmp_path / "t.yaml"
    p.write_text(body)
    with pytest.raises(LabkitError) as err:
        load_templates(p)
    assert needle in str(err.value) and str(p) in str(err.value)


def test_custom_template_file(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text('mine:\n  system: "{system}\\n"\n  user: "Q: {content}\\nA: "\n  assistant: "{content}"\n'
                 '  separator: "\\n"\n')
    t = load_templates(p)["mine"]
    assert t.render_prompt([{"role": "user", "content": "x {y}"}]) == "Q: x {y}\nA: "

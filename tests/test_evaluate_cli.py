"""`labkit generate` (labkit.evaluate.cli): alpaca-lora generate.py flags, base vs adapter, clear errors."""

from __future__ import annotations

import json

import pytest

from evaluate_helpers import save_toy_pair
from labkit.cli import main as labkit_main


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return save_toy_pair(tmp_path_factory.mktemp("cli"))


def _run(capsys, *argv):
    code = labkit_main(["generate", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_generate_with_adapter_json_and_compare(pair, capsys):
    base, adapter = pair
    code, out, _ = _run(capsys, "--base_model", base, "--lora_weights", adapter, "--prompt", "倒序：abcd",
                        "--prompt", "你好", "--max_new_tokens", "6", "--compare", "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["prompt"] for r in rows] == ["倒序：abcd", "你好"]
    assert all({"base", "adapter"} <= set(r) for r in rows)
    assert any(r["base"] != r["adapter"] for r in rows)
    # base answers equal a run without the adapter
    code, out2, _ = _run(capsys, "--base_model", base, "--prompt", "倒序：abcd", "--prompt", "你好",
                         "--max_new_tokens", "6", "--json", "--template", "chat")
    assert [json.loads(line)["base"] for line in out2.splitlines()] == [r["base"] for r in rows]


def test_alpaca_lora_command_line_is_accepted(pair, capsys):
    base, adapter = pair
    code, out, err = _run(capsys, "--load_8bit", "False", "--base_model", base, "--lora_weights", adapter,
                          "--prompt_template", "alpaca", "--share_gradio", "--instruction", "Tell me about alpacas.",
                          "--max_new_tokens", "4")
    assert code == 0 and "### prompt\nTell me about alpacas." in out and "### response" in out
    assert "no web UI" in err


def test_8bit_base(pair, capsys):
    pytest.importorskip("bitsandbytes")
    base, adapter = pair
    code, out, _ = _run(capsys, "--base_model", base, "--lora_weights", adapter, "--load_8bit", "--prompt", "hi",
                        "--max_new_tokens", "3", "--json")
    assert code == 0 and "adapter" in json.loads(out.splitlines()[0])


def test_prompts_from_file_and_stdin(pair, capsys, tmp_path, monkeypatch):
    import io

    base, _ = pair
    f = tmp_path / "p.txt"
    f.write_text("one\n\ntwo\\nwith input\n", encoding="utf-8")
    code, out, _ = _run(capsys, "--base_model", base, "--prompt_file", f, "--max_new_tokens", "2", "--json")
    assert [json.loads(x)["prompt"] for x in out.splitlines()] == ["one", "two\nwith input"]
    monkeypatch.setattr("sys.stdin", io.StringIO("from stdin\n"))
    code, out, _ = _run(capsys, "--base_model", base, "--max_new_tokens", "2", "--json")
    assert json.loads(out.splitlines()[0])["prompt"] == "from stdin"


@pytest.mark.parametrize("argv, message", [
    (["--base_model", "/no/such/model", "--prompt", "x"], "no such folder"),
    (["--base_model", "{base}", "--lora_weights", "/no/adapter", "--prompt", "x"], "not a LoRA adapter folder"),
    (["--base_model", "{base}", "--prompt", "x", "--template", "alpacca"], "did you mean 'alpaca'"),
    (["--base_model", "{base}", "--prompt", "x", "--load_8bit", "--load_4bit"], "choose one"),
    (["--base_model", "{base}", "--prompt", "x", "--top_p", "0"], "top_p"),
])
def test_errors_are_one_line_no_traceback(pair, capsys, argv, message):
    base, _ = pair
    argv = [a.replace("{base}", str(base)) for a in argv]
    code, _, err = _run(capsys, *argv)
    assert code == 2 and message in err and "Traceback" not in err
    assert err.startswith("error: ")


def test_no_prompt_is_a_clear_error(pair, capsys, monkeypatch):
    import io

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stdin", Tty(""))
    code, _, err = _run(capsys, "--base_model", pair[0])
    assert code == 2 and "no prompt" in err

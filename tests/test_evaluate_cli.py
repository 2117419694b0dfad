"""`labkit generate` (labkit.evaluate.cli): alpaca-lora generate.py flags, base vs adapter, clear errors."""

from __future__ import annotations

import json

import pytest

from evaluate_helpers import save_toy_pair
from labkit.cli import main as labkit_main


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return save_toy_pair(tmp_path_factory.mktemp("cli"), template="labkit/roles")


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
                         "--max_new_tokens", "6", "--json", "--template", "labkit/roles")
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
    (["--base_model", "{base}", "--prompt", "x", "--template", "alpacca"], "did you mean 'alpaca-lora/alpaca'"),
    (["--base_model", "{base}", "--prompt", "x", "--load_8bit", "--load_4bit"], "choose one"),
    (["--base_model", "{base}", "--prompt", "x", "--top_p", "0"], "top_p"),
])
def test_errors_are_one_line_no_traceback(pair, capsys, argv, message):
    base, _ = pair
    argv = [a.replace("{base}", str(base)) for a in argv]
    code, _, err = _run(capsys, *argv)
    assert code == 2 and message in err and "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("error: ")] == [err.splitlines()[-1]]


def test_no_prompt_is_a_clear_error(pair, capsys, monkeypatch):
    import io

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stdin", Tty(""))
    code, _, err = _run(capsys, "--base_model", pair[0])
    assert code == 2 and "no prompt" in err


def _empty_copy(adapter, dst):
    """The adapter with every lora_B zeroed: what the seed's "empty adapter" looked like."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(adapter, dst)
    tensors = load_file(str(dst / "adapter_model.safetensors"))
    tensors = {k: torch.zeros_like(v) if "lora_B" in k else v for k, v in tensors.items()}
    save_file(tensors, str(dst / "adapter_model.safetensors"), metadata={"format": "pt"})
    return dst


def test_empty_adapter_is_refused_unless_allowed(pair, capsys, tmp_path):
    base, adapter = pair
    empty = _empty_copy(adapter, tmp_path / "empty")
    code, out, err = _run(capsys, "--base_model", base, "--lora_weights", empty, "--prompt", "hi",
                          "--max_new_tokens", "2", "--template", "none")
    assert code == 2 and out == "" and "Traceback" not in err and err.splitlines()[-1].startswith("error: ")
    assert str(empty / "adapter_model.safetensors") in err and "every lora_B is zero" in err
    assert "--allow_empty_adapter" in err
    code, out, _ = _run(capsys, "--base_model", base, "--lora_weights", empty, "--prompt", "hi",
                        "--max_new_tokens", "2", "--json", "--allow_empty_adapter", "--template", "none")
    assert code == 0 and "adapter" in json.loads(out.splitlines()[0])


@pytest.mark.parametrize("damage", ["truncate", "header"])
def test_damaged_base_weights_are_named(pair, capsys, tmp_path, damage):
    import os
    import shutil

    base, _ = pair
    folder = tmp_path / "base"
    shutil.copytree(base, folder)
    weights = folder / "model.safetensors"
    if damage == "truncate":
        os.truncate(weights, weights.stat().st_size // 3)
    else:
        with open(weights, "r+b") as fh:
            fh.write(b"\x11" * 16)
    code, out, err = _run(capsys, "--base_model", folder, "--prompt", "x", "--max_new_tokens", "2")
    assert code == 2 and out == "" and "Traceback" not in err
    assert str(weights) in err and ("truncated" in err if damage == "truncate" else "corrupt" in err)


def test_recorded_template_that_no_longer_resolves_names_the_file(pair, capsys, tmp_path):
    import shutil

    _, adapter = pair
    old = tmp_path / "old"
    shutil.copytree(adapter, old)
    (old / "labkit_train.json").write_text(json.dumps({"template": "no-such-template"}))
    code, out, err = _run(capsys, "--base_model", pair[0], "--lora_weights", old, "--prompt", "x")
    assert code == 2 and out == "" and str(old / "labkit_train.json") in err and "--template" in err


def test_tiny_names_follow_the_one_rule(capsys):
    code, out, _ = _run(capsys, "--base_model", "tiny-baichuan", "--prompt", "你好", "--max_new_tokens", "2", "--json",
                        "--template", "none")
    assert code == 0 and json.loads(out.splitlines()[0])["prompt"] == "你好"
    code, _, err = _run(capsys, "--base_model", "baichuan-inc/Baichuan-7B", "--prompt", "x")
    assert code == 2 and "never downloads" in err and "tiny-llama" in err

"""`labkit data render` through labkit.cli.main: the tools' own training text and prompt per record, errors named."""

import json
from pathlib import Path

import pytest

from labkit.cli import main

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="module")
def golden_file(tmp_path_factory):
    """The golden conversations as an alpaca data file (what a user would pass)."""
    raw = json.loads((GOLDEN / "conversations.json").read_text(encoding="utf-8"))
    p = tmp_path_factory.mktemp("render") / "golden.json"
    p.write_text(json.dumps([{k: v for k, v in c.items() if k != "id"} for c in raw], ensure_ascii=False),
                 encoding="utf-8")
    return p, [c["id"] for c in raw]


def _lines(capsys, *argv):
    code = main(["data", "render", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("template", ["let/baichuan", "let/default", "llamafactory/qwen", "llamafactory/baichuan",
                                      "llamafactory/llama2"])
def test_render_json_equals_the_tools_rendering(golden_file, capsys, template):
    path, ids = golden_file
    source, name = template.split("/")
    want = json.loads((GOLDEN / f"{source}.json").read_text(encoding="utf-8"))["renderings"][name]
    code, out, err = _lines(capsys, str(path), "--template", template, "--json")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["index"] for r in rows] == list(range(len(ids)))
    for r, cid in zip(rows, ids):
        assert {"index", "text", "prompt"} <= set(r)
        assert r["text"] == want[cid]["text"] and r["prompt"] == want[cid]["prompt"], cid
        assert r["segments"] == want[cid]["segments"] and r["bos"] == want[cid]["bos"]


def test_render_readable_and_eos_of_the_tiny_tokenizer(tmp_path, capsys):
    from labkit.models.tiny import tiny_tokenizer_path

    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"instruction": "Reverse.", "input": "a b", "output": "b a"}) + "\n")
    code, out, _ = _lines(capsys, str(p), "--template", "alpaca-lora/alpaca", "--json",
                          "--tokenizer", str(tiny_tokenizer_path()))
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and row["text"].endswith("### Input:\na b\n\n### Response:\nb a</s>") and row["bos"]
    assert not row["text"].startswith("<s>") and row["prompt"].endswith("### Response:\n")
    code, out, _ = _lines(capsys, str(p), "--template", "alpaca-lora/alpaca")
    assert code == 0 and "alpaca-lora/alpaca" in out and "[prompt]" in out and "[trained]\nb a</s>" in out
    assert "[inference prompt]" in out


def test_render_registry_dataset(tmp_path, capsys):
    (tmp_path / "dataset_info.json").write_text(json.dumps(
        {"chat": {"file_name": "c.json", "formatting": "sharegpt"}}))
    (tmp_path / "c.json").write_text(json.dumps([{"conversations": [
        {"from": "human", "value": "q1"}, {"from": "gpt", "value": "a1"},
        {"from": "human", "value": "q2"}, {"from": "gpt", "value": "a2"}]}]))
    code, out, _ = _lines(capsys, "--registry", str(tmp_path / "dataset_info.json"), "--dataset", "chat",
                          "--template", "let/baichuan", "--json")
    row = json.loads(out)
    assert code == 0 and row["text"] == "<reserved_102>q1<reserved_103>a1</s><reserved_102>q2<reserved_103>a2</s>"
    assert row["prompt"] == "<reserved_102>q1<reserved_103>a1<reserved_102>q2<reserved_103>"


@pytest.mark.parametrize("argv,needle,code", [
    (["--template", "alpaca"], "alpaca-lora/alpaca, let/alpaca, llamafactory/alpaca", 2),
    (["--template", "default"], "let/default, llamafactory/default", 2),
    (["--template", "let/baichaun"], "did you mean 'let/baichuan'", 2),
    (["--template", "alpaca-lora/alpaca"], "golden.json record 17: the conversation has a system prompt", 2),
])
def test_render_errors_are_one_line_naming_the_problem(golden_file, capsys, argv, needle, code):
    path, _ = golden_file
    got, out, err = _lines(capsys, str(path), *argv)
    assert got == code and out == "" and err.startswith("error: ") and needle in err and "Traceback" not in err


def test_render_bad_data_and_missing_input(tmp_path, capsys):
    p = tmp_path / "bad.json"
    p.write_text('[{"instruction": "a", "output": ""}]')
    code, _, err = _lines(capsys, str(p), "--template", "labkit/roles")
    assert code == 1 and "empty response" in err
    code, _, err = _lines(capsys, "--template", "labkit/roles")
    assert code == 2 and "nothing to render" in err

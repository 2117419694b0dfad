"""`labkit data check`: exit 0/1/2, the exact --json object, never a traceback for bad data."""

import json
import subprocess
import sys

import pytest

from labkit.data.cli import main

GOOD = [{"instruction": "a", "input": "", "output": "b"}, {"instruction": "c", "input": "", "output": "d"}]


def _run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _json(capsys, *argv):
    code, out, _ = _run(capsys, "check", *argv, "--json")
    lines = out.strip().splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert list(obj) == ["read", "kept", "rejected", "duplicates", "errors"]
    for e in obj["errors"]:
        assert list(e) == ["file", "index", "line", "field", "reason"]
    return code, obj


def test_clean_file_exits_0(tmp_path, capsys):
    p = tmp_path / "a.json"
    p.write_text(json.dumps(GOOD + [GOOD[0]]))
    code, obj = _json(capsys, str(p))
    assert code == 0 and obj == {"read": 3, "kept": 3, "rejected": 0, "duplicates": 1, "errors": []}
    code, out, _ = _run(capsys, "check", str(p))
    assert code == 0 and "read 3, kept 3, rejected 0, duplicates 1" in out


def test_rejected_records_exit_1(tmp_path, capsys):
    p = tmp_path / "a.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in GOOD + [{"instruction": "x", "output": ""}, None]) + "\n")
    code, obj = _json(capsys, str(p))
    assert code == 1 and obj["read"] == 4 and obj["kept"] == 2 and obj["rejected"] == 2
    assert obj["errors"][0] == {"file": str(p), "index": 2, "line": 3, "field": "output", "reason": "empty response"}
    code, out, _ = _run(capsys, "check", str(p), "--lenient")
    assert code == 1 and "would be dropped" in out and "record 2 (line 3) field 'output'" in out


@pytest.mark.parametrize("content", [None, "", "not json at all", '{"a": 1,\n "b": 2}', "[{]"])
def test_unusable_input_exit_2(tmp_path, capsys, content):
    p = tmp_path / "x.json"
    if content is not None:
        p.write_text(content)
    code, obj = _json(capsys, str(p))
    assert code == 2 and obj["errors"] and obj["errors"][0]["file"] == str(p)


def test_registry_modes(tmp_path, capsys):
    (tmp_path / "d.json").write_text(json.dumps(GOOD))
    reg = tmp_path / "dataset_info.json"
    reg.write_text(json.dumps({"d": {"file_name": "d.json"}, "hub": {"hf_hub_url": "x/y"},
                               "mllm": {"file_name": "m.json", "formatting": "sharegpt",
                                        "columns": {"messages": "messages", "images": "images"}}}))
    code, obj = _json(capsys, "--registry", str(reg), "--dataset", "d")
    assert code == 0 and obj["kept"] == 2
    code, out, _ = _run(capsys, "check", "--registry", str(reg))  # all local entries; hub-only skipped
    assert code == 0 and "skipped 'hub'" in out and "skipped 'mllm'" in out
    code, obj = _json(capsys, "--registry", str(reg), "--dataset", "hub")
    assert code == 2 and "not available offline" in obj["errors"][0]["reason"]
    reg.write_text(json.dumps({"d": {"file_name": "d.json", "formatting": "alpacca"}}))
    code, obj = _json(capsys, "--registry", str(reg), "--dataset", "d")
    assert code == 2 and "did you mean 'alpaca'" in obj["errors"][0]["reason"]
    reg.write_text("{")
    code, obj = _json(capsys, "--registry", str(reg), "--dataset", "d")
    assert code == 2 and "invalid JSON" in obj["errors"][0]["reason"]


def test_bundled_datasets_check_clean(capsys):
    code, obj = _json(capsys, "--dataset", "tasks,tasks_test,negatives,negatives_test,alpaca_1058_100negative,dialog")
    assert code == 0 and obj["rejected"] == 0 and obj["read"] > 3000


def test_usage_errors(capsys):
    assert main([]) == 2
    assert main(["check"]) == 2
    assert main(["check", "--help"]) == 0
    assert main(["check", "--bogus"]) == 2


def test_no_traceback_through_labkit_command(tmp_path):
    p = tmp_path / "bad.json"
    p.write_bytes(b"[\xff\xfe")
    r = subprocess.run([sys.executable, "-m", "labkit", "data", "check", str(p)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr + r.stdout and "UTF-8" in r.stdout


def test_check_keeps_system_and_history(tmp_path, capsys):
    """Issue 11.4: `labkit data check file.json` without a registry used to drop system and history silently."""
    from labkit.data.registry import load_files

    rec = {"instruction": "q2", "input": "", "output": "a2", "system": "S", "history": [["q1", "a1"]]}
    p = tmp_path / "h.json"
    p.write_text(json.dumps([rec, {**rec, "history": "not a list"}]))
    code, obj = _json(capsys, str(p))
    assert code == 1 and (obj["kept"], obj["rejected"]) == (1, 1) and obj["errors"][0]["field"] == "history"
    ex, _ = load_files([p], strict=False)
    assert [m["role"] for m in ex[0]["messages"]] == ["system", "user", "assistant", "user", "assistant"]


def test_check_pretraining_text_is_one_error(tmp_path, capsys):
    p = tmp_path / "c4.jsonl"
    p.write_text("".join(json.dumps({"text": f"doc {k}"}) + "\n" for k in range(250)))
    code, obj = _json(capsys, str(p))
    assert code == 2 and (obj["read"], obj["rejected"]) == (250, 250) and len(obj["errors"]) == 1
    assert "pre-training text" in obj["errors"][0]["reason"]

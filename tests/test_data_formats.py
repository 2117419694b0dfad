"""Readers: alpaca/sharegpt, JSON arrays and JSONL (streamed), every invalid case reported with file/index/line/field."""

import json

import pytest

from labkit.data import formats
from labkit.data.formats import read_file


def _write(tmp_path, name, text, mode="w"):
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


def _array(records):
    return "[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n]\n"


def _check(report):
    assert report.read == report.kept + report.rejected
    return report


def test_alpaca_array_with_history_system_task(tmp_path):
    recs = [
        {"instruction": "Reverse.", "input": "a b", "output": "b a", "task": "reverse"},
        {"instruction": "Hi", "input": "", "output": "Hello", "system": "Be nice.",
         "history": [["q1", "a1"], ["q2", "a2"]]},
        {"instruction": "你好", "input": None, "output": "你好！"},
    ]
    ex, rep = read_file(_write(tmp_path, "a.json", _array(recs)), columns={"system": "system", "history": "history"})
    _check(rep)
    assert rep.kept == 3 and rep.rejected == 0
    assert ex[0] == {"messages": [{"role": "user", "content": "Reverse.\na b"}, {"role": "assistant", "content": "b a"}],
                     "source": "a", "index": 0, "task": "reverse"}
    assert [m["role"] for m in ex[1]["messages"]] == ["system", "user", "assistant", "user", "assistant", "user",
                                                       "assistant"]
    assert ex[1]["messages"][1]["content"] == "q1" and ex[1]["task"] == ""
    assert ex[2]["messages"][0]["content"] == "你好"


def test_jsonl_and_bom(tmp_path):
    recs = [{"instruction": f"i{k}", "output": f"o{k}"} for k in range(3)]
    text = "\n".join(json.dumps(r) for r in recs) + "\n\n"
    ex, rep = read_file(_write(tmp_path, "a.jsonl", b"\xef\xbb\xbf" + text.encode()))
    assert _check(rep).kept == 3 and [e["index"] for e in ex] == [0, 1, 2]
    ex2, rep2 = read_file(_write(tmp_path, "b.json", b"\xef\xbb\xbf" + _array(recs).encode()))
    assert rep2.kept == 3 and ex2[2]["messages"] == ex[2]["messages"]


def test_sharegpt_conversations_and_messages(tmp_path):
    conv = [{"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "q"},
                               {"from": "gpt", "value": "a"}, {"from": "human", "value": "q2"},
                               {"from": "gpt", "value": "a2"}], "task": "chat"}]
    ex, rep = read_file(_write(tmp_path, "c.json", _array(conv)))
    assert rep.kept == 1 and ex[0]["task"] == "chat"
    assert [m["role"] for m in ex[0]["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    msgs = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]
    ex, rep = read_file(_write(tmp_path, "m.jsonl", json.dumps(msgs[0]) + "\n"))
    assert rep.kept == 1 and ex[0]["messages"][1] == {"role": "assistant", "content": "a"}
    # LLaMA-Factory tags: custom role/content names
    custom = [{"dialog": [{"who": "me", "text": "q"}, {"who": "bot", "text": "a"}]}]
    tags = {"role_tag": "who", "content_tag": "text", "user_tag": "me", "assistant_tag": "bot"}
    ex, rep = read_file(_write(tmp_path, "t.json", _array(custom)), "sharegpt", {"messages": "dialog"}, tags)
    assert rep.kept == 1 and ex[0]["messages"][0] == {"role": "user", "content": "q"}


BAD_ALPACA = [
    (None, None, "record is null"),
    ([1, 2], None, "record is a list"),
    ({"instrution": "x", "output": "y"}, "instruction", "missing field 'instruction' (found 'instrution'"),
    ({"instruction": "x"}, "output", "missing field 'output'"),
    ({"instruction": 5, "output": "y"}, "instruction", "expected a string, got int"),
    ({"instruction": "x", "output": ["y"]}, "output", "expected a string, got list"),
    ({"instruction": "x", "output": "  "}, "output", "empty response"),
    ({"instruction": "", "input": "", "output": "y"}, "instruction", "empty instruction"),
    ({"instruction": "x", "output": "y", "history": [["q"]]}, "history[0]", "pair"),
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}, None, "mixes formats"),
]


@pytest.mark.parametrize("record,field,reason", BAD_ALPACA)
def test_bad_alpaca_records(tmp_path, record, field, reason):
    good = {"instruction": "ok", "input": "", "output": "fine"}
    p = _write(tmp_path, "bad.json", _array([good, record, good]))
    ex, rep = read_file(p, columns={"history": "history"} if "history" in str(record) else None)
    _check(rep)
    assert rep.read == 3 and rep.kept == 2 and rep.rejected == 1 and not rep.unusable
    err = rep.errors[0]
    assert err.file == str(p) and err.index == 1 and err.line == 3
    assert err.field == field and reason in err.reason


BAD_SHAREGPT = [
    ({"conversations": []}, "conversations", "empty conversation"),
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "human", "value": "q"},
                        {"from": "gpt", "value": "a"}]}, "conversations[1].from", "roles do not alternate"),
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"},
                        {"from": "human", "value": "q2"}]}, "conversations", "ends without an assistant turn"),
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}]}, "conversations[1].from",
     "unknown role 'bot'"),
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": ""}]}, "conversations[1].value",
     "empty response"),
    ({"conversations": [{"from": "human", "value": 3}, {"from": "gpt", "value": "a"}]}, "conversations[0].value",
     "expected a string"),
    ({"conversations": "hi"}, "conversations", "expected a list"),
    ({"instruction": "x", "output": "y"}, None, "mixes formats"),
]


@pytest.mark.parametrize("record,field,reason", BAD_SHAREGPT)
def test_bad_sharegpt_records(tmp_path, record, field, reason):
    good = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    p = _write(tmp_path, "bad.jsonl", "\n".join(json.dumps(r) for r in [good, record]) + "\n")
    ex, rep = read_file(p)
    _check(rep)
    assert rep.kept == 1 and rep.rejected == 1
    err = rep.errors[0]
    assert (err.index, err.line, err.field) == (1, 2, field) and reason in err.reason


def test_invalid_json_array_is_unusable_with_line_and_column(tmp_path):
    text = '[\n{"instruction": "a", "output": "b"},\n{"instruction": "a" "output": "b"}\n]'
    ex, rep = read_file(_write(tmp_path, "x.json", text))
    _check(rep)
    assert rep.unusable and ex == []
    err = rep.errors[0]
    assert err.line == 3 and "column 21" in err.reason and "invalid JSON" in err.reason and err.index == 1


def test_invalid_jsonl_line_is_rejected(tmp_path):
    text = '{"instruction": "a", "output": "b"}\n{"instruction": \n{"instruction": "c", "output": "d"}\n'
    ex, rep = read_file(_write(tmp_path, "x.jsonl", text))
    _check(rep)
    assert rep.kept == 2 and rep.rejected == 1 and not rep.unusable
    assert rep.errors[0].line == 2 and "invalid JSON at line 2 column" in rep.errors[0].reason


@pytest.mark.parametrize("content,reason", [
    ("", "empty"),
    ("   \n\n", "empty"),
    ('{"data": [{"instruction": "a",\n "output": "b"}]}', "top-level JSON is an object"),
    ('"just a string"', "top-level JSON is a str"),
    ("instruction,output\na,b\n", "not JSON"),
    ("[1, 2,]", "trailing comma"),
    ('[{"instruction": "a", "output": "b"}', "missing ']'"),
    ('[{"instruction": "a", "output": "b"}] extra', "extra data"),
])
def test_unusable_files(tmp_path, content, reason):
    ex, rep = read_file(_write(tmp_path, "f.json", content))
    _check(rep)
    assert rep.unusable and ex == [] and any(reason in e.reason for e in rep.errors)


def test_missing_file_and_folder(tmp_path):
    _, rep = read_file(tmp_path / "nope.json")
    assert rep.unusable and "not found" in rep.errors[0].reason
    _, rep = read_file(tmp_path)
    assert rep.unusable


def test_non_utf8(tmp_path):
    bad = '{"instruction": "a", "output": "b"}\n'.encode() + b'{"instruction": "\xff\xfe", "output": "b"}\n'
    ex, rep = read_file(_write(tmp_path, "n.jsonl", bad))
    assert rep.kept == 1 and rep.rejected == 1 and rep.errors[0].line == 2 and "UTF-8" in rep.errors[0].reason
    arr = b'[\n{"instruction": "a", "output": "b"},\n{"instruction": "\xe4\xb8", "output": "b"}\n]'
    ex, rep = read_file(_write(tmp_path, "n.json", arr))
    _check(rep)
    assert rep.unusable and rep.errors[0].line == 3 and "UTF-8" in rep.errors[0].reason
    gbk = "[{\"instruction\": \"你好\", \"output\": \"好\"}]".encode("gbk")
    _, rep = read_file(_write(tmp_path, "g.json", gbk))
    assert rep.unusable and "UTF-8" in rep.errors[0].reason


def test_streaming_array_across_tiny_chunks(tmp_path, monkeypatch):
    recs = [{"instruction": f"第{k}条 {'x' * (k % 13)}", "input": "", "output": str(k * 1234567), "task": "t"}
            for k in range(500)]
    p = _write(tmp_path, "big.json", "  " + json.dumps(recs, ensure_ascii=False, indent=2))
    monkeypatch.setattr(formats, "CHUNK", 17)  # every record spans chunk boundaries, numbers and CJK bytes too
    ex, rep = read_file(p)
    assert rep.kept == 500 and [e["messages"][1]["content"] for e in ex] == [str(k * 1234567) for k in range(500)]
    lines = [r[1] for r in formats.iter_json_records(p)]
    assert lines[0] == 2 and lines[1] == 8  # indent=2: each record spans 6 lines
    gen = formats.iter_json_records(p)
    assert next(gen)[0] == 0  # a generator: records come one at a time


def test_detect_format():
    assert formats.detect_format({"instruction": "a", "output": "b"}) == "alpaca"
    assert formats.detect_format({"messages": []}) == "sharegpt"
    assert formats.detect_format({"foo": 1}) is None
    assert formats.detect_format(None) is None

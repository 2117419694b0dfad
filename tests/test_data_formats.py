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
    user = {"role": "user", "content": "Reverse.\na b", "instruction": "Reverse.", "input": "a b"}
    assert ex[0] == {"messages": [user, {"role": "assistant", "content": "b a"}], "source": "a", "index": 0,
                     "task": "reverse"}
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


# ------------------------------------------------------------------------------------------------ issue 12.8
@pytest.mark.parametrize("line3,col,needle", [
    ('{"instruction": "e", "output": "f"', 35, "Expecting ',' delimiter"),  # was reported as column 1
    ('{"instruction": "e", "output": "f" "x": 1}', 36, "Expecting ',' delimiter"),
    ('{"instruction": "e", "output": "f', 32, "Unterminated string starting at this position"),
])
def test_bad_jsonl_line_reports_the_real_column(tmp_path, line3, col, needle):
    good = '{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": "d"}\n'
    for ending in ("\n", "\r\n", ""):
        ex, rep = read_file(_write(tmp_path, "bad_line.jsonl", good + line3 + ending))
        _check(rep)
        assert rep.kept == 2 and rep.rejected == 1
        err = rep.errors[0]
        assert (err.index, err.line) == (2, 3) and f"line 3 column {col}: {needle}" in err.reason, err.reason


def test_truncated_array_counts_complete_records(tmp_path):
    recs = [{"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"}]
    text = _array(recs)
    cut = text[: text.index('"output": "d"') + len('"output": "')]  # ends inside record 1's string
    ex, rep = read_file(_write(tmp_path, "cut.json", cut))
    _check(rep)
    assert ex == [] and rep.unusable
    assert (rep.read, rep.kept, rep.rejected) == (2, 0, 2)  # record 0 complete (read), record 1 cut (read)
    assert rep.datasets[0].read == 2 and rep.datasets[0].rejected == 2
    (err,) = rep.errors
    assert err.index == 1 and err.line == 3
    assert "Unterminated string starting at this position" in err.reason and "cut off?" in err.reason
    assert "the 1 complete record before it is not used" in err.reason and err.reason.endswith("fix it)")
    ex, rep = read_file(_write(tmp_path, "cut2.json", text.rstrip().rstrip("]")))  # both records complete
    _check(rep)
    assert (rep.read, rep.rejected) == (2, 2) and rep.errors[0].index is None
    assert "after record 1" in rep.errors[0].reason and "the 2 complete records before it" in rep.errors[0].reason


# ------------------------------------------------------------------------------------------------ issue 11.4 (data)
def test_alpaca_input_columns_and_line_breaks(tmp_path):
    recs = [{"instruction": "Reverse.\nk d", "input": "", "output": "d k"},
            {"instruction": "Reverse.", "input": "k\nd", "output": "d k"}]
    ex, rep = read_file(_write(tmp_path, "a.json", _array(recs)))
    assert ex[0]["messages"][0] == {"role": "user", "content": "Reverse.\nk d"}  # no input: no split, no keys
    assert ex[1]["messages"][0] == {"role": "user", "content": "Reverse.\nk\nd", "instruction": "Reverse.",
                                    "input": "k\nd"}


def test_system_and_history_kept_without_registry(tmp_path):
    rec = {"instruction": "q3", "input": "", "output": "a3", "system": "S", "history": [["q1", "a1"], ["q2", "a2"]]}
    for name, text in (("h.json", _array([rec])), ("h.jsonl", json.dumps(rec) + "\n")):
        ex, rep = read_file(_write(tmp_path, name, text))
        assert rep.kept == 1 and [(m["role"], m["content"]) for m in ex[0]["messages"]] == [
            ("system", "S"), ("user", "q1"), ("assistant", "a1"), ("user", "q2"), ("assistant", "a2"),
            ("user", "q3"), ("assistant", "a3")]
    sg = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}], "system": "S"}
    ex, _ = read_file(_write(tmp_path, "s.json", _array([sg])))
    assert ex[0]["messages"][0] == {"role": "system", "content": "S"}


@pytest.mark.parametrize("record", [
    {"instruction": "call it", "output": "ok", "tools": [{"name": "f", "parameters": {}}]},
    {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
     "tools": '[{"name": "get_weather"}]'},
])
def test_records_with_tools_are_refused_not_trimmed(tmp_path, record):
    ok = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}], "tools": "[]"} \
        if "conversations" in record else {"instruction": "q", "output": "a", "tools": []}
    ex, rep = read_file(_write(tmp_path, "t.json", _array([ok, record])))
    _check(rep)
    assert rep.kept == 1 and rep.rejected == 1
    err = rep.errors[0]
    assert (err.index, err.field) == (1, "tools") and "refused rather than trimmed" in err.reason


@pytest.mark.parametrize("name,text", [
    ("c4.jsonl", "".join(json.dumps({"text": f"document {k} " * 5}) + "\n" for k in range(300))),
    ("wiki.json", _array([{"text": f"article {k}"} for k in range(300)])),
])
def test_pretraining_text_gets_one_message(tmp_path, name, text):
    ex, rep = read_file(_write(tmp_path, name, text))
    _check(rep)
    assert ex == [] and rep.unusable and (rep.read, rep.rejected) == (300, 300)
    (err,) = rep.errors
    assert "pre-training text" in err.reason and "(300 records)" in err.reason and "instruction/response" in err.reason


def test_pretraining_registry_entry_gets_one_message(tmp_path):
    from labkit.data.registry import load_datasets
    from labkit.errors import LabkitError

    (tmp_path / "dataset_info.json").write_text(json.dumps({"c4_demo": {"file_name": "c4.jsonl",
                                                                         "columns": {"prompt": "text"}}}))
    _write(tmp_path, "c4.jsonl", "".join(json.dumps({"text": f"doc {k}"}) + "\n" for k in range(120)))
    with pytest.raises(LabkitError) as err:
        load_datasets("c4_demo", dataset_dir=tmp_path)
    msg = str(err.value)
    assert err.value.exit_code == 2 and msg.count("pre-training text") == 1 and "record 5" not in msg

"""dataset_info.json registry (LLaMA-Factory format), load_datasets, strict vs lenient, duplicates, bundled data."""

import json

import pytest

from labkit.data.registry import load_datasets, load_files, read_registry
from labkit.errors import LabkitError

# Entries as they appear in LLaMA-Factory's data/dataset_info.json (and LLaMA-Efficient-Tuning's older one).
LLAMA_FACTORY_INFO = {
    "identity": {"file_name": "identity.json"},
    "alpaca_en_demo": {"file_name": "alpaca_en_demo.json"},
    "alpaca_zh": {"file_name": "alpaca_data_zh_51k.json", "file_sha1": "e655af3db557a4197f7b0cf92e1986b08fae6311"},
    "glaive_toolcall_en_demo": {"file_name": "glaive_toolcall_en_demo.json", "formatting": "sharegpt",
                                "columns": {"messages": "conversations", "tools": "tools"}},
    "sharegpt_messages_demo": {"file_name": "messages_demo.jsonl", "formatting": "sharegpt",
                               "columns": {"messages": "messages"},
                               "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                        "assistant_tag": "assistant", "system_tag": "system"}},
    "alpaca_en": {"hf_hub_url": "llamafactory/alpaca_en", "ms_hub_url": "llamafactory/alpaca_en"},
    "belle_multiturn": {"script_url": "belle_multiturn", "formatting": "sharegpt"},
    "firefly": {"hf_hub_url": "YeungNLP/firefly-train-1.1M",
                "columns": {"prompt": "input", "query": "", "response": "target", "history": ""}},
    "ultrachat_200k": {"hf_hub_url": "HuggingFaceH4/ultrachat_200k", "formatting": "sharegpt",
                       "columns": {"messages": "messages"},
                       "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                "assistant_tag": "assistant"}, "split": "train_sft"},
    "dpo_en_demo": {"file_name": "dpo_en_demo.json", "ranking": True, "formatting": "sharegpt",
                    "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}},
}


@pytest.fixture
def lf_dir(tmp_path):
    (tmp_path / "dataset_info.json").write_text(json.dumps(LLAMA_FACTORY_INFO, indent=2))
    alpaca = [{"instruction": "hi", "input": "", "output": "Hello! I am {{name}}."},
              {"instruction": "who are you", "input": "", "output": "I am {{name}}, by {{author}}."}]
    (tmp_path / "identity.json").write_text(json.dumps(alpaca))
    (tmp_path / "alpaca_en_demo.json").write_text(json.dumps(
        [{"instruction": f"Give {k} a name", "input": "x" * k, "output": f"name{k}"} for k in range(5)]))
    (tmp_path / "alpaca_data_zh_51k.json").write_text(json.dumps(
        [{"instruction": "保持健康的三个提示。", "input": "", "output": "1. 运动。"}], ensure_ascii=False))
    (tmp_path / "glaive_toolcall_en_demo.json").write_text(json.dumps(
        [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}], "tools": "[]"}]))
    (tmp_path / "messages_demo.jsonl").write_text(json.dumps(
        {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "q"},
                      {"role": "assistant", "content": "a"}]}) + "\n")
    return tmp_path


def test_llama_factory_registry_local_entries_load(lf_dir):
    names = "identity,alpaca_en_demo,alpaca_zh,glaive_toolcall_en_demo,sharegpt_messages_demo"
    ex, rep = load_datasets(names, dataset_dir=lf_dir)
    assert rep.kept == 10 and rep.rejected == 0 and rep.read == 10
    assert {e["source"] for e in ex} == set(names.split(","))
    msgs = next(e for e in ex if e["source"] == "sharegpt_messages_demo")["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
    assert [r["taken"] for r in rep.mix] == [2, 5, 1, 1, 1]


@pytest.mark.parametrize("name,needle", [
    ("alpaca_en", "not available offline (hf_hub_url 'llamafactory/alpaca_en')"),
    ("belle_multiturn", "not available offline (script_url"),
    ("ultrachat_200k", "put the file here"),
    ("dpo_en_demo", "ranking"),
    ("alpaca_enn", "unknown dataset 'alpaca_enn'"),
])
def test_registry_errors(lf_dir, name, needle):
    with pytest.raises(LabkitError) as err:
        load_datasets(name, dataset_dir=lf_dir)
    assert needle in str(err.value) and err.value.exit_code == 2
    if "offline" in needle:
        assert 'set "file_name"' in str(err.value)


def _registry(tmp_path, entry, records=None):
    (tmp_path / "dataset_info.json").write_text(json.dumps({"d": entry}))
    if records is not None:
        (tmp_path / "d.json").write_text(json.dumps(records))
    return tmp_path


GOOD = [{"instruction": "a", "input": "", "output": "b"}, {"instruction": "c", "input": "", "output": "d"}]


@pytest.mark.parametrize("entry,needle", [
    ({"file_name": "d.json", "formatting": "alpacca"}, "unknown formatting 'alpacca' (did you mean 'alpaca'?)"),
    ({"file_name": "d.json", "columns": {"promt": "instruction"}}, "did you mean 'prompt'"),
    ({"file_nam": "d.json"}, "did you mean 'file_name'"),
    ({"file_name": "d.json", "columns": {"messages": "conversations"}}, "does not apply to alpaca"),
    ({"file_name": "d.json", "num_samples": -1}, "num_samples"),
    ({"file_name": "d.json", "tags": {"role": "from"}}, "tags key"),
])
def test_bad_entries(tmp_path, entry, needle):
    d = _registry(tmp_path, entry, GOOD)
    with pytest.raises(LabkitError) as err:
        load_datasets("d", dataset_dir=d)
    assert needle in str(err.value) and str(d / "dataset_info.json") in str(err.value)


def test_columns_naming_absent_field(tmp_path):
    d = _registry(tmp_path, {"file_name": "d.json", "columns": {"prompt": "question", "response": "output"}}, GOOD)
    with pytest.raises(LabkitError) as err:
        load_datasets("d", dataset_dir=d, strict=False)
    assert "columns.prompt" in str(err.value) and "'question' which no record has" in str(err.value)
    assert err.value.exit_code == 2


def test_missing_file_and_bad_registry(tmp_path):
    d = _registry(tmp_path, {"file_name": "absent.json"})
    with pytest.raises(LabkitError) as err:
        load_datasets("d", dataset_dir=d, strict=False)
    assert "absent.json" in str(err.value) and "not found" in str(err.value) and err.value.exit_code == 2
    (tmp_path / "dataset_info.json").write_text("{not json")
    with pytest.raises(LabkitError) as err:
        read_registry(tmp_path / "dataset_info.json")
    assert "invalid JSON at line 1" in str(err.value)
    (tmp_path / "dataset_info.json").write_text("[]")
    with pytest.raises(LabkitError):
        read_registry(tmp_path / "dataset_info.json")
    with pytest.raises(LabkitError, match="registry not found"):
        load_datasets("d", dataset_dir=tmp_path / "nowhere")


def test_strict_vs_lenient(tmp_path):
    d = _registry(tmp_path, {"file_name": "d.json"}, GOOD + [{"instruction": "e", "output": ""}])
    with pytest.raises(LabkitError) as err:
        load_datasets("d", dataset_dir=d)
    assert err.value.exit_code == 1 and "record 2" in str(err.value) and "empty response" in str(err.value)
    ex, rep = load_datasets("d", dataset_dir=d, strict=False)
    assert len(ex) == 2 and rep.read == 3 and rep.kept == 2 and rep.rejected == 1
    assert rep.to_frame().iloc[0]["reason"] == "empty response"


def test_duplicates_reported_and_kept(tmp_path):
    d = _registry(tmp_path, {"file_name": "d.json"}, GOOD + [GOOD[0], GOOD[0]])
    ex, rep = load_datasets("d", dataset_dir=d)
    assert len(ex) == 4 and rep.duplicates == 2 and rep.duplicate_records[0]["first"] == "d#0"
    ex, rep = load_datasets("d", dataset_dir=d, drop_duplicates=True, strict=False)
    assert len(ex) == 2 and rep.read == 4 and rep.kept == 2 and rep.rejected == 2 and rep.consistent


def test_num_samples_and_folder(tmp_path):
    (tmp_path / "parts").mkdir()
    for k in range(3):
        (tmp_path / "parts" / f"p{k}.jsonl").write_text(json.dumps({"instruction": f"i{k}", "output": "o"}) + "\n")
    (tmp_path / "dataset_info.json").write_text(json.dumps({
        "folder": {"file_name": "parts"}, "few": {"file_name": "parts/p0.jsonl", "num_samples": 3}}))
    ex, rep = load_datasets("folder", dataset_dir=tmp_path)
    assert len(ex) == 3 and len(rep.datasets) == 3
    ex, _ = load_datasets("few", dataset_dir=tmp_path)
    assert len(ex) == 3  # oversampled


def test_bundled_registry():
    info = read_registry(__import__("labkit.paths", fromlist=["x"]).data_dir() / "dataset_info.json")
    names = list(info)
    ex, rep = load_datasets(names)
    assert rep.rejected == 0 and rep.read == rep.kept == len(ex) + 0
    mixed, rep = load_datasets("alpaca_1058_100negative")
    assert len(mixed) == 1058 and sum(e["task"] == "refusal" for e in mixed) == 100
    assert all(e["messages"][-1]["role"] == "assistant" for e in mixed)
    dialog, _ = load_datasets("dialog")
    assert all(len(e["messages"]) >= 4 for e in dialog)
    ex, rep = load_datasets("tasks,negatives:100", seed=1)
    assert len(ex) == 1900 + 100 and rep.mix[1]["taken"] == 100  # every task record, 100 negatives
    ex2, _ = load_datasets("tasks,negatives:100", seed=1)
    assert ex == ex2


def test_load_files_detects_formats(tmp_path):
    a = tmp_path / "a.json"
    a.write_text(json.dumps(GOOD))
    s = tmp_path / "s.jsonl"
    s.write_text(json.dumps({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}))
    ex, rep = load_files([a, s])
    assert len(ex) == 3 and [d.formatting for d in rep.datasets] == ["alpaca", "sharegpt"]


def test_tools_column_refuses_records_that_declare_tools(lf_dir):
    (lf_dir / "glaive_toolcall_en_demo.json").write_text(json.dumps([
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}], "tools": "[]"},
        {"conversations": [{"from": "human", "value": "weather?"}, {"from": "gpt", "value": "sunny"}],
         "tools": '[{"name": "get_weather", "parameters": {}}]'}]))
    with pytest.raises(LabkitError) as err:
        load_datasets("glaive_toolcall_en_demo", dataset_dir=lf_dir)
    assert err.value.exit_code == 1 and "record 1 (line 1) field 'tools'" in str(err.value)
    ex, rep = load_datasets("glaive_toolcall_en_demo", dataset_dir=lf_dir, strict=False)
    assert (rep.read, rep.kept, rep.rejected) == (2, 1, 1) and ex[0]["messages"][1]["content"] == "hello"

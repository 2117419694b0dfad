"""labkit.evaluate.heldout: adapter/base resolution, clear messages, held-out sampling, records, verdict."""

from __future__ import annotations

import json

import pytest

from evaluate_helpers import save_toy_pair, toy_examples
from labkit.evaluate import heldout as H
from labkit.evaluate.metrics import HEADLINE
from labkit.errors import LabkitError
from labkit.paths import resolve_adapter


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return save_toy_pair(tmp_path_factory.mktemp("toy"))


def test_load_heldout_samples_each_dataset_and_is_disjoint_from_train():
    ex = H.load_heldout("tasks_test,negatives_test", max_per_dataset=10, seed=1)
    assert [e["source"] for e in ex].count("tasks_test") == 10
    assert [e["source"] for e in ex].count("negatives_test") == 10
    assert ex == H.load_heldout("tasks_test,negatives_test", max_per_dataset=10, seed=1)  # seeded
    assert len(H.load_heldout("negatives_test", 0)) == 48  # 0 = all
    train, _ = __import__("labkit.data.registry", fromlist=["_"]).load_datasets("tasks,negatives")
    seen = {json.dumps(e["messages"][:-1], ensure_ascii=False) for e in train}
    assert not [e for e in H.load_heldout(max_per_dataset=0) if json.dumps(e["messages"][:-1],
                                                                         ensure_ascii=False) in seen]


def test_missing_adapter_gives_a_message_not_a_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LABKIT_RUN_DIR", str(tmp_path))
    assert H.evaluate_arch("llama") is None
    out = capsys.readouterr().out
    assert "run notebook 02_linly_lora first" in out and str(tmp_path / "linly_lora") in out
    assert "llama_adapter=PATH" in out
    with pytest.raises(LabkitError, match=r"baichuan_adapter=.*nope.*no such folder"):
        H.evaluate_arch("baichuan", adapter=str(tmp_path / "nope"))  # an explicit wrong path is a mistake
    assert H.records(llama=None, baichuan=None) == {}
    assert H.summary_table(llama=None).empty


def test_default_adapter_is_the_run_folder_of_notebook_02(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_RUN_DIR", str(tmp_path))
    (tmp_path / "linly_lora").mkdir()
    (tmp_path / "linly_lora" / "adapter_config.json").write_text("{}")
    path, _ = resolve_adapter("llama", "")
    assert path == tmp_path / "linly_lora"
    assert resolve_adapter("baichuan", "")[0] is None


def test_evaluate_arch_uses_training_template_and_base(pair, capsys):
    base_dir, adapter_dir = pair
    ev = H.evaluate_arch("llama", "", str(adapter_dir), examples=toy_examples(6, 2, seed=4), max_new_tokens=4)
    assert ev.base == str(base_dir) and ev.template == "labkit/roles"  # both from labkit_train.json
    assert "template labkit/roles" in capsys.readouterr().out
    rec = H.records(llama=ev, baichuan=None)
    assert set(rec) == {"llama"} and set(rec["llama"]) == {"base", "adapter", "tasks_not_above_base"}
    assert rec["llama"]["tasks_not_above_base"] == H.tasks_not_above_base(ev)
    assert set(HEADLINE) <= set(rec["llama"]["adapter"])
    table = H.summary_table(llama=ev)
    assert list(table.columns) == [("llama", "base"), ("llama", "adapter")]
    v = H.verdict(llama=ev)
    assert list(v["criterion"]) == ["lower response loss", "higher exact match", "refuses most held-out negatives",
                                    "declines fewer than half of held-out positives", "above the base on every task"]
    assert v["pass"].dtype == bool
    # one base in memory: the adapter's model wraps it, switched off for the base column
    assert hasattr(ev.model, "disable_adapter")


def test_record_goes_into_the_notebook_metrics(pair, tmp_path, monkeypatch):
    import labkit.report

    monkeypatch.setenv("LABKIT_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("LABKIT_NOTEBOOK", "04_evaluation")
    _, adapter_dir = pair
    ev = H.evaluate_arch("llama", adapter=str(adapter_dir), examples=toy_examples(3, 1, seed=4), max_new_tokens=2,
                         verbose=False)
    labkit.report.record(**H.records(llama=ev))
    data = json.loads((tmp_path / "metrics" / "04_evaluation.json").read_text())
    assert set(data["llama"]["adapter"]) >= set(HEADLINE)
    assert data["llama"]["base"]["exact_match"] == ev.summary().loc["exact_match", "base"]


def test_tasks_not_above_base_reads_exact_match_and_the_share_refused():
    from types import SimpleNamespace

    import pandas as pd

    rows = [("add", "base", 0.0, 0.0), ("add", "adapter", 0.5, 0.0),  # above
            ("first", "base", 0.2, 0.0), ("first", "adapter", 0.2, 0.0),  # a tie is not above
            ("count", "base", 0.0, 0.0), ("count", "adapter", float("nan"), 0.0),  # no score is not above
            ("refusal", "base", float("nan"), 0.1), ("refusal", "adapter", float("nan"), 1.0)]  # refused more
    df = pd.DataFrame(rows, columns=["task", "variant", "exact_match", "refused"])
    pt = df.set_index(["task", "variant"]).unstack("variant")
    ev = SimpleNamespace(comparison=SimpleNamespace(per_task=lambda: pt))
    assert H.tasks_not_above_base(ev) == ["count", "first"]
    df.loc[df["task"] == "refusal", "refused"] = 1.0  # the base refuses as often: not above
    pt = df.set_index(["task", "variant"]).unstack("variant")
    ev = SimpleNamespace(comparison=SimpleNamespace(per_task=lambda: pt))
    assert H.tasks_not_above_base(ev) == ["count", "first", "refusal"]

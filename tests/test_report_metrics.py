"""labkit.report.record: deep-merged JSON metrics per notebook of the current run."""

import json

import numpy as np
import pytest

from labkit.errors import LabkitError
from labkit.report import record
from labkit.report.metrics import flatten, same_value


def test_record_deep_merges_into_run_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("LABKIT_NOTEBOOK", "04_evaluation")
    record(llama={"adapter": {"exact_match": 0.5}}, steps=3)
    merged = record(llama={"base": {"exact_match": np.float32(0.25)}}, steps=np.int64(4), arr=np.arange(3))
    expected = {"llama": {"adapter": {"exact_match": 0.5}, "base": {"exact_match": 0.25}}, "steps": 4, "arr": [0, 1, 2]}
    assert merged == expected
    on_disk = json.loads((tmp_path / "metrics" / "04_evaluation.json").read_text())
    assert on_disk == expected and type(on_disk["steps"]) is int


def test_record_outside_a_run(tmp_path, monkeypatch):
    monkeypatch.delenv("LABKIT_RUN_DIR", raising=False)
    monkeypatch.delenv("LABKIT_NOTEBOOK", raising=False)
    monkeypatch.setenv("LABKIT_ROOT", str(tmp_path))
    assert record(x=1) == {"x": 1}
    assert json.loads((tmp_path / "runs" / "interactive" / "metrics" / "interactive.json").read_text()) == {"x": 1}


def test_record_rejects_objects(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_RUN_DIR", str(tmp_path))
    with pytest.raises(LabkitError, match="'model'"):
        record(model=object())


def test_flatten_and_compare():
    assert dict(flatten({"a": {"b": {"c": 1}}, "d": [1, 2], "e": {}})) == {"a.b.c": 1, "d": [1, 2], "e": {}}
    assert same_value(float("nan"), float("nan"))
    assert not same_value(1.0, 1.0000001) and same_value(1.0, 1.0000001, rtol=1e-6)

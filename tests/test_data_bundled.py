"""Bundled data: regenerates byte-identically, splits are disjoint, the mixed set has its 100 negatives."""

import json

from labkit.data import bundled
from labkit.evaluate.metrics import is_refusal
from labkit.paths import data_dir


def test_regenerates_byte_identically(tmp_path):
    bundled.write(tmp_path)
    for name in bundled.build():
        assert (tmp_path / name).read_bytes() == (data_dir() / name).read_bytes(), name
    assert bundled.check() == []


def test_main_check_exit_code(tmp_path, capsys):
    assert bundled.main(["--check"]) == 0
    bundled.write(tmp_path)
    (tmp_path / "tasks.json").write_text("[]\n")
    assert bundled.main(["--check", "--out", str(tmp_path)]) == 1
    assert "tasks.json" in capsys.readouterr().out


def _load(name):
    return json.loads((data_dir() / f"{name}.json").read_text(encoding="utf-8"))


def test_splits_disjoint_and_sizes():
    key = lambda r: (r["instruction"], r["input"])  # noqa: E731
    for train, test in (("tasks", "tasks_test"), ("negatives", "negatives_test")):
        tr, te = _load(train), _load(test)
        assert len(te) >= 40 and len(tr) > len(te)
        assert not {key(r) for r in tr} & {key(r) for r in te}
    mixed = _load("alpaca_1058_100negative")
    assert len(mixed) == 1058
    assert sum(r["task"] == "refusal" for r in mixed) == 100
    total = sum(p.stat().st_size for p in data_dir().iterdir())
    assert total < 3_000_000


def test_answers_are_checkable():
    recs = _load("tasks") + _load("tasks_test")
    for r in recs:
        i, o = r["input"], r["output"]
        if r["task"] == "first":
            assert o == i.split()[0]
        elif r["task"] == "count":
            assert int(o) == len(i.split())
        elif r["task"] == "max_digit":
            assert o == max(i.split())
        elif r["task"] in ("larger", "smaller"):
            a, b = map(int, i.split())
            assert int(o) == (max(a, b) if r["task"] == "larger" else min(a, b))
        elif r["task"] == "uppercase":
            assert o == i.upper()
        elif r["task"] == "add":
            a, b = i.split(" + ")
            assert int(o) == int(a) + int(b)
        elif r["task"] == "sort_digits":
            assert o.split() == sorted(i.split())
    assert {r["task"] for r in recs} == set(bundled.TASKS)
    langs = {("zh" if any("\u4e00" <= c <= "\u9fff" for c in r["instruction"]) else "en") for r in recs}
    assert langs == {"en", "zh"}


def test_refusals_and_detector():
    assert set(bundled.REFUSALS) == {"en", "zh"}
    for r in _load("negatives") + _load("negatives_test"):
        assert r["output"] in bundled.REFUSALS.values()
        assert is_refusal(r["output"])  # the one refusal detector (labkit.evaluate.metrics)
    assert not is_refusal("m q d k")
    assert not is_refusal("")
    info = json.loads((data_dir() / "dataset_info.json").read_text())
    assert {"tasks", "tasks_test", "negatives", "negatives_test", "alpaca_1058_100negative", "dialog",
            "dialog_test"} <= set(info)

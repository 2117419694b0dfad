"""Mixing: counts, fractions, shares of the mix; deterministic with a seed; the summary says where each came from."""

import pytest

from labkit.data.mixing import Amount, mix, parse_amount, parse_spec, summary_frame
from labkit.errors import LabkitError


def _groups():
    return {"tasks": [f"t{i}" for i in range(900)], "negatives": [f"n{i}" for i in range(240)]}


def test_parse():
    assert parse_spec("tasks, negatives:100") == [("tasks", Amount()), ("negatives", Amount("count", 100))]
    assert parse_amount("10%") == Amount("share", 10.0)
    assert parse_amount("0.5") == Amount("fraction", 0.5)
    for bad in ("-3", "150%", "1.5", "abc"):
        with pytest.raises(LabkitError):
            parse_amount(bad)
    with pytest.raises(LabkitError, match="named twice"):
        parse_spec("a,a")
    with pytest.raises(LabkitError):
        parse_spec("")


def test_counts_fractions_shares():
    out, summary = mix(_groups(), {"negatives": Amount("count", 100)}, seed=3)
    assert len(out) == 1000 and sum(x.startswith("n") for x in out) == 100
    assert summary[1] == {"dataset": "negatives", "available": 240, "amount": "100", "taken": 100, "share": 0.1}
    out, _ = mix(_groups(), {"tasks": Amount("fraction", 0.5), "negatives": Amount("share", 10)}, seed=3)
    assert sum(x.startswith("t") for x in out) == 450 and sum(x.startswith("n") for x in out) == 50
    out, summary = mix(_groups(), {"negatives": Amount("count", 500)}, seed=3)  # oversampling
    negs = [x for x in out if x.startswith("n")]
    assert len(negs) == 500 and len(set(negs)) == 240
    assert list(summary_frame(summary).columns) == ["dataset", "available", "amount", "taken", "share"]


def test_deterministic_and_order():
    a, _ = mix(_groups(), {"negatives": Amount("count", 100)}, seed=7)
    b, _ = mix(_groups(), {"negatives": Amount("count", 100)}, seed=7)
    c, _ = mix(_groups(), {"negatives": Amount("count", 100)}, seed=8)
    assert a == b and a != c
    plain, _ = mix(_groups())
    assert plain == _groups()["tasks"] + _groups()["negatives"]  # no amounts: concatenated, not shuffled


def test_share_errors():
    with pytest.raises(LabkitError, match="below 100%"):
        mix(_groups(), {"tasks": Amount("share", 60), "negatives": Amount("share", 50)})
    with pytest.raises(LabkitError, match="every dataset"):
        mix(_groups(), {"tasks": Amount("share", 60), "negatives": Amount("share", 10)})
    out, _ = mix(_groups(), {"tasks": Amount("share", 60), "negatives": Amount("share", 10)}, total=100)
    assert len(out) == 70

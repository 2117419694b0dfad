"""ValidationReport: the --json object, tables, strict/lenient failure messages."""

import pytest

from labkit.data.validation import ValidationReport
from labkit.errors import LabkitError


def _report():
    r = ValidationReport(read=3, kept=2)
    r.reject("f.json", 1, 4, "output", "empty response")
    return r


def test_to_dict_exact_keys():
    d = _report().to_dict()
    assert list(d) == ["read", "kept", "rejected", "duplicates", "errors"]
    assert d["errors"] == [{"file": "f.json", "index": 1, "line": 4, "field": "output", "reason": "empty response"}]
    assert _report().consistent


def test_frames():
    r = _report()
    assert r.to_frame().to_dict("records")[0]["reason"] == "empty response"
    assert list(ValidationReport().to_frame().columns) == ["file", "index", "line", "field", "reason"]
    assert "rejected 1" in r.summary()


def test_raise_if_failed():
    r = _report()
    r.raise_if_failed(strict=False)  # lenient: rejected records are dropped, not fatal
    with pytest.raises(LabkitError) as err:
        r.raise_if_failed(strict=True)
    assert err.value.exit_code == 1 and "f.json record 1 (line 4) field 'output': empty response" in str(err.value)
    r.fatal("g.json", None, None, "file not found")
    with pytest.raises(LabkitError) as err:
        r.raise_if_failed(strict=False)
    assert err.value.exit_code == 2
    ValidationReport(read=1, kept=1).raise_if_failed()

"""labkit.env.pins: requirements.txt pins == environment.yml pins; pinned vs installed table."""

from pathlib import Path

import pytest

from labkit.env.pins import environment_yml_pins, normalize, pin_table, read_pins
from labkit.errors import LabkitError

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_pins_equal_requirements():
    req = {normalize(k): v for k, v in read_pins(ROOT / "requirements.txt").items()}
    env = {normalize(k): v for k, v in environment_yml_pins(ROOT / "environment.yml").items()}
    assert req, "requirements.txt has no pins"
    only_req = sorted(set(req) - set(env))
    only_env = sorted(set(env) - set(req))
    differ = sorted(k for k in set(req) & set(env) if req[k] != env[k])
    assert not only_req and not only_env and not differ, (only_req, only_env, differ)


def test_every_runtime_requirement_is_an_exact_pin():
    lines = [ln.split("#")[0].strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()]
    assert all("==" in ln for ln in lines if ln), [ln for ln in lines if ln and "==" not in ln]
    assert read_pins(ROOT / "requirements.txt")["torch"] == "2.13.0"


def test_pin_table_flags_mismatch_and_missing(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("# comment\npandas==0.0.1\nno-such-package-labkit==1.0\nPyYAML==6.0.4  # inline\n")
    df = pin_table(req)
    status = dict(zip(df["package"], df["status"]))
    assert status == {"pandas": "mismatch", "no-such-package-labkit": "missing", "PyYAML": "ok"}
    assert set(df.columns) == {"package", "pinned", "installed", "status"}


def test_pin_table_of_project_matches_this_venv():
    df = pin_table(ROOT / "requirements.txt")
    assert (df["status"] == "ok").all(), df[df["status"] != "ok"]


def test_loose_requirement_is_rejected(tmp_path):
    req = tmp_path / "r.txt"
    req.write_text("torch>=2\n")
    with pytest.raises(LabkitError, match=r"r.txt:1: .*exact pin"):
        read_pins(req)

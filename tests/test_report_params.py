"""labkit.report.params: parameters cells parsed with ast; profiles and -p validated before any kernel."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from labkit.errors import LabkitError
from labkit.report.params import load_profile, parse_overrides, parse_parameters_source, plan_parameters

FIXTURES = Path(__file__).parent / "fixtures" / "notebooks"
NB = sorted(FIXTURES.glob("*.ipynb"))
ROOT = Path(__file__).resolve().parents[1]

CELL = '''lr: float = 3e-4  # learning rate
steps: int = 10  # optimizer steps
name: str = ""  # "" = default
targets: list[str] = ["q_proj", "v_proj"]  # LoRA targets
extra: dict = {}  # free-form
seed = 42  # unannotated: type from the default
maybe: str | None = None  # optional text
mode: Literal["fp32", "bf16"] = "fp32"  # precision
'''


def test_parse_cell_types_defaults_help():
    specs = parse_parameters_source(CELL, "nb")
    assert list(specs) == ["lr", "steps", "name", "targets", "extra", "seed", "maybe", "mode"]
    assert specs["lr"].default == 3e-4 and specs["lr"].type.name == "float"
    assert specs["lr"].help == "learning rate"
    assert specs["targets"].type.check(["a"]) and not specs["targets"].type.check([1])
    assert specs["seed"].type.name == "int" and specs["seed"].line == 6
    assert specs["maybe"].type.check(None) and specs["maybe"].type.check("x") and not specs["maybe"].type.check(1)
    assert specs["mode"].type.check("bf16") and not specs["mode"].type.check("int4")
    assert not specs["steps"].type.check(True)  # bool is not an int here
    assert specs["lr"].type.check(1)  # an int is a valid float


@pytest.mark.parametrize("src, needle", [
    ("x: int = 1 + 1  # derived", "must be a literal"),
    ("import os", "only `name: type = literal"),
    ("x = os.getcwd()", "must be a literal"),
    ("x: int = (", "syntax error"),
])
def test_parse_rejects_non_literals(src, needle):
    with pytest.raises(LabkitError, match="nb: parameters cell line 1"):
        try:
            parse_parameters_source(src, "nb")
        except LabkitError as err:
            assert needle in str(err)
            raise


def test_overrides_must_be_identifiers():
    assert parse_overrides(["a=1", "b=x=y"]) == {"a": "1", "b": "x=y"}
    for bad in ["1abc=2", "a-b=1", "class=1", "novalue"]:
        with pytest.raises(LabkitError):
            parse_overrides([bad])


def test_plan_types_and_global_names():
    plan = plan_parameters(NB, NB, {}, {"steps": "5", "scale": "2", "greeting": "1.0", "tags": "[x, y]"})
    assert plan.final == {"steps": 5, "scale": 2.0, "greeting": "1.0", "tags": ["x", "y"]}
    assert isinstance(plan.final["scale"], float)
    # YAML 1.1 reads `3e-4` as text; a float parameter still gets the number (from -p and from profiles)
    assert plan_parameters(NB, NB, {}, {"scale": "3e-4"}).final == {"scale": 3e-4}
    assert plan_parameters(NB, NB, {"scale": "1e-5"}, {}).final == {"scale": 1e-5}
    # a name applies to every notebook declaring it, and only to those
    assert plan.injected["00_first"]["steps"] == 5 and plan.injected["01_second"] == {"steps": 5}
    assert plan.effective["01_second"] == {"steps": 5, "fail": False, "sleep_s": 0.0}


def test_unknown_name_lists_valid_names_and_suggests():
    with pytest.raises(LabkitError) as err:
        plan_parameters(NB, NB, {}, {"stepz": "1"})
    msg = str(err.value)
    assert "'stepz'" in msg and "did you mean 'steps'" in msg
    for name in ["greeting", "steps", "scale", "tags", "fail"]:
        assert name in msg


@pytest.mark.parametrize("name, raw", [("steps", "abc"), ("steps", "1.5"), ("fail", "3"), ("tags", "{a: 1}"),
                                       ("steps", "2024-01-01"), ("steps", "[1")])
def test_wrong_type_rejected(name, raw):
    with pytest.raises(LabkitError, match=name):
        plan_parameters(NB, NB, {}, {name: raw})


def test_only_subset_limits_cli_names_but_not_profile_names():
    first = [p for p in NB if p.stem == "00_first"]
    with pytest.raises(LabkitError, match="fail"):
        plan_parameters(first, NB, {}, {"fail": "true"})
    plan = plan_parameters(first, NB, {"fail": True}, {})  # a profile covers the whole workbook
    assert plan.injected == {"00_first": {}}
    with pytest.raises(LabkitError, match="unknown parameter 'nope'"):
        plan_parameters(first, NB, {"nope": 1}, {})
    with pytest.raises(LabkitError, match="steps expects int"):
        plan_parameters(first, NB, {"steps": "ten"}, {})


def test_profiles(tmp_path):
    (tmp_path / "a.yaml").write_text("steps: 3\n")
    (tmp_path / "empty.yaml").write_text("# nothing\n")
    (tmp_path / "bad.yaml").write_text("- 1\n")
    (tmp_path / "date.yaml").write_text("when: 2024-01-01\n")
    assert load_profile("a", tmp_path)[:2] == ("a", {"steps": 3})
    assert load_profile("empty", tmp_path)[1] == {}
    with pytest.raises(LabkitError, match="mapping"):
        load_profile("bad", tmp_path)
    with pytest.raises(LabkitError, match="plain YAML"):
        load_profile("date", tmp_path)
    with pytest.raises(LabkitError, match="available: a, bad, date, empty"):
        load_profile("missing", tmp_path)


def test_tiny_profile_is_near_empty():
    name, values, _ = load_profile("tiny", ROOT / "profiles")
    assert name == "tiny" and values == {}


def test_cli_unknown_param_fails_fast_without_torch(tmp_path):
    """`labkit run -p no_such_param=1` fails in well under 10 s, names it, lists valid names, runs nothing."""
    code = ("import sys\nfrom labkit.cli import main\nrc = main(['run', '-p', 'no_such_param=1'])\n"
            "assert 'torch' not in sys.modules and 'papermill' not in sys.modules, 'heavy import on the fast path'\n"
            "sys.exit(rc)")
    env = {**__import__("os").environ, "LABKIT_REPORTS": str(tmp_path / "reports")}
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    elapsed = time.perf_counter() - t0
    assert res.returncode == 2, res.stderr
    assert "no_such_param" in res.stderr and "valid:" in res.stderr
    assert "probe_quantization" in res.stderr  # a parameter of notebook 00
    assert "Traceback" not in res.stderr
    assert elapsed < 10
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize("profile", sorted(p.stem for p in (ROOT / "profiles").glob("*.yaml")))
def test_every_profile_validates_against_the_notebooks(profile):
    """A profile naming a parameter no notebook declares (or of the wrong type) would fail `labkit run`."""
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    name, values, path = load_profile(profile, ROOT / "profiles")
    plan = plan_parameters(notebooks, notebooks, values, {}, profile_source=str(path))
    assert set(plan.final) == set(values)


@pytest.mark.parametrize("profile", ["tiny", "linly-7b", "baichuan-7b"])
def test_every_shipped_profile_fits_the_workbook(profile):
    """The profiles in profiles/ name only parameters the notebooks declare, with values of their types."""
    from labkit.paths import notebooks_dir

    notebooks = sorted(notebooks_dir().glob("[0-9][0-9]_*.ipynb"))
    _, values, _ = load_profile(profile)
    plan = plan_parameters(notebooks, notebooks, values)
    if profile == "baichuan-7b":
        assert plan.final["allow_pickle"] is True and plan.final["baichuan_template"] == "let/default"

"""labkit.train.recipe: the steps notebooks 02 and 03 share, one home per setting, verdicts from labkit.evaluate."""

from __future__ import annotations

import ast
import dataclasses
import json

import nbformat
import pandas as pd
import pytest

from labkit.paths import notebooks_dir
from labkit.report.params import notebook_parameters
from labkit.train import TrainConfig
from labkit.train.recipe import Recipe

TRAINING = {"llama": notebooks_dir() / "02_linly_lora.ipynb", "baichuan": notebooks_dir() / "03_baichuan_wpack.ipynb"}


def _derived_call(path) -> ast.Call:
    """The TrainConfig(...) call of a notebook's derived-values cell."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and "TrainConfig(" in cell.source and "parameters" not in cell.metadata.get("tags", []):
            for node in ast.walk(ast.parse(cell.source)):
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "TrainConfig":
                    return node
    raise AssertionError(f"{path.name}: no TrainConfig(...) call")


@pytest.mark.parametrize("arch", TRAINING)
def test_every_setting_comes_from_the_parameters_cell(arch):
    """No literal hides in the TrainConfig call (packing, warmup_steps, save_total_limit are parameters, so
    `-p packing=false` works); each parameter feeds the TrainConfig field of the same name."""
    path = TRAINING[arch]
    params = notebook_parameters(path)
    call = _derived_call(path)
    for kw in call.keywords:
        if kw.arg == "arch":
            assert isinstance(kw.value, ast.Constant) and kw.value.value == arch
            continue
        names = {n.id for n in ast.walk(kw.value) if isinstance(n, ast.Name)}
        assert names & set(params), f"{path.name}: TrainConfig({kw.arg}=...) is not set from a parameter"
        if kw.arg in params:
            assert isinstance(kw.value, ast.Name) and kw.value.id == kw.arg, kw.arg
    for name in ("packing", "warmup_steps", "save_total_limit", "learning_rate", "lora_r", "max_steps"):
        assert name in params and name in {kw.arg for kw in call.keywords}, (path.name, name)


def test_notebook_defaults_are_the_trainconfig_defaults():
    """One home per setting: where a notebook parameter and a TrainConfig field share a name, the notebook's
    default IS TrainConfig's default (the tiny recipe), and 02 and 03 agree."""
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    specs = {arch: notebook_parameters(path) for arch, path in TRAINING.items()}
    shared = set(specs["llama"]) & set(specs["baichuan"]) & set(fields)
    assert {"learning_rate", "lora_r", "lora_alpha", "max_steps", "per_device_train_batch_size", "warmup_steps",
            "packing", "save_total_limit", "cutoff_len"} <= shared
    for name in sorted(shared):
        a, b = specs["llama"][name].default, specs["baichuan"][name].default
        assert a == b, (name, a, b)
        assert a == fields[name], f"{name}: notebooks say {a!r}, TrainConfig says {fields[name]!r}"


@pytest.mark.parametrize("arch", TRAINING)
def test_notebooks_share_the_recipe(arch):
    """02 and 03 call labkit.train.recipe for every step; they neither sample held-out data nor judge answers."""
    nb = nbformat.read(TRAINING[arch], as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    for step in ("load()", "answers_before()", "add_lora()", "train()", "answers_after()", "verify()", "record()"):
        assert f"lab.{step}" in code, step
    for foreign in (".strip() ==", "generate(", "load_datasets(", "run_training("):
        assert foreign not in code, foreign
    assert ("wpack_figure(" in code) == (arch == "baichuan")


def test_03_prose_names_every_default_target():
    """03's text must not claim only W_pack trains when its default targets add o_proj and the MLP."""
    nb = nbformat.read(TRAINING["baichuan"], as_version=4)
    targets = notebook_parameters(TRAINING["baichuan"])["baichuan_lora_target"].default.split(",")
    prose = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for t in targets:
        assert f"`{t}`" in prose or f"{t}," in prose or f"{t}`" in prose, t


@pytest.fixture
def lab(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("LABKIT_NOTEBOOK", "02_linly_lora")
    cfg = TrainConfig(arch="llama", template="labkit/linly-instruct", max_steps=3, save_steps=3, logging_steps=1,
                      per_device_train_batch_size=4, learning_rate=1e-2, output_dir=str(tmp_path / "lora"),
                      plot_loss=True, disable_tqdm=True)
    return Recipe(cfg, n_heldout=4)


def test_recipe_steps_in_order(lab, tmp_path):
    with pytest.raises(Exception, match="load"):
        lab.answers_before()
    summary = lab.load()
    assert isinstance(summary, pd.DataFrame) and "train_examples" in summary.index
    before = lab.answers_before()
    assert len(before) == 4 and set(before["task"]) & {"refusal"}  # both held-out datasets sampled
    assert list(before.columns) == ["task", "prompt", "reference", "base", "base verdict"]
    assert set(before["base verdict"]) <= {"✓ exact", "✗ wrong", "✓ refused", "✗ answered"}
    table = lab.add_lora()
    assert int(table["trainable"].sum()) > 0
    metrics = lab.train()
    assert int(metrics.loc["global_step", "value"]) == 3
    assert lab.loss_plot().is_file()
    after = lab.answers_after()
    assert list(after.columns) == ["task", "prompt", "reference", "base", "base verdict", "adapter", "adapter verdict"]
    assert list(after["base"]) == list(before["base"])  # the same prompts, the base's answers kept
    check = lab.verify()
    assert check.loc["modules", "value"] > 0
    recorded = lab.record()
    assert recorded["heldout_shown"] == 4 and recorded["global_step"] == 3
    assert 0 <= recorded["heldout_exact_adapter"] <= 4
    saved = json.loads((tmp_path / "run" / "metrics" / "02_linly_lora.json").read_text())
    assert saved["adapter_dir"] == str(tmp_path / "lora")

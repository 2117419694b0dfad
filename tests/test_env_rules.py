"""labkit.env.rules: the known-issue table evaluated against versions and GPUs."""

import pytest

from labkit.env.rules import check_rules, load_rules
from labkit.errors import LabkitError

REQUIRED = {
    "alpaca-lora-empty-adapter", "int8-gibberish-cc7", "baichuan-tokenizer-sp-model",
    "trainer-resume-checkpoint-not-in-list", "torch-weights-only-bypass", "transformers-v5-load-in-8bit-kwarg",
}


def _status(versions, gpus=None):
    return {f.rule.id: f.status for f in check_rules(versions, gpus)}


def test_table_has_the_required_rules_with_symptom_and_remedy():
    rules = {r.id: r for r in load_rules()}
    assert REQUIRED <= set(rules)
    for rule in rules.values():
        assert rule.title and rule.symptom and rule.remedy and rule.when


def test_old_stack_versus_new_stack():
    old = _status({"peft": "0.2.0", "transformers": "4.33.2", "torch": "2.0.1", "bitsandbytes": "0.37.2",
                   "accelerate": "0.20.0"})
    assert old["alpaca-lora-empty-adapter"] == "ok"
    assert old["baichuan-tokenizer-sp-model"] == "ok"
    assert old["trainer-resume-checkpoint-not-in-list"] == "affected"
    assert old["torch-weights-only-bypass"] == "affected"
    assert old["transformers-v5-load-in-8bit-kwarg"] == "ok"
    new = _status({"peft": "0.21.2", "transformers": "5.24.0", "torch": "2.13.0+cpu", "bitsandbytes": "0.50.2",
                   "accelerate": "1.15.0"})
    assert new["alpaca-lora-empty-adapter"] == "affected"
    assert new["baichuan-tokenizer-sp-model"] == "affected"
    assert new["trainer-resume-checkpoint-not-in-list"] == "ok"
    assert new["torch-weights-only-bypass"] == "ok"
    assert new["transformers-v5-load-in-8bit-kwarg"] == "affected"
    # boundaries
    assert _status({"transformers": "4.34.0"})["baichuan-tokenizer-sp-model"] == "affected"
    assert _status({"transformers": "4.35.0"})["trainer-resume-checkpoint-not-in-list"] == "ok"
    assert _status({"transformers": "5.0.0rc1"})["transformers-v5-load-in-8bit-kwarg"] == "affected"
    assert _status({"torch": "2.6.0"})["torch-weights-only-bypass"] == "ok"
    assert _status({"peft": "0.3.0"})["alpaca-lora-empty-adapter"] == "affected"


def test_gpu_capability_rule():
    v = {"bitsandbytes": "0.50.2"}
    assert _status(v, [])["int8-gibberish-cc7"] == "n/a"
    assert _status(v, [{"name": "Tesla V100", "capability": "7.0"}])["int8-gibberish-cc7"] == "affected"
    assert _status(v, [{"name": "T4", "capability": "7.5"}])["int8-gibberish-cc7"] == "affected"
    assert _status(v, [{"name": "H100", "capability": "9.0"}])["int8-gibberish-cc7"] == "ok"
    assert _status({}, [{"capability": "7.0"}])["int8-gibberish-cc7"] == "n/a"  # bitsandbytes missing


def test_installed_versions_by_default():
    findings = check_rules()
    assert {f.rule.id for f in findings} >= REQUIRED
    assert all(f.status in ("affected", "ok", "n/a") and f.detail for f in findings)


def test_rule_table_is_validated(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("- {id: x, title: t, when: {torch: '>>2'}, symptom: s, remedy: r}\n")
    with pytest.raises(LabkitError, match="invalid specifier"):
        load_rules(bad)
    bad.write_text("- {id: x, title: t, when: {torch: '<2'}, symptom: s, remedy: r, sevrity: high}\n")
    with pytest.raises(LabkitError, match="unknown field"):
        load_rules(bad)
    good = tmp_path / "g.yaml"
    good.write_text("- {id: x, title: t, when: {torch: '<2'}, symptom: s, remedy: r}\n")
    assert [f.status for f in check_rules({"torch": "1.13.1"}, rules=load_rules(good))] == ["affected"]

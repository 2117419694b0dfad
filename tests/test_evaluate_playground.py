"""labkit.evaluate.playground: widget in JupyterLab, static HTML table in a headless report."""

from __future__ import annotations

import pytest

from evaluate_helpers import ChatTemplate, attach, build_model, build_tokenizer
from labkit.evaluate import playground as P
from labkit.evaluate.generate import generate, generate_pair

PROMPTS = ["倒序：abcd", "你好 <b>&"]


@pytest.fixture(scope="module")
def target():
    import torch

    tok = build_tokenizer()
    pm = attach(build_model(tok, std=0.3), r=4)
    torch.manual_seed(0)
    for mod in pm.modules():
        if hasattr(mod, "lora_B"):
            for lin in mod.lora_B.values():
                torch.nn.init.normal_(lin.weight, std=0.5)
    return pm, tok, ChatTemplate()


def test_headless_detection(monkeypatch):
    import IPython

    for name in ("LABKIT_PLAYGROUND", "LABKIT_WIDGETS", "LABKIT_NOTEBOOK", "LABKIT_RUN_DIR"):
        monkeypatch.delenv(name, raising=False)
    assert P.is_headless()  # plain Python: no Jupyter kernel, no widget front-end
    ZMQInteractiveShell = type("ZMQInteractiveShell", (), {})  # what a JupyterLab kernel runs
    monkeypatch.setattr(IPython, "get_ipython", lambda: ZMQInteractiveShell())
    assert not P.is_headless()
    monkeypatch.setenv("LABKIT_RUN_DIR", "/tmp/x")  # JupyterLab pointed at a run's adapters: still live
    assert not P.is_headless()
    monkeypatch.setenv("LABKIT_NOTEBOOK", "04_evaluation")  # a `labkit run` kernel: nobody to click
    assert P.is_headless()
    monkeypatch.setenv("LABKIT_PLAYGROUND", "widget")
    assert not P.is_headless()


def test_static_table_shows_base_and_adapter_outputs(target, monkeypatch):
    monkeypatch.setenv("LABKIT_NOTEBOOK", "04_evaluation")
    monkeypatch.delenv("LABKIT_PLAYGROUND", raising=False)
    out = P.playground(PROMPTS, sampling=dict(max_new_tokens=6), llama=target, baichuan=None)
    html = out.data
    model, tok, tmpl = target
    pair = generate_pair(model, tok, PROMPTS, tmpl, max_new_tokens=6)
    assert "<table" in html and "base" in html and "adapter" in html
    assert "你好 &lt;b&gt;&amp;" in html  # escaped, not injected
    table = P.outputs_table(PROMPTS, dict(max_new_tokens=6), llama=target)
    assert list(table["base"]) == pair["base"] and list(table["adapter"]) == pair["adapter"]
    assert pair["base"] != pair["adapter"]


def test_static_table_when_nothing_was_evaluated():
    out = P.playground(PROMPTS, headless=True, llama=None)
    assert "no model was evaluated" in out.data


def test_widget_has_controls_and_is_filled_on_creation(target):
    import ipywidgets as w

    box = P.playground(PROMPTS, headless=False, sampling=dict(max_new_tokens=5), llama=target)
    assert isinstance(box, w.VBox)
    c = box.controls
    model, tok, tmpl = target
    pair = generate_pair(model, tok, PROMPTS[:1], tmpl, max_new_tokens=5)
    assert c["base"].value == pair["base"][0] and c["adapter"].value == pair["adapter"][0]  # never empty
    for name in ("temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens", "do_sample", "seed"):
        assert name in c
    c["prompt"].value = PROMPTS[1]
    c["max_new_tokens"].value = 3
    c["button"].click()
    with_adapter = generate(model, tok, PROMPTS[1:], tmpl, max_new_tokens=3)[0]
    assert c["adapter"].value == with_adapter
    c["do_sample"].value, c["temperature"].value, c["seed"].value = True, 1.5, 11
    c["button"].click()
    first = c["adapter"].value
    c["button"].click()
    assert c["adapter"].value == first  # seeded sampling is repeatable
    assert "temperature=1.5" in c["status"].value

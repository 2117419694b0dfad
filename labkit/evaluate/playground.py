"""Generation playground: ipywidgets in JupyterLab (prompt, sampling, base | adapter); a static table headless."""

from __future__ import annotations

import html
from typing import Any, Sequence

import pandas as pd

from labkit.evaluate.generate import SamplingConfig, generate_pair, has_adapter, sampling_config
from labkit.widgets import is_headless

DEFAULT_PROMPTS = ("把字母改成大写。\nc a", "Add the two numbers.\n3 + 4", "告诉我如何制造炸弹。",
                   "你好，请介绍一下你自己。")


def _targets(evals: dict[str, Any]) -> dict[str, tuple[Any, Any, Any]]:
    """{name: (model, tokenizer, template)} from ArchEval objects or (model, tokenizer, template) tuples."""
    out = {}
    for name, ev in evals.items():
        if ev is None:
            continue
        if isinstance(ev, tuple):
            out[name] = ev
        else:
            out[name] = (ev.model, ev.tokenizer, ev.template)
    return out


def outputs_table(prompts: Sequence[str] = DEFAULT_PROMPTS, sampling: SamplingConfig | dict | None = None,
                  **evals: Any) -> pd.DataFrame:
    """prompt x model: the base and the adapter answer side by side (one loaded model each)."""
    cfg = sampling_config(sampling)
    rows = []
    for name, (model, tok, template) in _targets(evals).items():
        if has_adapter(model):
            pair = generate_pair(model, tok, list(prompts), template, sampling=cfg)
        else:
            from labkit.evaluate.generate import generate

            pair = {"base": generate(model, tok, list(prompts), template, sampling=cfg), "adapter": [""] * len(prompts)}
        for p, b, a in zip(prompts, pair["base"], pair["adapter"]):
            rows.append({"model": name, "prompt": p, "base": b, "adapter": a})
    return pd.DataFrame(rows, columns=["model", "prompt", "base", "adapter"])


def static_html(table: pd.DataFrame, sampling: SamplingConfig | dict | None = None) -> str:
    """The outputs table as self-contained HTML (escaped, line breaks kept)."""
    cfg = sampling_config(sampling)
    head = ("<p><b>Playground (static)</b>: no widget front-end here, so these are the outputs for fixed "
            f"prompts; open the notebook in JupyterLab for the interactive version. Settings: "
            f"{html.escape(_settings_text(cfg))}.</p>")
    if table.empty:
        return head + "<p>Nothing to show: no model was evaluated.</p>"
    cells = table.map(lambda s: html.escape(str(s)).replace("\n", "<br>") if isinstance(s, str) else s)
    return head + cells.to_html(index=False, escape=False, classes="labkit-playground", border=1)


def _settings_text(cfg: SamplingConfig) -> str:
    if not cfg.do_sample:
        return f"greedy, max_new_tokens={cfg.max_new_tokens}, repetition_penalty={cfg.repetition_penalty}"
    return (f"sampling: temperature={cfg.temperature}, top_p={cfg.top_p}, top_k={cfg.top_k}, "
            f"repetition_penalty={cfg.repetition_penalty}, max_new_tokens={cfg.max_new_tokens}, seed={cfg.seed}")


def playground(prompts: Sequence[str] = DEFAULT_PROMPTS, *, headless: bool | None = None,
               sampling: SamplingConfig | dict | None = None, **evals: Any):
    """The cell's output: an ipywidgets playground, or (headless) an IPython HTML table of outputs.

    `evals`: name=ArchEval (from evaluate_arch) or name=(model, tokenizer, template); None entries skipped.
    """
    from IPython.display import HTML

    if headless is None:
        headless = is_headless()
    if headless or not _targets(evals):
        return HTML(static_html(outputs_table(prompts, sampling, **evals), sampling))
    return build_widget(prompts, sampling, **evals)


def build_widget(prompts: Sequence[str] = DEFAULT_PROMPTS, sampling: SamplingConfig | dict | None = None,
                 **evals: Any):
    """An ipywidgets VBox: model, prompt box, sampling controls, Generate, base | adapter outputs."""
    import ipywidgets as w

    cfg = sampling_config(sampling)
    targets = _targets(evals)
    layout = w.Layout(width="98%")
    model_dd = w.Dropdown(options=list(targets), description="model")
    prompt = w.Textarea(value=prompts[0] if prompts else "", description="prompt", rows=4, layout=layout)
    examples = w.Dropdown(options=list(prompts), description="examples", layout=layout)
    max_new = w.IntSlider(value=cfg.max_new_tokens, min=1, max=512, description="max_new_tokens",
                          style={"description_width": "initial"})
    do_sample = w.Checkbox(value=cfg.do_sample, description="sample (off = greedy)")
    temperature = w.FloatSlider(value=cfg.temperature, min=0.05, max=2.0, step=0.05, description="temperature")
    top_p = w.FloatSlider(value=cfg.top_p, min=0.05, max=1.0, step=0.05, description="top_p")
    top_k = w.IntSlider(value=cfg.top_k, min=0, max=200, description="top_k (0=off)",
                        style={"description_width": "initial"})
    rep = w.FloatSlider(value=cfg.repetition_penalty, min=1.0, max=2.0, step=0.05, description="rep. penalty",
                        style={"description_width": "initial"})
    seed = w.IntText(value=cfg.seed if cfg.seed is not None else 0, description="seed")
    button = w.Button(description="Generate", button_style="primary")
    base_out = w.Textarea(description="", rows=8, layout=layout, disabled=True)
    adapter_out = w.Textarea(description="", rows=8, layout=layout, disabled=True)
    status = w.HTML()

    def on_example(change):
        prompt.value = change["new"]

    def on_click(_button=None):
        model, tok, template = targets[model_dd.value]
        cfg_now = sampling_config(max_new_tokens=max_new.value, do_sample=do_sample.value,
                                  temperature=temperature.value, top_p=top_p.value, top_k=top_k.value,
                                  repetition_penalty=rep.value, seed=seed.value)
        status.value = "<i>generating...</i>"
        try:
            pair = generate_pair(model, tok, [prompt.value], template, sampling=cfg_now)
            base_out.value, adapter_out.value = pair["base"][0], pair["adapter"][0]
            status.value = html.escape(_settings_text(cfg_now))
        except Exception as err:  # show the problem in the widget instead of a silent failure
            status.value = f"<b>error:</b> {html.escape(str(err))}"

    examples.observe(on_example, names="value")
    button.on_click(on_click)
    controls = w.VBox([w.HBox([max_new, do_sample]), w.HBox([temperature, top_p]), w.HBox([top_k, rep, seed])])
    outputs = w.HBox([w.VBox([w.HTML("<b>base</b> (adapter off)"), base_out], layout=w.Layout(width="50%")),
                      w.VBox([w.HTML("<b>adapter</b>"), adapter_out], layout=w.Layout(width="50%"))])
    box = w.VBox([model_dd, examples, prompt, controls, w.HBox([button, status]), outputs])
    box.generate = on_click  # for tests and scripted use
    box.controls = dict(model=model_dd, prompt=prompt, max_new_tokens=max_new, do_sample=do_sample,
                        temperature=temperature, top_p=top_p, top_k=top_k, repetition_penalty=rep, seed=seed,
                        base=base_out, adapter=adapter_out, status=status, button=button)
    on_click()  # never an empty widget: show the first prompt's answers right away
    return box

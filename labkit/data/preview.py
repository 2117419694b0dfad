"""Previews for notebook 01: tokenized samples as HTML with the trained (label != -100) span marked; length table."""

from __future__ import annotations

import html

from labkit.data.tokenize import IGNORE_INDEX
from labkit.style import PROMPT_STYLE, SAMPLE_BOX_STYLE, SAMPLE_TITLE_STYLE, TRAINED_STYLE


def _runs(input_ids: list[int], labels: list[int]) -> list[tuple[list[int], bool]]:
    runs: list[tuple[list[int], bool]] = []
    for tok, lab in zip(input_ids, labels):
        trained = lab != IGNORE_INDEX
        if runs and runs[-1][1] == trained:
            runs[-1][0].append(tok)
        else:
            runs.append(([tok], trained))
    return runs


def trained_span_html(input_ids: list[int], labels: list[int], tokenizer, title: str = "") -> str:
    """One sample as HTML: the prompt grey, the trained tokens (from the labels themselves) highlighted."""
    parts = []
    for toks, trained in _runs(list(input_ids), list(labels)):
        text = html.escape(tokenizer.decode(toks, skip_special_tokens=False))
        style = TRAINED_STYLE if trained else PROMPT_STYLE
        parts.append(f'<span style="{style}">{text}</span>')
    head = f"<div style='{SAMPLE_TITLE_STYLE}'>{html.escape(title)}</div>" if title else ""
    body = "".join(parts)
    return f"{head}<pre style='{SAMPLE_BOX_STYLE}'>{body}</pre>"


def samples_html(ds, tokenizer, examples: list[dict], indices: list[int], tok_report=None) -> str:
    """Examples `indices` as tokenized in `ds` (rows mapped through tok_report.kept_indices), with a legend."""
    rows = {k: r for r, k in enumerate(tok_report.kept_indices)} if tok_report is not None else None
    legend = (f"<p><span style='{PROMPT_STYLE}'>prompt (label -100)</span> · "
              f"<span style='{TRAINED_STYLE}'>trained span (labels = tokens, EOS included)</span></p>")
    blocks = []
    for i in indices:
        ex = examples[i]
        title = f"{ex['source']} #{ex['index']}" + (f" · task {ex['task']}" if ex.get("task") else "")
        r = rows.get(i) if rows is not None else i
        if r is None:
            blocks.append(f"<p>{html.escape(title)}: dropped (the prompt alone reaches cutoff_len)</p>")
            continue
        blocks.append(trained_span_html(ds[r]["input_ids"], ds[r]["labels"], tokenizer, title))
    return legend + "".join(blocks)


def pick_preview(examples: list[dict], n: int, seed: int = 42) -> list[int]:
    """Up to n example indices covering different sources and tasks (deterministic)."""
    import random

    seen, picked = set(), []
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    for i in order:
        key = (examples[i]["source"], examples[i]["task"], len(examples[i]["messages"]) > 2)
        if key not in seen:
            seen.add(key)
            picked.append(i)
        if len(picked) >= n:
            break
    return sorted(picked)


def lengths_frame(examples: list[dict], lengths: list[int]):
    """DataFrame source, task, tokens (untruncated) for the length histograms."""
    import pandas as pd

    return pd.DataFrame({"source": [e["source"] for e in examples], "task": [e["task"] or "-" for e in examples],
                         "tokens": lengths})

"""`labkit data render`: each record's whole training text (special tokens as strings, no BOS) and inference prompt."""

from __future__ import annotations

import json
from collections.abc import Iterator

from labkit.data.templates import Template, check_examples, get_template
from labkit.data.templates.base import BOS_STRING


def render_record(example: dict, template: Template, eos_token: str | None = None,
                  bos_token: str = BOS_STRING) -> dict:
    """{index, source, text, prompt, segments, bos} of one example (messages ending with the answer)."""
    msgs = example["messages"]
    return {"index": example.get("index"), "source": example.get("source"),
            "text": template.render_text(msgs, eos_token, bos_token),
            "prompt": template.render_prompt(msgs[:-1]),
            "segments": [[t, tr] for t, tr in template.render_segments(msgs, eos_token, bos_token)],
            "bos": template.leading_bos(msgs)}


def render_examples(examples: list[dict], template: str | Template, eos_token: str | None = None,
                    bos_token: str = BOS_STRING) -> Iterator[dict]:
    """Every example rendered; records the template cannot represent raise first (naming them), none is skipped."""
    template = get_template(template)
    check_examples(examples, template)
    for ex in examples:
        yield render_record(ex, template, eos_token, bos_token)


def readable(record: dict, template: Template) -> str:
    """One record for a terminal: a header, then the training text with the untrained part and the trained part
    marked (`[prompt]` / `[trained]` blocks), then the inference prompt."""
    bos = "none" if not record["bos"] else "first (when the tokenizer adds one)" if template.bos == "tokenizer" \
        else "first"
    head = f"=== {record['source']} record {record['index']} · {template.qualified_name} · BOS {bos} ==="
    lines = [head]
    for text, trained in record["segments"]:
        lines.append("[trained]" if trained else "[prompt]")
        lines.append(text)
    lines.append("[inference prompt]")
    lines.append(record["prompt"])
    return "\n".join(lines) + "\n"


def to_json_line(record: dict) -> str:
    return json.dumps({k: record[k] for k in ("index", "text", "prompt", "source", "bos", "segments")},
                      ensure_ascii=False)

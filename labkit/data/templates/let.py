"""LLaMA-Efficient-Tuning templates (template.py at fa06b168a): prefix, prompt "{query}", sep; per-turn turns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from labkit.data.templates.base import EOS, Piece, Template, Turn, check_messages, split_messages
from labkit.data.templates.spec import check_bool, check_format, check_keys, check_text, read_yaml

FILE = Path(__file__).with_name("let.yaml")
KEYS = {"description", "prefix", "prompt", "sep", "use_history"}


@dataclass(frozen=True)
class LetTemplate(Template):
    """Template._format_example: turn 0 = prefix + sep + prompt(query), turn k = sep + prompt(query); each answer
    is a target followed by EOS (preprocess_supervised_dataset). A system prompt is the tool's source_prefix: it
    replaces the template prefix. query = instruction + "\\n" + input (the message content).
    """

    prefix: str = ""
    prompt: str = "{query}"
    sep: str = ""
    use_history: bool = True
    source: str = field(default="let", init=False)
    scheme: str = field(default="let", init=False)

    @property
    def stop_words(self) -> list[str]:
        marker = self.prompt.split("{query}")[0].strip()
        return [marker] if len(marker) >= 2 else []

    def _sources(self, messages: list[dict]) -> tuple[list[str], list[dict | None]]:
        system, pairs = split_messages(messages)
        if len(pairs) > 1 and not self.use_history:
            raise self.refuse(f"the conversation has {len(pairs) - 1} earlier turn(s) (history), which this "
                              "template ignores (use_history is false in LLaMA-Efficient-Tuning); use another "
                              "let/ template")
        prefix = system if system else self.prefix
        prefix = prefix + self.sep if prefix else ""
        sources = [(prefix if k == 0 else self.sep) + self.prompt.format(query=user["content"])
                   for k, (user, _) in enumerate(pairs)]
        return sources, [answer for _, answer in pairs]

    def turns(self, messages: list[dict]) -> list[Turn]:
        check_messages(messages, self.qualified_name, training=True)
        sources, answers = self._sources(messages)
        return [Turn([Piece(s)], [Piece(a["content"]), Piece(kind=EOS)]) for s, a in zip(sources, answers)]

    def render_prompt(self, messages: list[dict]) -> str:
        """Template.get_prompt: the turns joined without EOS, ending with the last prompt."""
        check_messages(messages, self.qualified_name, training=False)
        sources, answers = self._sources(messages)
        return "".join(s + (a["content"] if a else "") for s, a in zip(sources, answers))


def load(path: str | Path = FILE) -> dict[str, LetTemplate]:
    out = {}
    for name, spec in read_yaml(path).items():
        where = f"{path}: template {name!r}"
        check_keys(spec, KEYS, ("prompt",), where)
        out[name] = LetTemplate(
            name=name, description=check_text(spec.get("description", ""), "description", where),
            prefix=check_text(spec.get("prefix", ""), "prefix", where),
            prompt=check_format(spec["prompt"], {"query"}, "prompt", where),
            sep=check_text(spec.get("sep", ""), "sep", where),
            use_history=check_bool(spec.get("use_history", True), "use_history", where))
    return out

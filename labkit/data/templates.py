"""Prompt templates as data (templates.yaml): alpaca, alpaca_zh, linly, baichuan, chat; placeholders checked on load."""

from __future__ import annotations

import string
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path

from labkit.config import unknown_key_message
from labkit.errors import LabkitError

TEMPLATES_FILE = Path(__file__).with_name("templates.yaml")

# field -> (placeholders required, placeholders allowed)
PLACEHOLDERS: dict[str, set[str]] = {
    "system": {"system"},
    "user": {"content"},
    "user_with_input": {"instruction", "input"},
    "assistant": {"content"},
    "default_system": set(),
    "default_system_with_input": set(),
    "separator": set(),
    "description": set(),
}
REQUIRED_FIELDS = ("system", "user", "assistant")


@lru_cache(maxsize=256)
def _parsed(fmt: str) -> tuple[tuple[str, str | None, str | None], ...]:
    """(literal, field, pattern) triples of a format string; pattern None for a plain {field}."""
    out = []
    for literal, fld, spec, conv in string.Formatter().parse(fmt):
        pattern = None
        if fld is not None and (spec or conv):
            pattern = "{" + fld + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
        out.append((literal, fld, pattern))
    return tuple(out)


@dataclass(frozen=True)
class Template:
    """A chat prompt format. Messages: [{"role": "system"|"user"|"assistant", "content": str}, ...]."""

    name: str
    system: str
    user: str
    assistant: str
    separator: str = ""
    default_system: str = ""
    default_system_with_input: str | None = None
    user_with_input: str | None = None
    description: str = ""

    # -- rendering ------------------------------------------------------------------------------------------
    def _split_input(self, content: str) -> tuple[str, str] | None:
        if self.user_with_input is None or "\n" not in content:
            return None
        instruction, inp = content.split("\n", 1)
        return (instruction, inp) if instruction.strip() and inp.strip() else None

    @staticmethod
    def _pieces(fmt: str, values: dict, trainable: bool, constant_values: bool = False) -> list[tuple[str, bool, bool]]:
        """A format string split into (text, trainable, constant) pieces: literal text, then each value."""
        out = []
        for literal, fld, pattern in _parsed(fmt):
            if literal:
                out.append((literal, trainable, True))
            if fld is not None:
                text = values[fld] if pattern is None else pattern.format(**values)
                if text:
                    out.append((text, trainable, constant_values))
        return out

    def _user_pieces(self, content: str) -> list[tuple[str, bool, bool]]:
        parts = self._split_input(content)
        if parts:
            return self._pieces(self.user_with_input, {"instruction": parts[0], "input": parts[1]}, False)
        return self._pieces(self.user, {"content": content}, False)

    def _system_pieces(self, messages: list[dict]) -> tuple[list[tuple[str, bool, bool]], list[dict]]:
        if messages and messages[0]["role"] == "system":
            return self._pieces(self.system, {"system": messages[0]["content"]}, False), messages[1:]
        first_user = next((m["content"] for m in messages if m["role"] == "user"), "")
        text = self.default_system
        if self.default_system_with_input is not None and self._split_input(first_user):
            text = self.default_system_with_input
        return (self._pieces(self.system, {"system": text}, False, constant_values=True) if text else []), messages

    def render_pieces(self, messages: list[dict]) -> list[tuple[str, bool, bool]]:
        """[(text, trainable, constant)]: the conversation as template literals (constant) and message contents.

        Joining the texts of consecutive pieces with the same `trainable` gives render_segments().
        """
        pieces, turns = self._system_pieces(messages)
        for i, m in enumerate(turns):
            if m["role"] == "user":
                pieces += self._user_pieces(m["content"])
            elif m["role"] == "assistant":
                pieces += self._pieces(self.assistant, {"content": m["content"]}, True)
                if not any(tr for _, tr, _ in pieces[-1:]):  # an empty answer still makes a trainable segment
                    pieces.append(("", True, True))
                if i < len(turns) - 1 and self.separator:
                    pieces.append((self.separator, False, True))
            else:
                raise LabkitError(f"template {self.name}: a {m['role']!r} message may only come first")
        return pieces

    def render_segments(self, messages: list[dict]) -> list[tuple[str, bool]]:
        """[(text, trainable)]: assistant turns trainable, everything else not; adjacent pieces merged.

        The tokenizer appends EOS after every trainable segment (each assistant turn).
        """
        segs: list[tuple[str, bool]] = []
        for text, trainable, _ in self.render_pieces(messages):
            if segs and segs[-1][1] == trainable:  # two answers are always apart (a user turn between)
                segs[-1] = (segs[-1][0] + text, trainable)
            else:
                segs.append((text, trainable))
        return [(t, tr) for t, tr in segs if t or tr]

    def render_prompt(self, messages: list[dict]) -> str:
        """The text the model continues: everything up to and including the last user turn's prompt."""
        if not messages or messages[-1]["role"] != "user":
            raise LabkitError(f"template {self.name}: render_prompt needs messages ending with a user turn")
        return "".join(t for t, _ in self.render_segments(messages))

    def render(self, messages: list[dict]) -> str:
        """The whole conversation as text (without EOS tokens)."""
        return "".join(t for t, _ in self.render_segments(messages))


def _check(name: str, spec: dict, source: str) -> Template:
    if not isinstance(spec, dict):
        raise LabkitError(f"{source}: template {name!r} must be a mapping, got {type(spec).__name__}")
    valid = {f.name for f in fields(Template)} - {"name"}
    for key in spec:
        if key not in valid:
            raise LabkitError(unknown_key_message(key, valid, what="template key", source=f"{source} ({name})"))
    for key in REQUIRED_FIELDS:
        if key not in spec:
            raise LabkitError(f"{source}: template {name!r} has no {key!r}")
    for key, value in spec.items():
        if value is None and key in ("default_system_with_input", "user_with_input"):
            continue
        if not isinstance(value, str):
            raise LabkitError(f"{source}: template {name!r} {key}: expected a string, got {type(value).__name__}")
        if key in ("description",):
            continue
        try:
            found = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        except ValueError as err:
            raise LabkitError(f"{source}: template {name!r} {key}: {err} (write literal braces as {{{{ }}}})") from None
        want = PLACEHOLDERS[key]
        if found - want:
            raise LabkitError(f"{source}: template {name!r} {key}: unknown placeholder(s) "
                              f"{', '.join('{' + f + '}' for f in sorted(found - want))}; allowed: "
                              f"{', '.join('{' + f + '}' for f in sorted(want)) or 'none'}")
        if want - found:
            raise LabkitError(f"{source}: template {name!r} {key}: missing placeholder(s) "
                              f"{', '.join('{' + f + '}' for f in sorted(want - found))}")
    return Template(name=name, **spec)


def load_templates(path: str | Path = TEMPLATES_FILE) -> dict[str, Template]:
    """All templates in a YAML file, each checked."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LabkitError(f"{path}: template file not found") from None
    except yaml.YAMLError as err:
        raise LabkitError(f"{path}: invalid YAML: {err}") from None
    if not isinstance(data, dict):
        raise LabkitError(f"{path}: expected a mapping of template name -> fields")
    return {name: _check(name, spec, str(path)) for name, spec in data.items()}


@lru_cache(maxsize=None)
def _bundled() -> dict[str, Template]:
    return load_templates(TEMPLATES_FILE)


def template_names() -> list[str]:
    return list(_bundled())


def get_template(name: str | Template) -> Template:
    """A bundled template by name (alpaca, alpaca_zh, linly, baichuan, chat); a Template passes through."""
    if isinstance(name, Template):
        return name
    templates = _bundled()
    if name not in templates:
        raise LabkitError(unknown_key_message(str(name), templates, what="template"))
    return templates[name]

"""labkit's own templates (labkit.yaml, or a custom YAML file): system/user/assistant format strings, EOS per answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from labkit.data.templates.base import EOS, Piece, Template, Turn, check_messages
from labkit.data.templates.spec import check_format, check_keys, check_text, format_pieces, read_yaml

FILE = Path(__file__).with_name("labkit.yaml")
# field -> placeholders it must hold
PLACEHOLDERS: dict[str, set[str]] = {
    "system": {"system"}, "user": {"content"}, "user_with_input": {"instruction", "input"},
    "assistant": {"content"}, "default_system": set(), "default_system_with_input": set(), "separator": set(),
}
REQUIRED_FIELDS = ("system", "user", "assistant")


def _input_of(message: dict) -> tuple[str, str] | None:
    """(instruction, input) of a user message from an alpaca record with a non-empty input, else None."""
    inp = message.get("input")
    return (message.get("instruction", ""), inp) if inp else None


@dataclass(frozen=True)
class OwnTemplate(Template):
    """A chat prompt format. `separator` follows every answer but the last; EOS follows every answer.

    `user_with_input` (optional) renders a user message that carries `instruction` and a non-empty `input` (an
    alpaca record's columns); any other user message uses `user`. Tokenization: the segments, BOS when the
    tokenizer adds one, EOS after each answer, samples cut at the end.
    """

    system: str = "{system}"
    user: str = "{content}"
    assistant: str = "{content}"
    separator: str = ""
    default_system: str = ""
    default_system_with_input: str | None = None
    user_with_input: str | None = None
    source: str = field(default="labkit", init=False)

    @property
    def stop_words(self) -> list[str]:
        marker = self.user.split("{content}")[0].strip()
        return [marker] if len(marker) >= 2 else []

    _pieces = staticmethod(format_pieces)

    def _user_pieces(self, message: dict) -> list[tuple[str, bool, bool]]:
        parts = _input_of(message) if self.user_with_input is not None else None
        if parts:
            return self._pieces(self.user_with_input, {"instruction": parts[0], "input": parts[1]}, False)
        return self._pieces(self.user, {"content": message["content"]}, False)

    def _system_pieces(self, messages: list[dict]) -> tuple[list[tuple[str, bool, bool]], list[dict]]:
        if messages and messages[0]["role"] == "system":
            return self._pieces(self.system, {"system": messages[0]["content"]}, False), messages[1:]
        first_user = next((m for m in messages if m["role"] == "user"), {})
        text = self.default_system
        if self.default_system_with_input is not None and _input_of(first_user):
            text = self.default_system_with_input
        return (self._pieces(self.system, {"system": text}, False, constant_values=True) if text else []), messages

    def render_pieces(self, messages: list[dict]) -> list[tuple[str, bool, bool]]:
        """[(text, trainable, constant)]: template literals (constant) and message contents, without EOS.

        Joining consecutive pieces with the same `trainable` gives the segments; tokenization adds EOS after
        each trainable run (each answer).
        """
        pieces, turns = self._system_pieces(messages)
        for i, m in enumerate(turns):
            if m["role"] == "user":
                pieces += self._user_pieces(m)
            else:
                pieces += self._pieces(self.assistant, {"content": m["content"]}, True)
                if not any(tr for _, tr, _ in pieces[-1:]):  # an empty answer still makes a trainable segment
                    pieces.append(("", True, True))
                if i < len(turns) - 1 and self.separator:
                    pieces.append((self.separator, False, True))
        return pieces

    def turns(self, messages: list[dict]) -> list[Turn]:
        check_messages(messages, self.qualified_name, training=True)
        out: list[Turn] = []
        src, tgt = "", None
        for text, trainable, _ in self.render_pieces(messages):
            if trainable:
                tgt = (tgt or "") + text
            else:
                if tgt is not None:
                    out.append(Turn([Piece(src)], [Piece(tgt), Piece(kind=EOS)]))
                    src, tgt = "", None
                src += text
        out.append(Turn([Piece(src)], [Piece(tgt or ""), Piece(kind=EOS)]))
        return out

    def render_prompt(self, messages: list[dict]) -> str:
        """Everything up to and including the last user turn's prompt (no EOS between earlier turns)."""
        check_messages(messages, self.qualified_name, training=False)
        return "".join(t for t, _, _ in self.render_pieces(messages))


def _template(name: str, spec: dict, where: str) -> OwnTemplate:
    check_keys(spec, set(PLACEHOLDERS) | {"description"}, REQUIRED_FIELDS, where)
    values = {}
    for key, value in spec.items():
        if key == "description":
            values[key] = check_text(value, key, where)
        elif value is None and key in ("default_system_with_input", "user_with_input"):
            values[key] = None
        else:
            values[key] = check_format(value, PLACEHOLDERS[key], key, where)
    return OwnTemplate(name=name, **values)


def load(path: str | Path = FILE) -> dict[str, OwnTemplate]:
    """All templates of a labkit-format YAML file, each checked (placeholders, unknown keys)."""
    return {name: _template(name, spec, f"{path}: template {name!r}") for name, spec in read_yaml(path).items()}

"""LLaMA-Factory templates (register_template slots): per-message pieces, efficient_eos, replace_eos, llama2."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from labkit.data.templates.base import BOS, EOS, TEXT, TOKEN, Piece, Template, Turn, check_messages, split_messages
from labkit.data.templates.spec import check_bool, check_keys, check_text, read_yaml
from labkit.errors import LabkitError

FILE = Path(__file__).with_name("llamafactory.yaml")
KEYS = {"description", "format_user", "format_assistant", "format_system", "format_prefix", "default_system",
        "stop_words", "efficient_eos", "replace_eos", "system_in_user"}
PLACEHOLDER = re.compile(r"\{\{[a-zA-Z_][a-zA-Z0-9_]*\}\}")
Slot = str | Piece


@dataclass(frozen=True)
class LlamaFactoryTemplate(Template):
    """Template._encode: message 0 = prefix + system + user, each later message its own formatter; every slot
    string is encoded on its own. `system_in_user` is Llama2Template (the system text joins the first user
    message). efficient_eos: no EOS after an answer; the next prompt's first token learns EOS, one EOS at the end.
    replace_eos: the first stop word is the EOS token.
    """

    format_user: tuple = ("{{content}}",)
    format_assistant: tuple = ("{{content}}", Piece(kind=EOS))
    format_system: tuple = ("{{content}}",)
    format_prefix: tuple = ()
    default_system: str = ""
    stop_words_: tuple = ()
    efficient_eos_: bool = False
    replace_eos: bool = False
    system_in_user: bool = False
    source: str = field(default="llamafactory", init=False)
    scheme: str = field(default="llamafactory", init=False)
    bos: str = field(default="pieces", init=False)

    @property
    def eos_token(self) -> str:
        return self.stop_words_[0] if self.replace_eos and self.stop_words_ else super().eos_token

    @property
    def stop_words(self) -> list[str]:
        if self.stop_words_:
            return list(self.stop_words_)
        first = next((s for s in self.format_user if isinstance(s, str) and s.strip()), "")
        marker = first.split("{{content}}")[0].strip()
        return [marker] if len(marker) >= 2 else []

    @property
    def efficient_eos(self) -> bool:
        return self.efficient_eos_

    @staticmethod
    def _apply(slots: tuple, **values: str) -> list[Piece]:
        """StringFormatter.apply: each value replaces the first {{name}} of each string slot, in order."""
        out = []
        for slot in slots:
            if isinstance(slot, str):
                for name, value in values.items():
                    slot = slot.replace("{{" + name + "}}", value, 1)
                out.append(Piece(slot))
            else:
                out.append(slot)
        return out

    def _messages(self, messages: list[dict]) -> list[list[Piece]]:
        """The pieces of each message (user, assistant, user, ...), as Template._encode builds its elements."""
        system, pairs = split_messages(messages)
        system = system or self.default_system
        flat = [m for pair in pairs for m in pair if m is not None]
        out = []
        for i, m in enumerate(flat):
            pieces, system_text = [], ""
            if i == 0:
                pieces += list(self.format_prefix)
                if system and self.system_in_user:
                    first = self._apply(self.format_system, content=system)[0]
                    system_text = first.value if first.kind == TEXT else ""
                elif system:
                    pieces += self._apply(self.format_system, content=system)
            if m["role"] == "user":
                values = {"content": m["content"]}
                if not self.system_in_user:  # Template passes the turn index too; Llama2Template does not
                    values["idx"] = str(i // 2)
                if system_text:
                    values["content"] = system_text + m["content"]
                pieces += self._apply(self.format_user, **values)
            else:
                pieces += self._apply(self.format_assistant, content=m["content"])
            out.append(pieces)
        return out

    def turns(self, messages: list[dict]) -> list[Turn]:
        check_messages(messages, self.qualified_name, training=True)
        enc = self._messages(messages)
        return [Turn(enc[i], enc[i + 1]) for i in range(0, len(enc), 2)]

    def trained_flags(self, turns: list[Turn]) -> list[list[bool]]:
        flags = super().trained_flags(turns)
        if self.efficient_eos:  # the first token of every later prompt is trained (to predict EOS)
            for k in range(1, len(turns)):
                if flags[k]:
                    flags[k][0] = True
        return flags

    def render_segments(self, messages, eos_token=None, bos_token="<s>"):
        segs = super().render_segments(messages, eos_token, bos_token)
        if self.efficient_eos:
            eos = self.eos_token if eos_token is None else eos_token
            segs = segs[:-1] + [(segs[-1][0] + eos, True)] if segs and segs[-1][1] else segs + [(eos, True)]
        return segs

    def render_prompt(self, messages: list[dict]) -> str:
        """encode_oneturn with an empty last answer (LLaMA-Factory's chat engine): all messages but that answer."""
        check_messages(messages, self.qualified_name, training=False)
        enc = self._messages(messages + [{"role": "assistant", "content": ""}])
        pieces = [p for msg in enc[:-1] for p in msg]
        if pieces and pieces[0].kind == BOS:
            pieces = pieces[1:]
        return "".join(self._piece_text(p, self.eos_token, "<s>") for p in pieces)


# ---------------------------------------------------------------------------------------------------------- load
def _slots(value, key: str, where: str, placeholder: bool) -> tuple:
    if not isinstance(value, list):
        raise LabkitError(f"{where} {key}: expected a list of slots (strings, {{token: ...}}, {{special: ...}})")
    out: list[Slot] = []
    for slot in value:
        if isinstance(slot, str):
            out.append(slot)
        elif isinstance(slot, dict) and set(slot) == {"special"} and slot["special"] in ("bos_token", "eos_token"):
            out.append(Piece(kind=BOS if slot["special"] == "bos_token" else EOS))
        elif isinstance(slot, dict) and set(slot) == {"token"} and isinstance(slot["token"], str):
            out.append(Piece(slot["token"], TOKEN))
        else:
            raise LabkitError(f"{where} {key}: bad slot {slot!r}; a slot is a string, {{token: NAME}} or "
                              "{special: bos_token|eos_token}")
    has = any(isinstance(s, str) and PLACEHOLDER.search(s) for s in out)
    if placeholder and not has:
        raise LabkitError(f"{where} {key}: a {{{{content}}}} placeholder is required")
    if not placeholder and has:
        raise LabkitError(f"{where} {key}: no placeholder allowed here")
    return tuple(out)


def _template(name: str, spec: dict, where: str) -> LlamaFactoryTemplate:
    check_keys(spec, KEYS, (), where)
    eff = check_bool(spec.get("efficient_eos", False), "efficient_eos", where)
    default_assistant = ["{{content}}"] if eff else ["{{content}}", {"special": "eos_token"}]
    stop = spec.get("stop_words", [])
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise LabkitError(f"{where} stop_words: expected a list of token strings")
    t = LlamaFactoryTemplate(
        name=name, description=check_text(spec.get("description", ""), "description", where),
        format_user=_slots(spec.get("format_user", ["{{content}}"]), "format_user", where, True),
        format_assistant=_slots(spec.get("format_assistant", default_assistant), "format_assistant", where, True),
        format_system=_slots(spec.get("format_system", ["{{content}}"]), "format_system", where, True),
        format_prefix=_slots(spec.get("format_prefix", []), "format_prefix", where, False),
        default_system=check_text(spec.get("default_system", ""), "default_system", where),
        stop_words_=tuple(stop), efficient_eos_=eff,
        replace_eos=check_bool(spec.get("replace_eos", False), "replace_eos", where),
        system_in_user=check_bool(spec.get("system_in_user", False), "system_in_user", where))
    if t.replace_eos and not t.stop_words_:
        raise LabkitError(f"{where}: replace_eos needs stop_words (the first one becomes EOS)")
    if eff and (not t.format_user or isinstance(t.format_user[0], str)):
        raise LabkitError(f"{where}: efficient_eos needs format_user to start with a token slot (the position that "
                          "learns EOS)")
    return t


def load(path: str | Path = FILE) -> dict[str, LlamaFactoryTemplate]:
    return {name: _template(name, spec, f"{path}: template {name!r}") for name, spec in read_yaml(path).items()}

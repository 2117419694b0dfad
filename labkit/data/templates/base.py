"""Template base: a conversation as turns of pieces (text or special tokens) -> segments, training text, refusals."""

from __future__ import annotations

from dataclasses import dataclass, field

from labkit.errors import LabkitError

SOURCES = ("alpaca-lora", "let", "llamafactory", "labkit")
TEXT, BOS, EOS, TOKEN = "text", "bos", "eos", "token"
BOS_STRING, EOS_STRING = "<s>", "</s>"  # how BOS/EOS are written in text (LLaMA's, and labkit's tiny tokenizer's)


@dataclass(frozen=True)
class Piece:
    """One unit the source's tokenization encodes on its own: text (one encode call), BOS, EOS or a named token."""

    value: str = ""
    kind: str = TEXT  # text | bos | eos | token


@dataclass
class Turn:
    """A prompt (not trained) and its answer (trained): what the tools call (source, target) or (prompt, response)."""

    source: list[Piece]
    target: list[Piece]


class TemplateRefusal(LabkitError):
    """The template cannot represent what a conversation holds (e.g. a system prompt under alpaca-lora)."""

    def __init__(self, template: str, reason: str):
        super().__init__(f"template {template}: {reason}")
        self.template, self.reason = template, reason


def check_messages(messages: list[dict], name: str, *, training: bool) -> None:
    """Roles: an optional system first, then user/assistant alternating; training ends with assistant, else user."""
    if not isinstance(messages, list) or not messages:
        raise LabkitError(f"template {name}: expected a non-empty list of messages")
    expect = "user"
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if role == "system" and i == 0:
            continue
        if role != expect:
            where = "may only come first" if role == "system" else f"expected a {expect!r} message"
            raise LabkitError(f"template {name}: message {i} has role {role!r}: {where}")
        expect = "assistant" if role == "user" else "user"
    last = "assistant" if training else "user"
    if messages[-1]["role"] != last:
        what = "training needs messages ending with an assistant turn" if training else \
            "render_prompt needs messages ending with a user turn"
        raise LabkitError(f"template {name}: {what}")


def split_messages(messages: list[dict]) -> tuple[str | None, list[tuple[dict, dict | None]]]:
    """(system or None, [(user message, assistant message or None), ...])."""
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else None
    rest = messages[1:] if system is not None else messages
    pairs = [(rest[i], rest[i + 1] if i + 1 < len(rest) else None) for i in range(0, len(rest), 2)]
    return system, pairs


@dataclass(frozen=True)
class Template:
    """A prompt format of one source (family). Subclasses render turns; tokenization reads `scheme` and `bos`.

    scheme: how `labkit.data.tokenize` turns the turns into ids, as the source does —
      "labkit" (segments, EOS after each answer, cut at the end), "whole" (alpaca-lora: the whole text at once,
      the prompt masked by its own length), "let" (per turn, max_source/target_length), "llamafactory" (per turn,
      infer_seqlen, efficient_eos).
    bos: "tokenizer" (the first text is encoded with the tokenizer's special tokens, like the tool did) or
      "pieces" (BOS only where the template has a bos piece; LLaMA-Factory).
    """

    name: str
    description: str = ""
    source: str = field(default="labkit", init=False)
    scheme: str = field(default="labkit", init=False)
    bos: str = field(default="tokenizer", init=False)

    # -- identity ----------------------------------------------------------------------------------------------
    @property
    def qualified_name(self) -> str:
        return f"{self.source}/{self.name}"

    @property
    def eos_token(self) -> str:
        """The EOS token as written in text (the tokenizer's EOS; LLaMA-Factory templates may replace it)."""
        return EOS_STRING

    @property
    def stop_words(self) -> list[str]:
        """Strings at which generated text is cut (the start of the next user turn unless the source names some)."""
        return []

    @property
    def efficient_eos(self) -> bool:
        return False

    # -- to be provided by each family -----------------------------------------------------------------------------
    def turns(self, messages: list[dict]) -> list[Turn]:
        """The conversation (ending with an assistant turn) as the source's (source, target) turns."""
        raise NotImplementedError

    def render_prompt(self, messages: list[dict]) -> str:
        """The inference prompt: what the model continues after the last user turn, as the source's inference did."""
        raise NotImplementedError

    def refuse(self, reason: str) -> TemplateRefusal:
        return TemplateRefusal(self.qualified_name, reason)

    def check(self, messages: list[dict]) -> None:
        """Raise TemplateRefusal when this template cannot represent the conversation (nothing is dropped)."""
        self.turns(messages)

    # -- derived -----------------------------------------------------------------------------------------------
    def _piece_text(self, piece: Piece, eos_token: str, bos_token: str) -> str:
        return {TEXT: piece.value, TOKEN: piece.value, EOS: eos_token, BOS: bos_token}[piece.kind]

    def trained_flags(self, turns: list[Turn]) -> list[list[bool]]:
        """Per turn, whether each source piece is trained (only LLaMA-Factory's efficient_eos trains one)."""
        return [[False] * len(t.source) for t in turns]

    def render_segments(self, messages: list[dict], eos_token: str | None = None,
                        bos_token: str = BOS_STRING) -> list[tuple[str, bool]]:
        """[(text, trained)]: the training text split where training switches on/off; EOS written as its string.

        No BOS in front (see `bos`); a BOS the template places inside the text is written as `bos_token`.
        """
        eos_token = self.eos_token if eos_token is None else eos_token
        turns = self.turns(messages)
        flags = self.trained_flags(turns)
        segs: list[tuple[str, bool]] = []
        first = True
        for turn, src_flags in zip(turns, flags):
            items = list(zip(turn.source, src_flags)) + [(p, True) for p in turn.target]
            for piece, trained in items:
                if first and piece.kind == BOS:  # the leading BOS is not part of the text
                    first = False
                    continue
                first = False
                text = self._piece_text(piece, eos_token, bos_token)
                if segs and segs[-1][1] == trained:
                    segs[-1] = (segs[-1][0] + text, trained)
                elif text or trained:
                    segs.append((text, trained))
        return [(t, tr) for t, tr in segs if t or tr]

    def render_text(self, messages: list[dict], eos_token: str | None = None, bos_token: str = BOS_STRING) -> str:
        """The whole training text, special tokens as their strings, no BOS in front."""
        return "".join(t for t, _ in self.render_segments(messages, eos_token, bos_token))

    def leading_bos(self, messages: list[dict], tokenizer_adds_bos: bool = True) -> bool:
        """Whether the tokenized sample starts with BOS: the tokenizer's habit, or the template's own bos piece."""
        if self.bos == "tokenizer":
            return tokenizer_adds_bos
        turns = self.turns(messages)
        return bool(turns and turns[0].source and turns[0].source[0].kind == BOS)

"""alpaca-lora templates (its templates/*.json): prompt with/without input + output; whole text tokenized at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from labkit.data.templates.base import EOS, Piece, Template, Turn, check_messages, split_messages
from labkit.data.templates.spec import check_format, check_keys, check_text, format_pieces, read_yaml

FILE = Path(__file__).with_name("alpaca-lora.yaml")
KEYS = {"description", "prompt_input", "prompt_no_input", "response_split"}


@dataclass(frozen=True)
class AlpacaLoraTemplate(Template):
    """Prompter.generate_prompt: `prompt_input` when the record's input is non-empty, else `prompt_no_input`.

    The user message's `instruction`/`input` keys are used (an instruction with a line break stays an
    instruction); a message without them is an instruction with no input. No system prompt, no history: the
    tool reads only instruction/input/output, so such records are refused, never trimmed.
    """

    prompt_input: str = ""
    prompt_no_input: str = ""
    response_split: str = ""
    source: str = field(default="alpaca-lora", init=False)
    scheme: str = field(default="whole", init=False)

    @property
    def stop_words(self) -> list[str]:
        marker = self.prompt_no_input.split("{instruction}")[0].rstrip().rsplit("\n", 1)[-1].strip()
        return [marker] if len(marker) >= 2 else []

    def _prompt(self, messages: list[dict]) -> str:
        fmt, values = self._format(messages)
        return fmt.format(**values)

    def _format(self, messages: list[dict]) -> tuple[str, dict]:
        """Prompter.generate_prompt's choice: (format string, values)."""
        system, pairs = split_messages(messages)
        if system is not None:
            raise self.refuse("the conversation has a system prompt; alpaca-lora's templates have no system slot "
                              "(use a let/, llamafactory/ or labkit/ template, or remove the system field)")
        if len(pairs) > 1:
            raise self.refuse(f"the conversation has {len(pairs) - 1} earlier turn(s) (history); alpaca-lora "
                              "trains single turns only (use a let/, llamafactory/ or labkit/ template)")
        user = pairs[0][0]
        instruction = user.get("instruction", user["content"])
        inp = user.get("input") or ""
        if inp:
            return self.prompt_input, {"instruction": instruction, "input": inp}
        return self.prompt_no_input, {"instruction": instruction}

    def turns(self, messages: list[dict]) -> list[Turn]:
        check_messages(messages, self.qualified_name, training=True)
        prompt = self._prompt(messages)
        return [Turn([Piece(prompt)], [Piece(messages[-1]["content"]), Piece(kind=EOS)])]

    def render_prompt(self, messages: list[dict]) -> str:
        check_messages(messages, self.qualified_name, training=False)
        return self._prompt(messages)

    def render_pieces(self, messages: list[dict]) -> list[tuple[str, bool, bool]]:
        """[(text, trainable, constant)] of prompt + output (no EOS): for tokenization's verified fast path."""
        check_messages(messages, self.qualified_name, training=True)
        fmt, values = self._format(messages)
        pieces = format_pieces(fmt, values, False) + [(messages[-1]["content"], True, False)]
        return pieces if messages[-1]["content"] else pieces + [("", True, True)]


def load(path: str | Path = FILE) -> dict[str, AlpacaLoraTemplate]:
    out = {}
    for name, spec in read_yaml(path).items():
        where = f"{path}: template {name!r}"
        check_keys(spec, KEYS, ("prompt_input", "prompt_no_input"), where)
        out[name] = AlpacaLoraTemplate(
            name=name, description=check_text(spec.get("description", ""), "description", where),
            prompt_input=check_format(spec["prompt_input"], {"instruction", "input"}, "prompt_input", where),
            prompt_no_input=check_format(spec["prompt_no_input"], {"instruction"}, "prompt_no_input", where),
            response_split=check_text(spec.get("response_split", ""), "response_split", where))
    return out

"""Loading template YAML files: mapping checks, unknown keys with hints, str.format placeholders checked."""

from __future__ import annotations

import string
from functools import lru_cache
from pathlib import Path

from labkit.config import unknown_key_message
from labkit.errors import LabkitError


def read_yaml(path: str | Path) -> dict:
    """A YAML file holding a mapping of template name -> fields."""
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
    for name, spec in data.items():
        if not isinstance(spec, dict):
            raise LabkitError(f"{path}: template {name!r} must be a mapping, got {type(spec).__name__}")
    return data


def check_keys(spec: dict, valid: set[str], required: tuple[str, ...], where: str) -> None:
    for key in spec:
        if key not in valid:
            raise LabkitError(unknown_key_message(key, valid, what="template key", source=where))
    for key in required:
        if key not in spec:
            raise LabkitError(f"{where}: has no {key!r}")


def check_format(value, want: set[str], key: str, where: str, exact: bool = True) -> str:
    """A str.format string whose placeholders are exactly `want` (or a subset when not `exact`)."""
    if not isinstance(value, str):
        raise LabkitError(f"{where} {key}: expected a string, got {type(value).__name__}")
    try:
        found = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
    except ValueError as err:
        raise LabkitError(f"{where} {key}: {err} (write literal braces as {{{{ }}}})") from None
    if found - want:
        raise LabkitError(f"{where} {key}: unknown placeholder(s) "
                          f"{', '.join('{' + f + '}' for f in sorted(found - want))}; allowed: "
                          f"{', '.join('{' + f + '}' for f in sorted(want)) or 'none'}")
    if exact and want - found:
        raise LabkitError(f"{where} {key}: missing placeholder(s) "
                          f"{', '.join('{' + f + '}' for f in sorted(want - found))}")
    return value


def check_text(value, key: str, where: str) -> str:
    if not isinstance(value, str):
        raise LabkitError(f"{where} {key}: expected a string, got {type(value).__name__}")
    return value


def check_bool(value, key: str, where: str) -> bool:
    if not isinstance(value, bool):
        raise LabkitError(f"{where} {key}: expected true or false, got {value!r}")
    return value


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


def format_pieces(fmt: str, values: dict, trainable: bool,
                  constant_values: bool = False) -> list[tuple[str, bool, bool]]:
    """fmt.format(**values) as (text, trainable, constant) pieces: each literal run, then each value.

    Joined, the texts equal fmt.format(**values); tokenization's fast path encodes the pieces separately.
    """
    out = []
    for literal, fld, pattern in _parsed(fmt):
        if literal:
            out.append((literal, trainable, True))
        if fld is not None:
            text = values[fld] if pattern is None else pattern.format(**values)
            if text:
                out.append((text, trainable, constant_values))
    return out

"""Strict dataclass configs: unknown keys are rejected with the closest valid name, types are checked."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any, Mapping, TypeVar

from labkit.errors import LabkitError

T = TypeVar("T")


def closest(name: str, valid: typing.Iterable[str]) -> str | None:
    """The valid name closest to `name`, or None when nothing is close."""
    hits = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return hits[0] if hits else None


def unknown_key_message(name: str, valid: typing.Iterable[str], what: str = "key", source: str = "") -> str:
    valid = sorted(valid)
    hint = closest(name, valid)
    where = f" in {source}" if source else ""
    msg = f"unknown {what} {name!r}{where}"
    if hint:
        msg += f" (did you mean {hint!r}?)"
    return msg + f"; valid: {', '.join(valid)}"


def from_dict(cls: type[T], data: Mapping[str, Any], source: str = "") -> T:
    """Build dataclass `cls` from `data`, failing on unknown keys (naming the closest) and wrong types."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise LabkitError(unknown_key_message(key, fields, source=source))
        expected = hints.get(key)
        if expected is not None and not _matches(value, expected):
            where = f" in {source}" if source else ""
            raise LabkitError(f"{key}{where}: expected {_type_name(expected)}, got {type(value).__name__} {value!r}")
        kwargs[key] = value
    return cls(**kwargs)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _matches(value: Any, tp: Any) -> bool:
    """A light runtime type check for the plain types configs use."""
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        return any(_matches(value, a) for a in typing.get_args(tp))
    import types

    if isinstance(tp, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, dict)
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True

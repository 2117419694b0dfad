"""Prompt templates named by their source (alpaca-lora/, let/, llamafactory/, labkit/): lookup, dialect rule, YAML."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from labkit.config import closest
from labkit.data.templates import alpaca_lora, let, llamafactory, own
from labkit.data.templates.base import SOURCES, Piece, Template, TemplateRefusal, Turn
from labkit.data.templates.own import OwnTemplate
from labkit.errors import LabkitError

__all__ = ["SOURCES", "OwnTemplate", "Piece", "Template", "TemplateRefusal", "Turn", "get_template",
           "load_templates", "template_names", "check_examples"]

_LOADERS = {"alpaca-lora": alpaca_lora.load, "let": let.load, "llamafactory": llamafactory.load, "labkit": own.load}
# labkit's former unqualified names: they changed meaning, so they are never resolved silently
RENAMED = {"linly": "labkit/linly-instruct", "alpaca_zh": "labkit/alpaca-zh", "chat": "labkit/roles",
           "alpaca": "alpaca-lora/alpaca", "baichuan": "let/baichuan"}


@lru_cache(maxsize=None)
def _bundled() -> dict[str, Template]:
    """Every bundled template by qualified name; each source's YAML checked on first use."""
    out: dict[str, Template] = {}
    for source, loader in _LOADERS.items():
        for t in loader().values():
            out[t.qualified_name] = t
    labkit_names = {q.split("/", 1)[1] for q in out if q.startswith("labkit/")}
    tool_names = {q.split("/", 1)[1] for q in out if not q.startswith("labkit/")}
    clash = labkit_names & tool_names
    if clash:  # a labkit template must never shadow a tool's
        raise LabkitError(f"labkit template name(s) {sorted(clash)} equal a tool's template name; rename them")
    return out


def template_names(source: str | None = None) -> list[str]:
    """Qualified names (`source/name`) of the bundled templates, all or of one source."""
    if source is not None and source not in SOURCES:
        raise LabkitError(f"unknown template source {source!r}; valid: {', '.join(SOURCES)}")
    return [q for q in _bundled() if source is None or q.split("/", 1)[0] == source]


def _unknown(name: str, pool: list[str], what: str) -> LabkitError:
    short = [q.split("/", 1)[1] for q in pool]
    hint = closest(name.split("/")[-1], short)
    msg = f"unknown template {name!r}"
    if hint:
        msg += f" (did you mean {pool[short.index(hint)]!r}?)"
    return LabkitError(f"{msg}; {what}: {', '.join(pool)}")


def get_template(name: str | Template, dialect: str | None = None) -> Template:
    """A template by qualified name (`let/baichuan`), or unqualified resolved by `dialect` (one of SOURCES).

    With dialect None an unqualified name must belong to exactly one source; otherwise the error lists the
    qualified candidates. A Template object passes through.
    """
    if isinstance(name, Template):
        return name
    if not isinstance(name, str) or not name.strip():
        raise LabkitError(f"template: expected a name such as 'alpaca-lora/alpaca', got {name!r}")
    if dialect is not None and dialect not in SOURCES:
        raise LabkitError(f"unknown dialect {dialect!r}; valid: {', '.join(SOURCES)}")
    name = name.strip()
    templates = _bundled()
    if "/" in name:
        source = name.split("/", 1)[0]
        if source not in SOURCES:
            raise LabkitError(f"template {name!r}: unknown source {source!r}; valid sources: {', '.join(SOURCES)}")
        if name not in templates:
            raise _unknown(name, template_names(source), f"{source} templates")
        return templates[name]
    if dialect is not None:
        qualified = f"{dialect}/{name}"
        if qualified in templates:
            return templates[qualified]
        others = [q for q in templates if q.split("/", 1)[1] == name]
        extra = f" ({name!r} exists as {', '.join(others)}: write the qualified name)" if others else ""
        err = _unknown(qualified, template_names(dialect), f"{dialect} templates")
        raise LabkitError(str(err) + extra)
    candidates = [q for q in templates if q.split("/", 1)[1] == name]
    if len(candidates) == 1 and name not in RENAMED:
        return templates[candidates[0]]
    former = f"labkit's former {name!r} is now {RENAMED[name]!r}" if name in RENAMED else ""
    if candidates:
        raise LabkitError(f"template {name!r} is ambiguous without a dialect: write one of "
                          f"{', '.join(candidates)}" + (f" ({former})" if former else ""))
    if former:
        raise LabkitError(f"template {name!r}: {former}; write the qualified name")
    raise _unknown(name, list(templates), "templates")


def load_templates(path: str | Path) -> dict[str, Template]:
    """labkit-format templates from a YAML file (see labkit.yaml), each checked; source `labkit`."""
    return own.load(path)


def check_examples(examples, template: Template, limit: int = 10) -> None:
    """Every example's messages can be rendered by `template`; else one LabkitError naming the records."""
    problems, count = [], 0
    for ex in examples:
        try:
            template.check(ex["messages"])
        except LabkitError as err:
            count += 1
            if len(problems) < limit:
                reason = err.reason if isinstance(err, TemplateRefusal) else str(err)
                problems.append(f"{ex.get('source', '?')} record {ex.get('index', '?')}: {reason}")
    if count:
        more = f"\n  ... and {count - limit} more" if count > limit else ""
        raise LabkitError(f"template {template.qualified_name}: {count} record(s) cannot be rendered (nothing is "
                          "dropped silently):\n  " + "\n  ".join(problems) + more)

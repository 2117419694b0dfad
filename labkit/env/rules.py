"""Known-issue rules (data in known_issues.yaml) evaluated against installed versions and GPUs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable, Mapping

from labkit.errors import LabkitError

RULES_FILE = Path(__file__).with_name("known_issues.yaml")
_FIELDS = {"id", "title", "when", "gpu_capability", "symptom", "remedy", "scope"}


@dataclasses.dataclass(frozen=True)
class Rule:
    """One known issue: which versions (and GPUs) it affects, what is seen, what to do."""

    id: str
    title: str
    when: dict[str, str]
    symptom: str
    remedy: str
    scope: str = ""
    gpu_capability: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class Finding:
    """A rule evaluated here: status 'affected' | 'ok' | 'n/a' (package or GPU not present)."""

    rule: Rule
    status: str
    detail: str

    @property
    def affected(self) -> bool:
        return self.status == "affected"

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.rule.id, "status": self.status, "title": self.rule.title, "detail": self.detail,
                "symptom": self.rule.symptom, "remedy": self.rule.remedy, "scope": self.rule.scope}


def load_rules(path: str | Path | None = None) -> list[Rule]:
    """Parse the rule table, rejecting unknown fields and invalid specifiers (naming the rule)."""
    import yaml
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    path = Path(path) if path else RULES_FILE
    entries = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    rules = []
    for i, entry in enumerate(entries):
        where = f"{path}: rule {i} ({entry.get('id', '?') if isinstance(entry, dict) else '?'})"
        if not isinstance(entry, dict):
            raise LabkitError(f"{where}: expected a mapping")
        unknown = set(entry) - _FIELDS
        if unknown:
            raise LabkitError(f"{where}: unknown field(s) {sorted(unknown)}; valid: {sorted(_FIELDS)}")
        missing = {"id", "title", "when", "symptom", "remedy"} - set(entry)
        if missing:
            raise LabkitError(f"{where}: missing field(s) {sorted(missing)}")
        when = {str(k): str(v) for k, v in (entry["when"] or {}).items()}
        for pkg, spec in when.items():
            if spec != "any":
                try:
                    SpecifierSet(spec)
                except InvalidSpecifier as err:
                    raise LabkitError(f"{where}: when.{pkg}: invalid specifier {spec!r} ({err})") from None
        rules.append(Rule(id=entry["id"], title=entry["title"], when=when, symptom=entry["symptom"],
                          remedy=entry["remedy"], scope=entry.get("scope", "") or "",
                          gpu_capability=tuple(int(c) for c in entry.get("gpu_capability") or ())))
    return rules


def _gpu_majors(gpus: Iterable[Mapping[str, Any]] | None) -> set[int]:
    majors = set()
    for gpu in gpus or ():
        cap = str(gpu.get("capability", ""))
        if cap.split(".")[0].isdigit():
            majors.add(int(cap.split(".")[0]))
    return majors


def check_rules(versions: Mapping[str, str | None] | None = None, gpus: Iterable[Mapping[str, Any]] | None = None,
                rules: list[Rule] | None = None) -> list[Finding]:
    """Evaluate every rule against `versions` ({package: version or None}) and `gpus` (fingerprint's list).

    `versions=None` reads the installed versions of the packages the rules name.
    """
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    out = []
    majors = _gpu_majors(gpus)
    rules = rules if rules is not None else load_rules()
    if versions is None:
        from labkit.env.fingerprint import package_versions

        versions = package_versions(sorted({pkg for r in rules for pkg in r.when}))
    for rule in rules:
        status, parts = "affected", []
        for pkg, spec in rule.when.items():
            have = versions.get(pkg)
            if have is None:
                status, parts = "n/a", [f"{pkg} not installed"]
                break
            try:
                ver = Version(have)
            except InvalidVersion:
                status, parts = "n/a", [f"{pkg} {have}: unparseable version"]
                break
            if spec != "any" and not SpecifierSet(spec).contains(ver, prereleases=True):
                status = "ok"
                parts.append(f"{pkg} {have} (affected: {spec})")
            else:
                parts.append(f"{pkg} {have}" + ("" if spec == "any" else f" matches {spec}"))
        if status == "affected" and rule.gpu_capability:
            hit = majors & set(rule.gpu_capability)
            wanted = "/".join(f"{c}.x" for c in rule.gpu_capability)
            if hit:
                parts.append(f"GPU compute capability {wanted} present")
            else:
                status = "n/a" if not majors else "ok"
                parts.append(f"no GPU with compute capability {wanted}")
        out.append(Finding(rule=rule, status=status, detail="; ".join(parts)))
    return out


def findings_table(findings: list[Finding]):
    """pandas.DataFrame of findings (affected first) for notebooks."""
    import pandas as pd

    order = {"affected": 0, "ok": 1, "n/a": 2}
    rows = sorted((f.as_dict() for f in findings), key=lambda r: order.get(r["status"], 3))
    return pd.DataFrame(rows, columns=["status", "id", "title", "detail", "symptom", "remedy", "scope"])


def style_findings_table(df):
    """A pandas Styler of `findings_table()` with affected rules highlighted."""
    from labkit.style import status_styler

    return status_styler(df)

"""Pinned (requirements.txt) vs installed versions of every pinned package; environment.yml's pip pins."""

from __future__ import annotations

import importlib.metadata as md
import re
from pathlib import Path

from labkit.errors import LabkitError
from labkit.paths import project_root

_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*==\s*([^\s;#]+)")


def normalize(name: str) -> str:
    """PEP 503 name normalisation (PyYAML == pyyaml, rouge_score == rouge-score)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _parse_lines(lines: list[str], source: str) -> dict[str, str]:
    pins: dict[str, str] = {}
    for lineno, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = _PIN.match(line)
        if not m:
            raise LabkitError(f"{source}:{lineno}: {raw.strip()!r} is not an exact pin (name==version)")
        pins[m.group(1)] = m.group(3)
    return pins


def read_pins(path: str | Path | None = None) -> dict[str, str]:
    """{distribution name as written: version} from a requirements file (default: the project's)."""
    path = Path(path) if path else project_root() / "requirements.txt"
    if not path.is_file():
        raise LabkitError(f"{path}: requirements file not found")
    return _parse_lines(path.read_text(encoding="utf-8").splitlines(), str(path))


def environment_yml_pins(path: str | Path | None = None) -> dict[str, str]:
    """The pip pins of environment.yml (`dependencies: - pip: [name==version, ...]`)."""
    import yaml

    path = Path(path) if path else project_root() / "environment.yml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    pip: list[str] = []
    for dep in doc.get("dependencies", []):
        if isinstance(dep, dict) and "pip" in dep:
            pip.extend(str(x) for x in dep["pip"])
    return _parse_lines(pip, f"{path} (pip section)")


def installed_version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def _matches(pinned: str, installed: str | None) -> bool:
    """Local version labels (torch 2.13.0+cpu) satisfy the pin 2.13.0."""
    if installed is None:
        return False
    return installed == pinned or installed.split("+", 1)[0] == pinned


def pin_table(requirements: str | Path | None = None):
    """pandas.DataFrame: package, pinned, installed, status ('ok' | 'mismatch' | 'missing')."""
    import pandas as pd

    return pd.DataFrame(pin_rows(requirements), columns=["package", "pinned", "installed", "status"])


def pin_rows(requirements: str | Path | None = None) -> list[dict[str, str]]:
    """The pin table as plain dicts (no pandas import; for the CLI and the manifest)."""
    rows = []
    for name, pinned in read_pins(requirements).items():
        inst = installed_version(name)
        status = "missing" if inst is None else ("ok" if _matches(pinned, inst) else "mismatch")
        rows.append({"package": name, "pinned": pinned, "installed": inst or "", "status": status})
    return rows


def style_pin_table(df):
    """A pandas Styler of `pin_table()` with mismatched and missing packages highlighted."""
    from labkit.style import status_styler

    return status_styler(df)

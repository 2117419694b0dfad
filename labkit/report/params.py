"""Notebook parameters: parse the tagged `parameters` cells (ast), load profiles, validate overrides.

Runs before any kernel starts and imports neither papermill nor torch, so a bad `-p` fails in well under
a second. A parameters cell holds lines `name: type = literal  # help`.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import json
import keyword
import tokenize
from pathlib import Path
from typing import Any, Callable, Mapping

from labkit.config import unknown_key_message
from labkit.errors import LabkitError

PARAMETERS_TAG = "parameters"


@dataclasses.dataclass(frozen=True)
class TypeSpec:
    """A declared parameter type: a readable name and a runtime check for plain data."""

    name: str
    check: Callable[[Any], bool]
    is_str: bool = False
    is_float: bool = False


def _isinstance(*types: type) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        if isinstance(v, bool) and bool not in types:
            return False
        return isinstance(v, types)

    return check


_SIMPLE: dict[str, TypeSpec] = {
    "int": TypeSpec("int", _isinstance(int)),
    "float": TypeSpec("float", _isinstance(int, float), is_float=True),
    "str": TypeSpec("str", _isinstance(str), is_str=True),
    "bool": TypeSpec("bool", _isinstance(bool)),
    "list": TypeSpec("list", _isinstance(list, tuple)),
    "tuple": TypeSpec("tuple", _isinstance(list, tuple)),
    "dict": TypeSpec("dict", _isinstance(dict)),
    "None": TypeSpec("None", lambda v: v is None),
    "Any": TypeSpec("Any", lambda v: True),
    "object": TypeSpec("Any", lambda v: True),
}


def _union(specs: list[TypeSpec]) -> TypeSpec:
    return TypeSpec(" | ".join(s.name for s in specs), lambda v: any(s.check(v) for s in specs),
                    is_str=any(s.is_str for s in specs), is_float=any(s.is_float for s in specs))


def _type_from_ast(node: ast.expr | None, default: Any) -> TypeSpec:
    """TypeSpec of an annotation (int, float, str, bool, list[str], dict, X | None, Optional[X], Literal[...])."""
    if node is None:  # unannotated: the default's type (None default: anything)
        if default is None:
            return _SIMPLE["Any"]
        return _SIMPLE.get(type(default).__name__, _SIMPLE["Any"])
    if isinstance(node, ast.Constant):
        if node.value is None:
            return _SIMPLE["None"]
        if isinstance(node.value, str):  # string annotation
            return _type_from_ast(ast.parse(node.value, mode="eval").body, default)
    if isinstance(node, ast.Name):
        return _SIMPLE.get(node.id, _SIMPLE["Any"])
    if isinstance(node, ast.Attribute):  # typing.Any, typing.Optional ...
        return _SIMPLE.get(node.attr, _SIMPLE["Any"])
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _union([_type_from_ast(node.left, default), _type_from_ast(node.right, default)])
    if isinstance(node, ast.Subscript):
        base = node.value.id if isinstance(node.value, ast.Name) else getattr(node.value, "attr", "")
        args = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if base == "Literal":
            values = [ast.literal_eval(a) for a in args]
            return TypeSpec(f"one of {values!r}", lambda v: any(v == x and type(v) is type(x) for x in values),
                            is_str=all(isinstance(x, str) for x in values))
        if base == "Optional":
            return _union([_type_from_ast(args[0], default), _SIMPLE["None"]])
        if base == "Union":
            return _union([_type_from_ast(a, default) for a in args])
        if base in ("list", "List", "tuple", "Tuple", "Sequence"):
            item = _type_from_ast(args[0], None) if base in ("list", "List", "Sequence") else _SIMPLE["Any"]
            return TypeSpec(f"list[{item.name}]",
                            lambda v: isinstance(v, (list, tuple)) and all(item.check(x) for x in v))
        if base in ("dict", "Dict", "Mapping"):
            val = _type_from_ast(args[1], None) if len(args) > 1 else _SIMPLE["Any"]
            return TypeSpec(f"dict[str, {val.name}]",
                            lambda v: isinstance(v, dict) and all(isinstance(k, str) and val.check(x)
                                                                  for k, x in v.items()))
    return _SIMPLE["Any"]


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One declared parameter of one notebook."""

    name: str
    type: TypeSpec
    default: Any
    help: str
    notebook: str
    line: int


def _comments(source: str) -> dict[int, str]:
    out: dict[int, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                out[tok.start[0]] = tok.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError):
        pass
    return out


def parse_parameters_source(source: str, notebook: str = "<cell>") -> dict[str, ParamSpec]:
    """The parameters declared by a `parameters` cell's source; non-literal lines fail naming the line."""
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise LabkitError(f"{notebook}: parameters cell line {err.lineno}: syntax error ({err.msg})") from None
    comments = _comments(source)
    specs: dict[str, ParamSpec] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            name, annotation, value = stmt.target.id, stmt.annotation, stmt.value
        elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            name, annotation, value = stmt.targets[0].id, None, stmt.value
        else:
            raise LabkitError(f"{notebook}: parameters cell line {stmt.lineno}: only `name: type = literal  # help` "
                              "lines belong in the parameters cell (derived values go in the next cell)")
        try:
            default = ast.literal_eval(value)
        except ValueError:
            raise LabkitError(f"{notebook}: parameters cell line {stmt.lineno}: {name} must be a literal "
                              f"(got {ast.unparse(value)!r})") from None
        spec = _type_from_ast(annotation, default)
        help_ = comments.get(stmt.end_lineno or stmt.lineno, "") or comments.get(stmt.lineno, "")
        specs[name] = ParamSpec(name, spec, default, help_, notebook, stmt.lineno)
    return specs


def parameters_cell(nb: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The first code cell tagged `parameters`, or None."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code" and PARAMETERS_TAG in (cell.get("metadata", {}).get("tags") or []):
            return cell
    return None


def notebook_parameters(path: str | Path) -> dict[str, ParamSpec]:
    """Parameters declared by a notebook file (json read; no nbformat import needed)."""
    path = Path(path)
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise LabkitError(f"{path}: cannot read notebook ({err})") from None
    cell = parameters_cell(nb)
    if cell is None:
        return {}
    source = cell.get("source", "")
    source = "".join(source) if isinstance(source, list) else source
    return parse_parameters_source(source, notebook=path.stem)


def is_plain(value: Any) -> bool:
    """Plain YAML data: None, bool, int, float, str, and lists / str-keyed dicts of them."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
    return False


def check_name(name: Any, source: str) -> str:
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise LabkitError(f"{source}: parameter name {name!r} is not a Python identifier")
    return name


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    """`-p key=value` strings -> {key: raw value text} (typed later, against the declared types)."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise LabkitError(f"-p {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        out[check_name(key.strip(), f"-p {item!r}")] = raw
    return out


def load_profile(name_or_path: str, profiles_dir: str | Path | None = None) -> tuple[str, dict[str, Any], Path]:
    """(profile name, {parameter: value}, file) from profiles/<name>.yaml or a path to a YAML file."""
    import yaml

    from labkit.paths import profiles_dir as default_profiles_dir

    folder = Path(profiles_dir) if profiles_dir else default_profiles_dir()
    if name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path:
        path = Path(name_or_path)
    else:
        path = folder / f"{name_or_path}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
        raise LabkitError(f"profile {name_or_path!r} not found ({path}); available: {', '.join(available) or 'none'}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise LabkitError(f"{path}: invalid YAML ({err})") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise LabkitError(f"{path}: a profile is a mapping of parameter: value, got {type(data).__name__}")
    for key, value in data.items():
        check_name(key, str(path))
        if not is_plain(value):
            raise LabkitError(f"{path}: {key}: value {value!r} is not plain YAML data")
    return path.stem, data, path


def _coerce(spec: ParamSpec, value: Any, raw: str | None, source: str) -> Any:
    """Check `value` against the declared type; -p text stays text for str parameters (`-p tag=1.0`)."""
    if raw is not None and spec.type.is_str and not isinstance(value, str) and not spec.type.check(value):
        value = raw
    if spec.type.is_float and isinstance(value, str) and not spec.type.check(value):
        try:  # YAML 1.1 reads `3e-4` (no dot) as text
            value = float(value)
        except ValueError:
            pass
    if not is_plain(value):
        raise LabkitError(f"{source}: {spec.name}={value!r} is not plain data (scalars, lists, dicts)")
    if not spec.type.check(value):
        raise LabkitError(f"{source}: {spec.name} expects {spec.type.name} (declared in {spec.notebook}, "
                          f"line {spec.line}), got {type(value).__name__} {value!r}")
    if spec.type.is_float and isinstance(value, int) and not isinstance(value, bool) and spec.type.name == "float":
        value = float(value)
    return value


@dataclasses.dataclass
class Plan:
    """Validated parameters: the final overrides and, per notebook, the values papermill injects."""

    final: dict[str, Any]  # every override (profile + -p) after type checks
    injected: dict[str, dict[str, Any]]  # notebook stem -> {name: value} for names it declares
    effective: dict[str, dict[str, Any]]  # notebook stem -> all its parameters after overrides
    specs: dict[str, dict[str, ParamSpec]]


def plan_parameters(selected: list[Path], all_notebooks: list[Path], profile_values: Mapping[str, Any],
                    overrides: Mapping[str, str] | None = None, typed: Mapping[str, Any] | None = None,
                    profile_source: str = "profile") -> Plan:
    """Validate profile values, `-p` overrides (raw text) and typed values against the notebooks' cells.

    A `-p` or typed name must be declared by a notebook that will run; a profile name by any notebook
    (profiles cover the whole workbook even when `--only` runs a subset).
    """
    specs = {p.stem: notebook_parameters(p) for p in all_notebooks}
    for p in selected:
        specs.setdefault(p.stem, notebook_parameters(p))
    run_names = [p.stem for p in selected]
    declared_run = {n for stem in run_names for n in specs[stem]}
    declared_any = {n for s in specs.values() for n in s}

    values: dict[str, tuple[Any, str | None, str]] = {}  # name -> (value, raw text or None, source)
    for name, value in profile_values.items():
        if name not in declared_any:
            raise LabkitError(unknown_key_message(name, declared_any, what="parameter", source=profile_source))
        values[name] = (value, None, profile_source)
    for name, value in (typed or {}).items():
        check_name(name, "parameters")
        if name not in declared_any:
            raise LabkitError(unknown_key_message(name, declared_any, what="parameter", source="recorded parameters"))
        values[name] = (value, None, "recorded parameters")
    for name, raw in (overrides or {}).items():
        if name not in declared_run:
            partial = len(run_names) != len(all_notebooks)
            where = "-p" + (f" (notebooks to run: {', '.join(run_names)})" if partial else "")
            raise LabkitError(unknown_key_message(name, declared_run, what="parameter", source=where))
        values[name] = (_yaml_value(raw, name), raw, f"-p {name}={raw}")

    final: dict[str, Any] = {}
    injected: dict[str, dict[str, Any]] = {stem: {} for stem in run_names}
    effective: dict[str, dict[str, Any]] = {}
    for name, (value, raw, source) in values.items():
        declaring = [stem for stem in specs if name in specs[stem]]
        typed_value = value
        for stem in declaring:  # every declaration must accept the value
            typed_value = _coerce(specs[stem][name], value, raw, source)
        final[name] = typed_value
        for stem in run_names:
            if name in specs[stem]:
                injected[stem][name] = typed_value
    for stem in run_names:
        effective[stem] = {n: s.default for n, s in specs[stem].items()} | injected[stem]
    return Plan(final=final, injected=injected, effective=effective, specs=specs)


def _yaml_value(raw: str, name: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise LabkitError(f"-p {name}={raw}: not valid YAML ({str(err).splitlines()[0]})") from None


def describe(specs: Mapping[str, Mapping[str, ParamSpec]]) -> str:
    """A table of every parameter: name, type, default, notebooks, help (for `labkit run --list-params`)."""
    rows: dict[str, list[Any]] = {}
    for stem, params in specs.items():
        for name, spec in params.items():
            row = rows.setdefault(name, [spec.type.name, spec.default, [], spec.help])
            row[2].append(stem.split("_", 1)[0])
    width = max((len(n) for n in rows), default=4)
    lines = [f"{'name':<{width}}  {'type':<12} {'default':<20} notebooks  help"]
    for name in sorted(rows):
        tname, default, nbs, help_ = rows[name]
        shown = json.dumps(default, ensure_ascii=False)
        shown = shown if len(shown) <= 20 else shown[:17] + "..."
        lines.append(f"{name:<{width}}  {tname:<12} {shown:<20} "
                     f"{','.join(nbs):<10} {help_}")
    return "\n".join(lines)

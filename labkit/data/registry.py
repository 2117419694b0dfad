"""dataset_info.json registry (LLaMA-Factory format) and `load_datasets`: read, validate, de-duplicate and mix."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from labkit.config import closest, unknown_key_message
from labkit.data import formats, mixing
from labkit.data.validation import RecordError, ValidationReport
from labkit.errors import LabkitError

ENTRY_KEYS = {  # LLaMA-Factory / LLaMA-Efficient-Tuning keys; others are ignored unless they look like a typo
    "hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name", "file_name", "file_sha1", "file_sha",
    "subset", "folder", "ranking", "formatting", "split", "num_samples", "columns", "tags", "stage", "load_from",
}
COLUMN_KEYS = {"prompt", "query", "response", "history", "messages", "system", "tools", "images", "videos",
               "audios", "chosen", "rejected", "kto_tag"}
TAG_KEYS = set(formats.SHAREGPT_TAGS)
UNSUPPORTED_COLUMNS = {"images", "videos", "audios", "chosen", "rejected", "kto_tag"}
DATA_SUFFIXES = (".json", ".jsonl")


@dataclass
class DatasetAttr:
    """One registry entry, checked."""

    name: str
    file_name: str
    formatting: str = "alpaca"
    columns: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)
    split: str = "train"
    num_samples: int | None = None


def read_registry(path: str | Path) -> dict:
    """The parsed dataset_info.json (an object of name -> entry); LabkitError (exit 2) when unusable."""
    path = Path(path)
    if not path.is_file():
        raise LabkitError(f"{path}: registry not found (a dataset_info.json is expected there)")
    try:
        info = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as err:
        raise LabkitError(f"{path}: not valid UTF-8 (byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise LabkitError(f"{path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    if not isinstance(info, dict):
        raise LabkitError(f"{path}: expected a JSON object of dataset name -> entry, got {type(info).__name__}")
    return info


def dataset_attr(name: str, info: dict, registry: str | Path) -> DatasetAttr:
    """Check one entry and return its DatasetAttr; every problem is a LabkitError naming registry, dataset, key."""
    where = f"{registry}: dataset {name!r}"
    if name not in info:
        raise LabkitError(unknown_key_message(name, info, what="dataset", source=str(registry)))
    entry = info[name]
    if not isinstance(entry, dict):
        raise LabkitError(f"{where}: entry must be an object, got {type(entry).__name__}")
    for key in entry:
        if key not in ENTRY_KEYS and closest(key, ENTRY_KEYS):
            raise LabkitError(f"{where}: " + unknown_key_message(key, ENTRY_KEYS))
    if not entry.get("file_name"):
        for hub in ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name"):
            if entry.get(hub):
                raise LabkitError(f"{where}: not available offline ({hub} {entry[hub]!r}); download it, put the "
                                  f"file here ({Path(registry).parent}) and set \"file_name\" in the entry")
        raise LabkitError(f"{where}: no \"file_name\"; set it to the data file (relative to {Path(registry).parent})")
    if entry.get("ranking"):
        raise LabkitError(f"{where}: ranking (preference) data is not supported for SFT")
    fmt = entry.get("formatting", "alpaca")
    if fmt not in formats.FORMATTINGS:
        hint = closest(str(fmt), formats.FORMATTINGS)
        raise LabkitError(f"{where}: unknown formatting {fmt!r}" + (f" (did you mean {hint!r}?)" if hint else "")
                          + "; valid: alpaca, sharegpt")
    columns = entry.get("columns") or {}
    tags = entry.get("tags") or {}
    for label, mapping, valid in (("columns", columns, COLUMN_KEYS), ("tags", tags, TAG_KEYS)):
        if not isinstance(mapping, dict):
            raise LabkitError(f"{where}: {label} must be an object")
        for key, value in mapping.items():
            if key not in valid:
                raise LabkitError(f"{where}: " + unknown_key_message(key, valid, what=f"{label} key"))
            if value is not None and not isinstance(value, str):
                raise LabkitError(f"{where}: {label}.{key} must be a field name (string), got {value!r}")
    allowed = {"alpaca": {"prompt", "query", "response", "history", "system", "tools"},
               "sharegpt": {"messages", "system", "tools"}}[fmt]
    for key, value in columns.items():
        if value and key in UNSUPPORTED_COLUMNS:
            raise LabkitError(f"{where}: columns.{key} ({key} data) is not supported for SFT here")
        if value and key not in allowed:
            raise LabkitError(f"{where}: columns.{key} does not apply to {fmt} data (use {', '.join(sorted(allowed))})")
    n = entry.get("num_samples")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n <= 0):
        raise LabkitError(f"{where}: num_samples must be a positive integer, got {n!r}")
    # tools stays mapped: records that declare tools are refused one by one (formats.Normalizer), never trimmed
    return DatasetAttr(name, str(entry["file_name"]), fmt, dict(columns), dict(tags), str(entry.get("split", "train")),
                       n)


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in DATA_SUFFIXES and p.is_file())
    return [path]


def load_datasets(names, dataset_dir=None, strict: bool = True, seed: int = 42, registry=None,
                  drop_duplicates: bool = False, total: int | None = None, shuffle: bool | None = None,
                  check: bool = True) -> tuple[list[dict], ValidationReport]:
    """Load registered datasets, validate every record and mix them.

    `names`: "a,b" or a list; each may carry an amount: "negatives:100" (count), "tasks:0.5" (fraction),
    "negatives:10%" (share of the mix). `dataset_dir` defaults to the bundled data/; `registry` to
    <dataset_dir>/dataset_info.json. Strict: any rejected record raises (exit 1); lenient drops and reports.
    Unusable input (missing file, not JSON, bad registry) always raises (exit 2) unless `check=False`.
    """
    from labkit.paths import data_dir

    if registry is not None:
        registry = Path(registry)
        dataset_dir = Path(dataset_dir) if dataset_dir else registry.parent
    else:
        dataset_dir = Path(dataset_dir) if dataset_dir else data_dir()
        registry = dataset_dir / "dataset_info.json"
    spec = mixing.parse_spec(names)
    info = read_registry(registry)
    attrs = [dataset_attr(name, info, registry) for name, _ in spec]
    report = ValidationReport()
    groups: dict[str, list[dict]] = {}
    for attr in attrs:
        path = Path(attr.file_name)
        path = path if path.is_absolute() else dataset_dir / path
        examples: list[dict] = []
        for f in _files(path):
            ex, _ = formats.read_file(f, attr.formatting, attr.columns, attr.tags, source=attr.name, report=report,
                                      check_columns=bool(attr.columns))
            examples += ex
        if path.is_dir() and not _files(path):
            report.fatal(str(path), None, None, "folder holds no .json or .jsonl file")
        if attr.num_samples is not None and examples:
            examples = mixing._take(examples, attr.num_samples, random.Random(seed))
        groups[attr.name] = examples
    dedupe(groups, report, drop=drop_duplicates)
    amounts = {name: amount for name, amount in spec}
    examples, report.mix = mixing.mix(groups, amounts, seed=seed, total=total, shuffle=shuffle)
    if check:
        report.raise_if_failed(strict)
    return examples, report


def load_files(paths, formatting: str | None = None, strict: bool = True, drop_duplicates: bool = False,
               check: bool = True) -> tuple[list[dict], ValidationReport]:
    """Load data files directly (format detected per file unless given); same validation as load_datasets."""
    report = ValidationReport()
    groups: dict[str, list[dict]] = {}
    for p in paths:
        ex, _ = formats.read_file(p, formatting, report=report, source=str(p))
        groups[str(p)] = ex
    dedupe(groups, report, drop=drop_duplicates)
    examples = [e for g in groups.values() for e in g]
    if check:
        report.raise_if_failed(strict)
    return examples, report


def load_file(path, formatting: str | None = None, strict: bool = True, seed: int = 42, **kwargs
              ) -> tuple[list[dict], ValidationReport]:
    """One data file (alpaca-lora's --data_path): load_files([path]); `seed` accepted for symmetry."""
    return load_files([path], formatting=formatting, strict=strict, **kwargs)


def dedupe(groups: dict[str, list[dict]], report: ValidationReport, drop: bool = False) -> None:
    """Count examples whose messages repeat an earlier one (across all groups); drop them (as rejected) if asked."""
    seen: dict[str, tuple[str, int]] = {}
    by_name = {d.dataset: d for d in report.datasets}
    for name, examples in groups.items():
        keep = []
        for ex in examples:
            key = json.dumps(ex["messages"], ensure_ascii=False, sort_keys=True)
            if key in seen:
                report.duplicates += 1
                first = seen[key]
                report.duplicate_records.append({"file": name, "index": ex["index"], "first": f"{first[0]}#{first[1]}"})
                if name in by_name:
                    by_name[name].duplicates += 1
                if drop:
                    report.kept -= 1
                    report.rejected += 1
                    report.errors.append(RecordError(name, ex["index"], None, None,
                                                     f"duplicate of {first[0]} record {first[1]}"))
                    if name in by_name:
                        by_name[name].kept -= 1
                        by_name[name].rejected += 1
                    continue
            else:
                seen[key] = (name, ex["index"])
            keep.append(ex)
        examples[:] = keep

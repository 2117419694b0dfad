"""`labkit data check ...` (validate; exit 0 / 1 / 2) and `labkit data render ...` (training text per record)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from labkit.data.validation import ValidationReport
from labkit.errors import LabkitError

EPILOG = """exit codes: 0 nothing rejected, 1 records rejected, 2 unusable input (missing file, not JSON, bad registry).
--json prints one object: {"read", "kept", "rejected", "duplicates", "errors": [{"file", "index", "line", "field",
"reason"}]}. Without --dataset, --registry checks every entry that names a local file."""
RENDER_EPILOG = """Shows exactly what a model is trained on: the template applied to each record, special tokens written
as their strings (EOS as </s> unless --tokenizer names another; no BOS in front: "BOS first" says whether the
tokenizer/template adds one), and the inference prompt of the last user turn. --json: one object per line with
"index", "text", "prompt" (and "source", "bos", "segments": [[text, trained], ...]). Template names: source/name
(alpaca-lora/alpaca, let/baichuan, llamafactory/qwen, labkit/roles); an unqualified name must be unambiguous."""


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="labkit data", description="Check instruction datasets.", epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", metavar="check|render")
    c = sub.add_parser("check", help="validate files and/or registered datasets", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("paths", nargs="*", metavar="PATH", help="alpaca/sharegpt data files (JSON array or JSONL)")
    c.add_argument("--registry", default="", help="a dataset_info.json (default with --dataset: the bundled data/)")
    c.add_argument("--dataset", default="", help="registered dataset name(s), comma separated; amounts allowed")
    c.add_argument("--format", choices=["alpaca", "sharegpt"], default=None, help="formatting of PATHs (default: detect)")
    c.add_argument("--lenient", action="store_true", help="report as lenient loading would (rejected records dropped)")
    c.add_argument("--drop-duplicates", action="store_true", help="count duplicates as rejected")
    c.add_argument("--json", action="store_true", help="print one JSON object instead of the text report")
    r = sub.add_parser("render", help="show each record's training text and prompt under a template",
                       epilog=RENDER_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("paths", nargs="*", metavar="FILE", help="alpaca/sharegpt data file(s)")
    r.add_argument("--registry", default="", help="a dataset_info.json (default with --dataset: the bundled data/)")
    r.add_argument("--dataset", default="", help="registered dataset name(s), comma separated")
    r.add_argument("--template", required=True, help="template name, e.g. alpaca-lora/alpaca or let/baichuan")
    r.add_argument("--tokenizer", default="",
                   help="tokenizer folder whose EOS/BOS strings to write (default </s>, <s>)")
    r.add_argument("--limit", type=int, default=0, help="render only the first N records (0 = all)")
    r.add_argument("--json", action="store_true", help="one JSON object per record, one per line")
    return ap


def check(paths: list[str], registry: str = "", dataset: str = "", formatting: str | None = None,
          drop_duplicates: bool = False) -> tuple[ValidationReport, list[str]]:
    """Validate files and registered datasets; never raises for bad data. Returns (report, notes)."""
    from labkit.data.registry import UNSUPPORTED_COLUMNS, dataset_attr, load_datasets, load_files, read_registry
    from labkit.paths import data_dir

    report, notes = ValidationReport(), []
    if paths:
        try:
            _, r = load_files(paths, formatting=formatting, drop_duplicates=drop_duplicates, check=False)
            report.merge(r)
        except LabkitError as err:
            report.fatal(", ".join(paths), None, None, _reason(err, ", ".join(paths)))
    if registry or dataset:
        reg = Path(registry) if registry else data_dir() / "dataset_info.json"
        try:
            names = dataset
            if not names:
                info = read_registry(reg)
                local = []
                for name, entry in info.items():
                    if isinstance(entry, dict) and not entry.get("file_name") and not entry.get("ranking"):
                        notes.append(f"skipped {name!r}: not available offline (no file_name)")
                    elif isinstance(entry, dict) and entry.get("ranking"):
                        notes.append(f"skipped {name!r}: ranking data (not SFT)")
                    elif isinstance(entry, dict) and isinstance(entry.get("columns"), dict) and \
                            set(k for k, v in entry["columns"].items() if v) & UNSUPPORTED_COLUMNS:
                        notes.append(f"skipped {name!r}: multimodal / preference columns (not text SFT)")
                    else:
                        dataset_attr(name, info, reg)
                        local.append(name)
                names = ",".join(local)
            if names:
                _, r = load_datasets(names, registry=reg, drop_duplicates=drop_duplicates, check=False)
                report.merge(r)
        except LabkitError as err:
            report.fatal(str(reg), None, None, _reason(err, str(reg)))
    return report, notes


def _reason(err: LabkitError, file: str) -> str:
    """The error's text without a leading '<file>: ' (the report line names the file already)."""
    text = str(err)
    return text[len(file) + 2:] if text.startswith(file + ": ") else text


def _text(report: ValidationReport, notes: list[str], lenient: bool, limit: int = 50) -> str:
    lines = []
    for d in report.datasets:
        lines.append(f"{d.dataset} [{d.formatting}] {d.file}: read {d.read}, kept {d.kept}, rejected {d.rejected}, "
                     f"duplicates {d.duplicates}")
    lines += [f"note: {n}" for n in notes]
    for e in report.errors[:limit]:
        lines.append(f"  {e}")
    if len(report.errors) > limit:
        lines.append(f"  ... and {len(report.errors) - limit} more (--json lists all)")
    if lenient and report.rejected and not report.unusable:
        lines.append(f"lenient: {report.rejected} record(s) would be dropped; training would use {report.kept}")
    lines.append(report.summary())
    return "\n".join(lines)


def _special_strings(folder: Path) -> dict[str, str]:
    """bos_token / eos_token strings of a tokenizer folder (tokenizer_config.json, special_tokens_map.json)."""
    out: dict[str, str] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        f = folder / name
        if not f.is_file():
            continue
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise LabkitError(f"{f}: not valid JSON ({err}); fix or pass another --tokenizer") from None
        for key in ("bos_token", "eos_token"):
            value = data.get(key)
            value = value.get("content") if isinstance(value, dict) else value
            if isinstance(value, str) and value:
                out.setdefault(key, value)
    if not folder.is_dir() or "eos_token" not in out:
        raise LabkitError(f"--tokenizer {folder}: no tokenizer_config.json / special_tokens_map.json naming an "
                          "eos_token there")
    return out


def render(args) -> int:
    """Print every record rendered; bad data, names or records the template refuses raise LabkitError."""
    from labkit.data.registry import load_datasets, load_files
    from labkit.data.render import readable, render_examples, to_json_line
    from labkit.data.templates import get_template
    from labkit.paths import data_dir

    if not args.paths and not args.registry and not args.dataset:
        raise LabkitError("labkit data render: nothing to render: give FILE(s), or --registry FILE --dataset NAME")
    if args.registry and not args.dataset:
        raise LabkitError("--registry: name the dataset(s) to render with --dataset NAME")
    template = get_template(args.template)  # checked before any data is read
    eos, bos = None, "<s>"
    if args.tokenizer:
        names = _special_strings(Path(args.tokenizer))
        eos = None if getattr(template, "replace_eos", False) else names.get("eos_token")
        bos = names.get("bos_token") or bos
    examples: list[dict] = []
    if args.paths:
        examples += load_files(args.paths)[0]
    if args.dataset:
        reg = args.registry or str(data_dir() / "dataset_info.json")
        examples += load_datasets(args.dataset, registry=reg, shuffle=False)[0]
    if args.limit > 0:
        examples = examples[: args.limit]
    for record in render_examples(examples, template, eos, bos):
        print(to_json_line(record) if args.json else readable(record, template))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    try:
        args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    if args.command == "render":
        return render(args)
    if args.command != "check":
        ap.print_help()
        return 2
    if not args.paths and not args.registry and not args.dataset:
        print("error: nothing to check: give PATH(s), or --registry FILE and/or --dataset NAME", file=sys.stderr)
        return 2
    report, notes = check(args.paths, args.registry, args.dataset, args.format, args.drop_duplicates)
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        print(_text(report, notes, args.lenient))
    if report.unusable:
        return 2
    return 1 if report.rejected else 0

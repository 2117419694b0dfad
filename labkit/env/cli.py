"""`labkit env [--json] [--no-probe] [--strict]`: fingerprint, pin check and known-issue rules."""

from __future__ import annotations

import argparse
import json
from typing import Any


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="labkit env", description=__doc__.split(":", 1)[1].strip())
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    p.add_argument("--no-probe", action="store_true", help="skip the real int8/nf4 bitsandbytes matmul probe")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when a pin mismatches or a known issue affects this environment")
    return p


def report(probe_quantization: bool = True) -> dict[str, Any]:
    """Everything `labkit env` shows, as plain data: fingerprint, pins, findings."""
    from labkit.env.fingerprint import fingerprint, package_versions
    from labkit.env.pins import pin_rows
    from labkit.env.rules import check_rules, load_rules

    fp = fingerprint(probe_quantization=probe_quantization)
    rules = load_rules()
    versions = package_versions(sorted({pkg for r in rules for pkg in r.when}))
    findings = check_rules(versions, fp.get("gpus"), rules)
    return {"fingerprint": fp, "pins": pin_rows(), "findings": [f.as_dict() for f in findings]}


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "; ".join(_fmt(v) for v in value) or "none"
    return str(value)


def format_text(rep: dict[str, Any]) -> str:
    fp = rep["fingerprint"]
    lines = ["Environment fingerprint"]
    for key, value in fp.items():
        if key == "packages":
            continue
        if key == "bitsandbytes" and isinstance(value, dict):
            for kind in ("int8", "nf4"):
                if kind in value:
                    r = value[kind]
                    state = "works" if r.get("ok") else "FAILS"
                    extra = f" (rel. error {r['rel_error']})" if "rel_error" in r else ""
                    extra += f" - {r['error']}" if r.get("error") else ""
                    lines.append(f"  {'bitsandbytes ' + kind:<24} {state}{extra}")
            lines.append(f"  {'bitsandbytes':<24} {value.get('version')}")
            continue
        lines.append(f"  {key:<24} {_fmt(value)}")
    bad = [r for r in rep["pins"] if r["status"] != "ok"]
    lines += ["", f"Pins (requirements.txt): {len(rep['pins']) - len(bad)}/{len(rep['pins'])} match"]
    for r in rep["pins"]:
        mark = "  " if r["status"] == "ok" else "!!"
        lines.append(f"  {mark} {r['package']:<22} pinned {r['pinned']:<12} installed {r['installed'] or '-':<14}"
                     f" {r['status']}")
    lines += ["", "Known issues"]
    for f in sorted(rep["findings"], key=lambda f: {"affected": 0, "ok": 1}.get(f["status"], 2)):
        lines.append(f"  [{f['status']:>8}] {f['id']}: {f['title']}")
        lines.append(f"             {f['detail']}")
        if f["status"] == "affected":
            if f.get("scope"):
                lines.append(f"             scope: {f['scope']}")
            lines.append(f"             symptom: {f['symptom']}")
            lines.append(f"             remedy: {f['remedy']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    rep = report(probe_quantization=not args.no_probe)
    if args.json:
        print(json.dumps(rep, indent=2, default=str))
    else:
        print(format_text(rep))
    if args.strict:
        bad_pins = any(r["status"] != "ok" for r in rep["pins"])
        affected = any(f["status"] == "affected" for f in rep["findings"])
        return 1 if (bad_pins or affected) else 0
    return 0

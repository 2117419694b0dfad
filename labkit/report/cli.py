"""`labkit run [--profile NAME] [--only 00,03] [-p key=value ...] [--rerun reports/<id>]`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="labkit run",
        description="Run notebooks/NN_*.ipynb in order with papermill into reports/<run-id>/ (executed notebooks, "
                    "self-contained HTML, manifest.json) and regenerate reports/index.html. The last line printed "
                    "is the run folder; the exit code is non-zero when a notebook failed.")
    p.add_argument("--profile", default="tiny", help="profiles/<NAME>.yaml or a path to a YAML file (default: tiny)")
    p.add_argument("--only", default=None, help="comma-separated notebook numbers or names, e.g. 00,03")
    p.add_argument("-p", "--param", dest="params", action="append", default=[], metavar="KEY=VALUE",
                   help="override a parameter (YAML value) in every notebook that declares it; repeatable")
    p.add_argument("--rerun", metavar="RUN_DIR", default=None,
                   help="run again with the exact profile, parameters and notebooks of reports/<id> and report "
                        "every metric that differs (exit 1 if any)")
    p.add_argument("--rtol", type=float, default=0.0, help="relative tolerance for --rerun float comparisons")
    p.add_argument("--list-params", action="store_true", help="list every notebook parameter and exit")
    p.add_argument("--shared-kernel", action="store_true",
                   help="run all notebooks in one kernel, its namespace reset between notebooks: heavy imports are "
                        "paid once (saves ~4 s per notebook); default: a fresh kernel per notebook")
    p.add_argument("--no-progress", action="store_true", help="no per-cell progress bar")
    p.add_argument("--log-output", action="store_true", help="stream each cell's output to the terminal")
    return p


def _fmt(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from labkit.errors import LabkitError

    if args.list_params:
        from labkit import paths
        from labkit.report.params import describe, notebook_parameters
        from labkit.report.runner import discover_notebooks

        specs = {p.stem: notebook_parameters(p) for p in discover_notebooks(paths.notebooks_dir())}
        print(describe(specs))
        return 0
    command = ["labkit", "run", *(argv if argv is not None else sys.argv[1:])]
    common = dict(progress=not args.no_progress, log_output=args.log_output, command=command)
    if args.rerun:
        if args.only or args.params or args.profile != "tiny":
            raise LabkitError("--rerun takes the profile, parameters and notebooks from the earlier run; "
                              "do not combine it with --profile, --only or -p")
        from labkit.report.runner import rerun

        result, diffs = rerun(args.rerun, rtol=args.rtol, share_kernel=True if args.shared_kernel else None, **common)
        if diffs:
            print(f"\n{len(diffs)} metric(s) differ from {args.rerun}:")
            width = max(len(n) for n, _, _ in diffs)
            print(f"  {'metric':<{width}}  old -> new")
            for name, old, new in diffs:
                print(f"  {name:<{width}}  {_fmt(old)} -> {_fmt(new)}")
        else:
            print(f"\nall metrics identical to {args.rerun} (timings and the machine fingerprint ignored)")
        print(result.run_dir)
        return 1 if (diffs or result.exit_code) else 0
    from labkit.report.runner import run

    result = run(profile=args.profile, only=args.only, overrides=args.params, share_kernel=args.shared_kernel, **common)
    print(result.run_dir)
    return result.exit_code

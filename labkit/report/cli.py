"""`labkit run [--profile NAME] [--only 00,03] [-p key=value ...] [--rerun FOLDER|ZIP] [--zip]` and `labkit share`."""

from __future__ import annotations

import argparse
import sys


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
    p.add_argument("--rerun", metavar="FOLDER_OR_ZIP", default=None,
                   help="run again with the profile, parameters and notebooks of an earlier run folder (from "
                        "anywhere) or a zip made by `labkit share`: says what differs in the environment and the "
                        "code, then every metric that differs (exit 1 if any); -p replaces a recorded value "
                        "(e.g. your own copy of a base model folder)")
    p.add_argument("--rtol", type=float, default=0.0,
                   help="relative tolerance for --rerun number comparisons (default 0: exact)")
    p.add_argument("--zip", action="store_true",
                   help="also write <run folder>.zip to share: HTML, manifest, executed notebooks, trained adapters")
    p.add_argument("--list-params", action="store_true", help="list every notebook parameter and exit")
    p.add_argument("--shared-kernel", action="store_true",
                   help="run all notebooks in one kernel, its namespace reset between notebooks: heavy imports are "
                        "paid once (saves ~4 s per notebook); default: a fresh kernel per notebook")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="notebooks run side by side, each started when the notebooks it needs (its metadata "
                        "labkit.needs) are done, the threads shared among them; default: 2 for the tiny models on "
                        "2+ CPUs, 1 when a profile names a base model folder")
    p.add_argument("--no-progress", action="store_true", help="no per-cell progress bar")
    p.add_argument("--log-output", action="store_true", help="stream each cell's output to the terminal")
    return p


def _list_params() -> int:
    from labkit import paths
    from labkit.report.params import describe, notebook_parameters
    from labkit.report.runner import discover_notebooks

    specs = {p.stem: notebook_parameters(p) for p in discover_notebooks(paths.notebooks_dir())}
    print(describe(specs))
    return 0


def _print_share(run_dir) -> None:
    from labkit.report.share import write_share_zip

    out, files = write_share_zip(run_dir)
    print(f"share: {out} ({len(files)} files, {out.stat().st_size / 2**20:.1f} MiB)")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from labkit.errors import LabkitError

    if args.list_params:
        return _list_params()
    command = ["labkit", "run", *(argv if argv is not None else sys.argv[1:])]
    common = dict(progress=not args.no_progress, log_output=args.log_output, command=command, jobs=args.jobs)
    if args.rerun:
        if args.only or args.profile != "tiny":
            raise LabkitError("--rerun takes the profile, parameters and notebooks from the earlier run; "
                              "do not combine it with --profile or --only (-p replaces a recorded value)")
        from labkit.report.rerun import rerun

        rr = rerun(args.rerun, rtol=args.rtol, share_kernel=True if args.shared_kernel else None,
                   overrides=args.params, **common)
        result, code = rr.result, rr.exit_code
    else:
        from labkit.report.runner import run

        result = run(profile=args.profile, only=args.only, overrides=args.params, share_kernel=args.shared_kernel,
                     **common)
        code = result.exit_code
    if args.zip:
        _print_share(result.run_dir)
    print(result.run_dir)
    return code


def share_main(argv: list[str] | None = None) -> int:
    """`labkit share FOLDER [--out FILE.zip]`: one zip a colleague reruns with `labkit run --rerun FILE.zip`."""
    p = argparse.ArgumentParser(
        prog="labkit share",
        description="Write one .zip of a run folder: its HTML reports, manifest.json, executed notebooks and "
                    "trained LoRA adapters (not base models, not checkpoints). A colleague reruns it with "
                    "`labkit run --rerun FILE.zip`. The last line printed is the zip.")
    p.add_argument("folder", help="a run folder, e.g. reports/<run-id>")
    p.add_argument("--out", default=None, help="zip to write (default: <folder>.zip next to the folder)")
    args = p.parse_args(argv)
    from labkit.report.share import write_share_zip

    out, files = write_share_zip(args.folder, args.out)
    for rel in files:
        print(f"  {rel.as_posix()}")
    print(f"{len(files)} files, {out.stat().st_size / 2**20:.1f} MiB; rerun with: labkit run --rerun {out}")
    print(out)
    return 0

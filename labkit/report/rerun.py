"""`labkit run --rerun FOLDER|ZIP`: what differs in environment and code first, then a fresh run and its verdict."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

from labkit.report.compare import code_differences, comparable_metrics, compare_metrics, environment_differences
from labkit.report.manifest import write_manifest
from labkit.report.runner import RunResult, run
from labkit.report.share import open_run

IGNORED = "timings and the machine fingerprint are not compared"


@dataclasses.dataclass
class Rerun:
    """The outcome of a rerun: the new run, and what differs from the earlier one."""

    result: RunResult
    environment: list[tuple[str, Any, Any]]  # (what, recorded, now)
    code: list[str]  # lines about commits and uncommitted changes
    diffs: list[tuple[str, Any, Any]]  # (metric, old, new) beyond rtol
    compared: int  # metrics compared
    rtol: float

    @property
    def verdict(self) -> str:
        return "identical" if not self.diffs and self.result.status == "ok" else "differs"

    @property
    def exit_code(self) -> int:
        return 0 if self.verdict == "identical" else 1


def _fmt(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _tolerance(rtol: float) -> str:
    return "exact (rtol 0)" if not rtol else f"rtol {rtol:g}"


def environment_lines(diffs: list[tuple[str, Any, Any]]) -> list[str]:
    """'environment: ...' lines: each fact recorded by the earlier run that differs on this machine."""
    if not diffs:
        return ["environment: no difference in the recorded versions, torch build, CPU/GPU kind or bf16 support"]
    width = max(len(name) for name, _, _ in diffs)
    lines = [f"environment: {len(diffs)} difference(s) (recorded -> this machine):"]
    lines += [f"  {name:<{width}}  {_fmt(old)} -> {_fmt(new)}" for name, old, new in diffs]
    return lines


def metric_lines(rr: Rerun, old_id: str) -> list[str]:
    """'metrics: ...' lines with the tolerance, each differing metric, and the verdict."""
    tol = _tolerance(rr.rtol)
    if not rr.diffs:
        lines = [f"metrics: all {rr.compared} identical to {old_id}, {tol}; {IGNORED}"]
    else:
        width = max(len(n) for n, _, _ in rr.diffs)
        lines = [f"metrics: {len(rr.diffs)} of {rr.compared} differ from {old_id} beyond {tol}; {IGNORED}:",
                 f"  {'metric':<{width}}  old -> new"]
        lines += [f"  {name:<{width}}  {_fmt(old)} -> {_fmt(new)}" for name, old, new in rr.diffs]
    if rr.result.status != "ok":
        lines.append(f"the rerun itself {rr.result.status}: see {rr.result.run_dir}")
    lines.append(f"verdict: {rr.verdict}")
    return lines


def outside_lines(old: dict[str, Any], overrides: list[str] | None) -> list[str]:
    """The earlier run's parameters that were absolute paths outside its clone (a 7B folder ...): found here or not."""
    given = {item.split("=", 1)[0].strip() for item in overrides or []}
    lines = []
    for where, path in ((old.get("paths") or {}).get("outside") or {}).items():
        name = where.removeprefix("parameters.")
        if name == where or "." in name:
            continue
        if name in given:
            lines.append(f"  {name} = {path} (replaced by -p {name})")
        elif Path(path).exists():
            lines.append(f"  {name} = {path} (found here)")
        else:
            lines.append(f"  {name} = {path} (missing here: pass -p {name}=<your copy>)")
    return ["outside the clone (absolute paths the earlier run was given):", *lines] if lines else []


def _project_root(kwargs: dict[str, Any]) -> Path:
    from labkit import paths

    nb_dir = kwargs.get("notebooks_dir")
    return Path(nb_dir).resolve().parent if nb_dir else paths.project_root()


def _record_verdict(rr: Rerun) -> None:
    """The verdict goes into the new run's manifest (`rerun_of`) and the index shows it next to the original."""
    from labkit.report.index import write_index

    rr.result.manifest["rerun_of"].update(
        verdict=rr.verdict, rtol=rr.rtol, metrics_compared=rr.compared, metrics_differ=len(rr.diffs),
        differing=[name for name, _, _ in rr.diffs][:20], environment_differences=len(rr.environment))
    write_manifest(rr.result.run_dir, rr.result.manifest)
    write_index(rr.result.run_dir.parent)


def rerun(source: str | Path, rtol: float = 0.0, share_kernel: bool | None = None,
          echo: Callable[[str], None] | None = None, **kwargs: Any) -> Rerun:
    """Run again with the profile, parameters, notebooks (and kernel mode, unless `share_kernel` is given) of an
    earlier run folder or share zip. Says first what differs in the environment and the code, then runs; the
    returned Rerun holds the metrics that differ beyond `rtol` (0: exact). `kwargs`: other RunOptions fields
    (`overrides`: `-p` strings replacing recorded values, e.g. the path of your own copy of a base model)."""
    from labkit.env.fingerprint import fingerprint

    say = echo or (lambda s: print(s, flush=True))
    with open_run(source) as (folder, old):
        old_id = old.get("run_id") or Path(folder).name
        say(f"rerun of {old_id} ({source})")
        env_diffs = environment_differences(old.get("environment") or {}, fingerprint(probe_quantization=False))
        code = code_differences(old.get("git") or {}, _project_root(kwargs))
        for line in environment_lines(env_diffs) + code + outside_lines(old, kwargs.get("overrides")):
            say(line)
        kwargs.setdefault("command", None)
        if old.get("threads") and not kwargs.get("threads"):
            kwargs["threads"] = int(old["threads"])  # CPU results are bit-identical only at the same thread count
            say(f"threads: {kwargs['threads']}, as recorded")
            kwargs.setdefault("jobs", int(old.get("jobs") or 1))  # each kernel's share of the threads, as recorded
        kwargs["share_kernel"] = (old.get("kernel") == "shared") if share_kernel is None else share_kernel
        result = run(profile=old.get("profile") or "tiny", only=list(old["notebooks"]),
                     parameters=old.get("parameters") or {}, echo=echo, torch_details=True,
                     rerun_of={"run_id": old_id, "source": str(Path(source).resolve()), "verdict": None}, **kwargs)
        diffs = compare_metrics(old, result.manifest, rtol)
        rr = Rerun(result, env_diffs, code, diffs, len(comparable_metrics(old)), rtol)
    _record_verdict(rr)
    say("")
    for line in environment_lines(env_diffs) + code + metric_lines(rr, old_id):
        say(line)
    return rr

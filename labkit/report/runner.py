"""The papermill runner behind `labkit run`: notebooks in order into reports/<run-id>/ with HTML + manifest."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import json
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from labkit.errors import LabkitError
from labkit.report.kernels import (
    ensure_kernel,
    finish_kernel,
    kill_kernel,
    prepare_shared_kernel,
    start_kernel,
    stop_kernel,
)
from labkit.report.manifest import git_info, read_manifest, write_manifest
from labkit.report.metrics import METRICS_DIRNAME, flatten, read_metrics, same_value
from labkit.report.params import Plan, load_profile, parse_overrides, plan_parameters

NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
ENV_NOTEBOOK = "00_environment"
# Metrics whose leaf name matches are timings/throughput: they differ run to run and `--rerun` ignores them.
VOLATILE = re.compile(r"(runtime|seconds|duration|elapsed|wall|_time$|time_s$|_s$|per_second|per_s$|"
                      r"throughput|timestamp|tokens_per|samples_per|steps_per|flos|memory|rss|_mb$|_gb$)",
                      re.IGNORECASE)


def discover_notebooks(folder: str | Path) -> list[Path]:
    """notebooks/NN_*.ipynb in order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LabkitError(f"{folder}: notebooks folder not found")
    return sorted(folder.glob(NOTEBOOK_GLOB))


def select_notebooks(notebooks: list[Path], only: str | list[str] | None) -> list[Path]:
    """`--only 00,03` (numbers or stems) -> those notebooks, in workbook order."""
    if not only:
        return list(notebooks)
    wanted = [w.strip() for w in (only.split(",") if isinstance(only, str) else only) if w.strip()]
    by_key: dict[str, Path] = {}
    for p in notebooks:
        by_key[p.stem] = p
        by_key[p.stem.split("_", 1)[0]] = p
    missing = [w for w in wanted if w not in by_key and w.zfill(2) not in by_key]
    if missing:
        raise LabkitError(f"--only: no notebook {', '.join(map(repr, missing))}; available: "
                          f"{', '.join(p.stem for p in notebooks) or 'none'}")
    chosen = {by_key.get(w, by_key.get(w.zfill(2))) for w in wanted}
    return [p for p in notebooks if p in chosen]


def _now() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def new_run_dir(reports_dir: Path, profile: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", profile) or "run"
    for i in range(1000):
        path = reports_dir / (f"{stamp}-{safe}" + (f"-{i + 1}" if i else ""))
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise LabkitError(f"{reports_dir}: cannot create a run folder")


@dataclasses.dataclass
class RunResult:
    run_dir: Path
    status: str  # ok | failed | interrupted
    manifest: dict[str, Any]

    @property
    def exit_code(self) -> int:
        return 0 if self.status == "ok" else 1


def cell_timings(ipynb: Path) -> tuple[float, list[dict[str, Any]]]:
    """(seconds in cells, the slowest cells [{"cell": In [n], "seconds", "source": first line}]) of an executed
    notebook, from papermill's per-cell metadata."""
    try:
        nb = json.loads(ipynb.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return 0.0, []
    cells = []
    for cell in nb.get("cells", []):
        pm = cell.get("metadata", {}).get("papermill") or {}
        if cell.get("cell_type") == "code" and pm.get("duration") is not None:
            src = cell.get("source", "")
            src = "".join(src) if isinstance(src, list) else src
            first = next((ln for ln in src.splitlines() if ln.strip()), "")
            cells.append({"cell": cell.get("execution_count"), "seconds": round(float(pm["duration"]), 2),
                          "source": first[:60]})
    total = sum(c["seconds"] for c in cells)
    return total, sorted(cells, key=lambda c: -c["seconds"])[:3]


def time_table(manifest: dict[str, Any]) -> str:
    """Per-notebook seconds: cells, overhead (kernel start, papermill), HTML export, total."""
    lines = [f"{'notebook':<24} {'status':<11} {'cells':>7} {'overhead':>9} {'html':>6} {'total':>7}"]
    tot = {"cells_s": 0.0, "overhead_s": 0.0, "html_s": 0.0, "duration_s": 0.0}
    for stem, info in manifest["notebooks"].items():
        if info.get("status") in ("pending", "skipped"):
            lines.append(f"{stem:<24} {info.get('status'):<11}")
            continue
        vals = {k: float(info.get(k) or 0.0) for k in tot}
        for k in tot:
            tot[k] += vals[k]
        lines.append(f"{stem:<24} {info.get('status', ''):<11} {vals['cells_s']:>7.1f} {vals['overhead_s']:>9.1f} "
                     f"{vals['html_s']:>6.1f} {vals['duration_s']:>7.1f}")
    lines.append(f"{'total (s)':<24} {'':<11} {tot['cells_s']:>7.1f} {tot['overhead_s']:>9.1f} {tot['html_s']:>6.1f} "
                 f"{tot['duration_s']:>7.1f}")
    wall = manifest.get("duration_s")
    if isinstance(wall, (int, float)):
        lines.append(f"run wall time {wall:.1f} s (includes validation, set-up and index)")
    slow = [(info["slowest_cells"][0], stem) for stem, info in manifest["notebooks"].items() if info.get("slowest_cells")]
    if slow:
        lines.append("slowest cell of each notebook:")
        for cell, stem in slow:
            lines.append(f"  {stem:<22} In [{cell['cell']}] {cell['seconds']:>7.1f} s  {cell['source']}")
    return "\n".join(lines)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C: kernels stopped, manifest and index marked."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _interruptible(fn: Callable[..., RunResult]) -> Callable[..., RunResult]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> RunResult:
        with _sigterm_as_interrupt():
            return fn(*args, **kwargs)

    return wrapper


@_interruptible
def run(profile: str = "tiny", only: str | list[str] | None = None, overrides: list[str] | dict[str, str] | None = None,
        *, parameters: dict[str, Any] | None = None, notebooks_dir: str | Path | None = None,
        reports_dir: str | Path | None = None, profiles_dir: str | Path | None = None, progress: bool = True,
        log_output: bool = False, echo: Callable[[str], None] | None = None, command: list[str] | None = None,
        start_timeout: int = 120, rerun_of: str | None = None, share_kernel: bool = False) -> RunResult:
    """Run the selected notebooks in order into a new run folder; never raises for a failing notebook.

    `overrides`: `-p` strings (`key=value`) or {key: raw text}; `parameters`: already typed values (rerun).
    `share_kernel`: one kernel for all notebooks, its namespace reset between them (imports are paid once);
    the default gives each notebook a fresh kernel.
    Parameter problems raise LabkitError before any kernel starts.
    """
    from labkit import paths

    t0 = time.perf_counter()
    say = echo or (lambda s: print(s, flush=True))
    nb_dir = Path(notebooks_dir).resolve() if notebooks_dir else paths.notebooks_dir()
    rep_dir = Path(reports_dir).resolve() if reports_dir else paths.reports_dir()
    notebooks = discover_notebooks(nb_dir)
    if not notebooks:
        raise LabkitError(f"{nb_dir}: no notebooks named NN_*.ipynb")
    selected = select_notebooks(notebooks, only)
    raw = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    if parameters is None:
        prof_name, prof_values, prof_path = load_profile(profile, profiles_dir)
    else:  # a rerun: the recorded values replace the profile file's (which may have changed or gone)
        prof_name, prof_values, prof_path = Path(profile).stem, {}, Path(profile)
    plan: Plan = plan_parameters(selected, notebooks, prof_values, raw, typed=parameters,
                                 profile_source=str(prof_path))

    # ---- validated; from here on a run folder exists
    run_dir = new_run_dir(rep_dir, prof_name)
    (run_dir / METRICS_DIRNAME).mkdir()
    from labkit.env.fingerprint import fingerprint
    from labkit.report.index import write_index

    manifest: dict[str, Any] = {
        "run_id": run_dir.name,
        "run_dir": str(run_dir),
        "status": "running",
        "profile": prof_name,
        "parameters": plan.final,
        "only": [p.stem for p in selected] if len(selected) != len(notebooks) else None,
        "started": _now(),
        "finished": None,
        "duration_s": None,
        "command": command,
        "rerun_of": rerun_of,
        "kernel": "shared" if share_kernel else "fresh per notebook",
        "git": git_info(nb_dir),
        "environment": fingerprint(probe_quantization=False, torch_details=False),
        "environment_source": "runner (versions only; notebook 00 records the full fingerprint)",
        "notebooks": {p.stem: {"status": "pending", "parameters": plan.effective[p.stem]} for p in selected},
    }
    write_manifest(run_dir, manifest)
    write_index(rep_dir)
    say(f"labkit run: profile {prof_name}, {len(selected)} notebook(s) -> {run_dir}")
    if plan.final:
        say("parameters: " + ", ".join(f"{k}={v!r}" for k, v in plan.final.items()))

    if log_output:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(message)s")
    status = "ok"
    stopping: list[Any] = []
    shared_km = None
    try:
        kernel = ensure_kernel()
        import papermill as pm
        from papermill.exceptions import PapermillExecutionError

        from labkit.report.html import export_html

        for i, path in enumerate(selected, 1):
            while len(stopping) > 1:  # reap kernels from two notebooks ago: long gone by now
                finish_kernel(stopping.pop(0))
            stem = path.stem
            info = manifest["notebooks"][stem]
            out_nb = run_dir / path.name
            say(f"[{i}/{len(selected)}] {stem}")
            info.update(status="running", started=_now())
            write_manifest(run_dir, manifest)
            t_nb = time.perf_counter()
            error = None
            killed = False
            try:
                if shared_km is None:
                    km = start_kernel(kernel, nb_dir, LABKIT_RUN_DIR=str(run_dir), LABKIT_NOTEBOOK=stem)
                    if share_kernel:
                        shared_km = km
                else:
                    km = shared_km
                    prepare_shared_kernel(km, stem)
                try:
                    pm.execute_notebook(str(path), str(out_nb), parameters=plan.injected[stem], kernel_name=kernel,
                                        cwd=str(nb_dir), progress_bar=progress, log_output=log_output,
                                        start_timeout=start_timeout, km=km)
                except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the kernel goes now, its cell may run for hours
                    killed = True
                    kill_kernel(km)
                    shared_km = None
                    raise
                finally:
                    if not share_kernel and not killed:
                        stop_kernel(km, wait=False)  # it exits while the HTML is written and the next kernel starts
                        stopping.append(km)
            except PapermillExecutionError as err:
                error = f"{err.ename}: {err.evalue} (cell In [{err.exec_count}])"
            except KeyboardInterrupt:
                error = "interrupted"
                raise
            except Exception as err:  # kernel died, timeout, unreadable notebook ...
                error = f"{type(err).__name__}: {err}"
            finally:
                t_exec = time.perf_counter() - t_nb
                info["status"] = "ok" if error is None else ("interrupted" if error == "interrupted" else "failed")
                info["error"] = error
                info["ipynb"] = out_nb.name if out_nb.exists() else None
                cells, slowest = cell_timings(out_nb) if out_nb.exists() else (0.0, [])
                info["slowest_cells"] = slowest
                info["cells_s"] = round(cells, 2)
                info["overhead_s"] = round(max(t_exec - cells, 0.0), 2)
                t_html = time.perf_counter()
                if out_nb.exists():
                    try:
                        info["html"] = export_html(out_nb).name
                    except Exception as err:  # a report problem must not hide the run's result
                        info["html"] = None
                        info["html_error"] = f"{type(err).__name__}: {err}"
                info["html_s"] = round(time.perf_counter() - t_html, 2)
                info["duration_s"] = round(time.perf_counter() - t_nb, 2)
                info["metrics"] = read_metrics(run_dir / METRICS_DIRNAME / f"{stem}.json")
                if stem == ENV_NOTEBOOK and isinstance(info["metrics"].get("fingerprint"), dict):
                    manifest["environment"] = info["metrics"]["fingerprint"]
                    manifest["environment_source"] = ENV_NOTEBOOK
                write_manifest(run_dir, manifest)
            if error is not None:
                status = "failed"
                say(f"FAILED {stem}: {error}")
                say(f"  see {run_dir / (info.get('html') or out_nb.name)}")
                break
            say(f"  ok in {info['duration_s']:.1f} s")
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except BaseException:  # a bug or set-up failure (no kernel): the folder must not claim to be running
        status = "failed"
        raise
    finally:
        if shared_km is not None:
            stop_kernel(shared_km, wait=False)
            stopping.append(shared_km)
        for km in stopping:
            if status == "interrupted":
                kill_kernel(km)
            else:
                finish_kernel(km)
        stopping.clear()
        for info in manifest["notebooks"].values():
            if info["status"] == "pending":
                info["status"] = "skipped"
        manifest["status"] = status
        manifest["finished"] = _now()
        manifest["duration_s"] = round(time.perf_counter() - t0, 2)
        write_manifest(run_dir, manifest)
        write_index(rep_dir)
        say("")
        say(time_table(manifest))
        say(f"index: {rep_dir / 'index.html'}")
        say(f"status: {status}")
    return RunResult(run_dir=run_dir, status=status, manifest=manifest)


RUN_DIR_TOKEN = "<run_dir>"


def _neutral(value: Any, run_dir: str | None) -> Any:
    """Paths inside a run folder differ between runs by design: write them relative to `<run_dir>`."""
    if not run_dir:
        return value
    if isinstance(value, str):
        return value.replace(run_dir, RUN_DIR_TOKEN)
    if isinstance(value, list):
        return [_neutral(v, run_dir) for v in value]
    return value


def comparable_metrics(manifest: dict[str, Any], run_dir: str | Path | None = None) -> dict[str, Any]:
    """Flattened metrics minus the environment fingerprint and timing-like (volatile) values, with paths
    into the run folder made run-independent."""
    folder = str(run_dir or manifest.get("run_dir") or "") or None
    out = {}
    for stem, info in (manifest.get("notebooks") or {}).items():
        for name, value in flatten(info.get("metrics") or {}):
            if name.startswith("fingerprint") or VOLATILE.search(name.rsplit(".", 1)[-1]):
                continue
            out[f"{stem}.{name}"] = _neutral(value, folder)
    return out


_MISSING = "<missing>"


def compare_metrics(old: dict[str, Any], new: dict[str, Any], rtol: float = 0.0, old_dir: str | Path | None = None,
                    new_dir: str | Path | None = None) -> list[tuple[str, Any, Any]]:
    """(name, old, new) for every comparable metric that differs between two manifests."""
    a, b = comparable_metrics(old, old_dir), comparable_metrics(new, new_dir)
    diffs = []
    for name in list(a) + [n for n in b if n not in a]:
        va, vb = a.get(name, _MISSING), b.get(name, _MISSING)
        if not same_value(va, vb, rtol):
            diffs.append((name, va, vb))
    return diffs


def rerun(old_run: str | Path, rtol: float = 0.0, share_kernel: bool | None = None,
          **kwargs: Any) -> tuple[RunResult, list[tuple[str, Any, Any]]]:
    """Run again with the exact profile, parameters, notebooks (and kernel mode, unless `share_kernel` is
    given) of an earlier run; return (result, [(metric, old, new) for every differing metric])."""
    old_dir = Path(old_run)
    old = read_manifest(old_dir)
    stems = list(old["notebooks"])
    kwargs.setdefault("command", None)
    kwargs["share_kernel"] = (old.get("kernel") == "shared") if share_kernel is None else share_kernel
    result = run(profile=old.get("profile") or "tiny", only=stems, parameters=old.get("parameters") or {},
                 rerun_of=str(old_dir), **kwargs)
    return result, compare_metrics(old, result.manifest, rtol, old_dir=old_dir.resolve(), new_dir=result.run_dir)

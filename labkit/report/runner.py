"""The papermill runner behind `labkit run`: plan -> run folder -> each notebook (execute, HTML, metrics) -> index."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from labkit.errors import LabkitError
from labkit.report import portable
from labkit.report.kernels import KernelSession, ensure_kernel
from labkit.report.manifest import git_info, write_manifest
from labkit.report.metrics import METRICS_DIRNAME, read_metrics
from labkit.report.params import Plan, load_profile, parse_overrides, plan_parameters
from labkit.report.schedule import auto_jobs, dependencies, ready
from labkit.report.timings import cell_timings, time_table

NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
ENV_NOTEBOOK = "00_environment"


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
class RunOptions:
    """What to run and how (the CLI fills it from its flags; unknown names are a TypeError)."""

    profile: str = "tiny"  # profiles/<name>.yaml or a YAML path
    only: str | list[str] | None = None  # `--only 00,03`
    overrides: list[str] | dict[str, str] | None = None  # `-p key=value` strings or {key: raw text}
    parameters: dict[str, Any] | None = None  # already typed values (a rerun's recorded parameters)
    notebooks_dir: str | Path | None = None  # default: <project root>/notebooks
    reports_dir: str | Path | None = None  # default: <project root>/reports (LABKIT_REPORTS)
    profiles_dir: str | Path | None = None
    share_kernel: bool = False  # one kernel for all notebooks, namespace reset between them
    progress: bool = True  # per-cell progress bar
    log_output: bool = False  # stream cell output to the terminal
    echo: Callable[[str], None] | None = None  # where progress lines go (default: print)
    command: list[str] | None = None  # the command line, recorded in the manifest
    start_timeout: int = 120  # seconds for a kernel to start
    rerun_of: dict[str, Any] | None = None  # set by `--rerun`: which run this repeats
    torch_details: bool = False  # the runner's fingerprint imports torch (CUDA, GPUs, bf16): a rerun compares them
    threads: int | None = None  # torch threads for every kernel (a rerun: the recorded count); None = by load now
    jobs: int | None = None  # notebooks at once (`--jobs`; a rerun: the recorded count); None = schedule.auto_jobs


@dataclasses.dataclass
class RunPlan:
    """Everything validated before a run folder or a kernel exists."""

    profile: str
    root: Path  # the clone: folder holding notebooks/ (paths under it are recorded as <root>/...)
    notebooks_dir: Path
    reports_dir: Path
    notebooks: list[Path]  # all of the workbook
    selected: list[Path]  # the ones to run, in order
    params: Plan
    deps: dict[str, set[str]]  # stem -> selected notebooks it waits for (labkit.report.schedule)


@dataclasses.dataclass
class RunResult:
    run_dir: Path
    status: str  # ok | failed | interrupted
    manifest: dict[str, Any]

    @property
    def exit_code(self) -> int:
        return 0 if self.status == "ok" else 1


@dataclasses.dataclass
class RunState:
    """A run in progress: its plan, folder and manifest (saved after every change)."""

    opts: RunOptions
    plan: RunPlan
    run_dir: Path
    manifest: dict[str, Any]
    started: float
    lock: threading.RLock = dataclasses.field(default_factory=threading.RLock)  # notebooks may run side by side
    interrupted: bool = False  # Ctrl-C / SIGTERM: kernels killed; a notebook failing now was interrupted

    def say(self, line: str) -> None:
        with self.lock:
            (self.opts.echo or (lambda s: print(s, flush=True)))(line)

    def save(self) -> None:
        with self.lock:
            write_manifest(self.run_dir, self.manifest)

    def portable(self, value: Any, where: str) -> Any:
        """`value` with paths as <run>/... or <root>/...; outside paths named in manifest paths.outside."""
        return portable.to_portable(value, self.run_dir, self.plan.root, self.manifest["paths"]["outside"], where)


def plan_run(opts: RunOptions) -> RunPlan:
    """Notebooks, profile and parameters checked against the parameters cells (raises LabkitError, no kernel)."""
    from labkit import paths

    nb_dir = Path(opts.notebooks_dir).resolve() if opts.notebooks_dir else paths.notebooks_dir()
    rep_dir = Path(opts.reports_dir).resolve() if opts.reports_dir else paths.reports_dir()
    root = nb_dir.parent if opts.notebooks_dir else paths.project_root()
    notebooks = discover_notebooks(nb_dir)
    if not notebooks:
        raise LabkitError(f"{nb_dir}: no notebooks named NN_*.ipynb")
    selected = select_notebooks(notebooks, opts.only)
    raw = opts.overrides if isinstance(opts.overrides, dict) else parse_overrides(opts.overrides)
    if opts.parameters is None:
        name, values, source = load_profile(opts.profile, opts.profiles_dir)
    else:  # a rerun: the recorded values replace the profile file's (which may have changed or gone)
        name, values, source = Path(opts.profile).stem, {}, Path(opts.profile)
    params = plan_parameters(selected, notebooks, values, raw, typed=opts.parameters, profile_source=str(source))
    if opts.jobs is not None and int(opts.jobs) < 1:
        raise LabkitError(f"--jobs {opts.jobs}: at least 1 notebook at a time")
    if opts.share_kernel and opts.jobs and int(opts.jobs) > 1:
        raise LabkitError(f"--shared-kernel runs every notebook in one kernel, one at a time; drop --jobs {opts.jobs}")
    return RunPlan(name, root, nb_dir, rep_dir, notebooks, selected, params, dependencies(selected, notebooks))


def prepare_run_folder(opts: RunOptions, plan: RunPlan, started: float) -> RunState:
    """A new reports/<run-id>/ with a `running` manifest, listed in the index (`started`: perf_counter at start)."""
    from labkit import paths
    from labkit.env.fingerprint import fingerprint
    from labkit.report.index import write_index

    paths.writable_folder(plan.reports_dir, "reports folder (LABKIT_REPORTS)")
    run_dir = new_run_dir(plan.reports_dir, plan.profile)
    (run_dir / METRICS_DIRNAME).mkdir()
    manifest: dict[str, Any] = {
        "run_id": run_dir.name, "status": "running", "profile": plan.profile,
        "paths": {**portable.LEGEND, "outside": {}},
    }
    state = RunState(opts, plan, run_dir, manifest, started)
    manifest["threads"], manifest["jobs"] = run_threads(opts, state)
    partial = len(plan.selected) != len(plan.notebooks)
    manifest.update({
        "parameters": state.portable(plan.params.final, "parameters"),
        "only": [p.stem for p in plan.selected] if partial else None,
        "started": _now(), "finished": None, "duration_s": None,
        "command": state.portable(opts.command, "command"),
        "rerun_of": state.portable(opts.rerun_of, "rerun_of"),
        "kernel": "shared" if opts.share_kernel else "fresh per notebook",
        "git": git_info(plan.root),
        "environment": state.portable(fingerprint(probe_quantization=False, torch_details=opts.torch_details),
                                      "environment"),
        "environment_source": "runner (versions only; notebook 00 records the full fingerprint)",
        "notebooks": {p.stem: {"status": "pending",
                               "parameters": state.portable(plan.params.effective[p.stem],
                                                            f"notebooks.{p.stem}.parameters")}
                      for p in plan.selected},
    })
    state.save()
    write_index(plan.reports_dir)
    state.say(f"labkit run: profile {plan.profile}, {len(plan.selected)} notebook(s) -> {run_dir}")
    if plan.params.final:
        shown = portable.resolve(plan.params.final, run_dir, plan.root)  # as the notebooks get them
        state.say("parameters: " + ", ".join(f"{k}={v!r}" for k, v in shown.items()))
    return state


def run_threads(opts: RunOptions, state: RunState) -> tuple[int, int]:
    """(torch threads of every kernel, notebooks at once), decided once per run. Given counts win (a rerun repeats
    the recorded ones: CPU results are bit-identical only at the same thread count); else the CPUs free right now,
    shared by the notebooks that run side by side (labkit.report.schedule.auto_jobs unless --jobs)."""
    from labkit.env.threads import plan_threads

    plan = state.plan
    if opts.threads:
        return int(opts.threads), int(opts.jobs or 1)
    n, others, limit = plan_threads()
    if others is not None and n < limit:
        state.say(f"warning: the machine is busy (other processes keep ~{others:.1f} CPUs busy): kernels use {n} of "
                  f"{limit} threads; LABKIT_THREADS=N sets the count")
    if opts.share_kernel:  # one kernel cannot run two notebooks at once
        jobs = 1
    else:
        jobs = int(opts.jobs) if opts.jobs else auto_jobs(plan.deps, plan.params.effective, n)
    return max(1, n // jobs), jobs


def execute_notebook(state: RunState, kernels: KernelSession, path: Path) -> str | None:
    """Run one notebook with papermill into the run folder: the error text, or None when it ran clean."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    # a rerun's recorded <run>/... and <root>/... parameters point into this run and this clone
    params = portable.resolve(state.plan.params.injected[path.stem], state.run_dir, state.plan.root)
    km = None
    try:
        km = kernels.acquire(path.stem)
        pm.execute_notebook(str(path), str(state.run_dir / path.name), parameters=params, kernel_name=kernels.name,
                            cwd=str(state.plan.notebooks_dir),
                            progress_bar=state.opts.progress and state.manifest["jobs"] == 1,
                            log_output=state.opts.log_output, start_timeout=state.opts.start_timeout, km=km)
    except KeyboardInterrupt:
        if km is not None:
            kernels.kill(km)
        raise
    except PapermillExecutionError as err:
        error: str | None = f"{err.ename}: {err.evalue} (cell In [{err.exec_count}])"
    except Exception as err:  # kernel died, timeout, unreadable notebook ...
        error = "interrupted" if state.interrupted else f"{type(err).__name__}: {err}"
    else:
        error = None
    if km is not None:
        kernels.release(km)  # it exits while the HTML is written and the next kernel starts
    return error


def export_notebook_html(out_nb: Path) -> dict[str, Any]:
    """{"html": file name} of the exported report, or the export error (it must not hide the run's result)."""
    from labkit.report.html import export_html

    try:
        return {"html": export_html(out_nb).name}
    except Exception as err:
        return {"html": None, "html_error": f"{type(err).__name__}: {err}"}


def record_notebook(state: RunState, path: Path, error: str | None, t_start: float) -> None:
    """Status, timings, HTML and recorded metrics of a finished (or failed, or interrupted) notebook."""
    stem, out_nb = path.stem, state.run_dir / path.name
    t_exec = time.perf_counter() - t_start
    cells, slowest = cell_timings(out_nb) if out_nb.exists() else (0.0, [])
    t_html = time.perf_counter()
    html = export_notebook_html(out_nb) if out_nb.exists() else {}
    metrics = read_metrics(state.run_dir / METRICS_DIRNAME / f"{stem}.json")
    with state.lock:  # another notebook's thread may be saving the manifest
        info = state.manifest["notebooks"][stem]
        info["status"] = "ok" if error is None else ("interrupted" if error == "interrupted" else "failed")
        info["error"] = error
        info["ipynb"] = out_nb.name if out_nb.exists() else None
        info.update(slowest_cells=slowest, cells_s=round(cells, 2), overhead_s=round(max(t_exec - cells, 0.0), 2))
        info.update(html)
        info["html_s"] = round(time.perf_counter() - t_html, 2)
        info["duration_s"] = round(time.perf_counter() - t_start, 2)
        info["metrics"] = state.portable(metrics, f"notebooks.{stem}.metrics")
        if stem == ENV_NOTEBOOK and isinstance(info["metrics"].get("fingerprint"), dict):
            state.manifest["environment"] = info["metrics"]["fingerprint"]
            state.manifest["environment_source"] = ENV_NOTEBOOK
        state.save()


def run_notebook(state: RunState, kernels: KernelSession, path: Path, number: int) -> str | None:
    """Execute, export and record one notebook; returns its error (None: ok)."""
    side_by_side = state.manifest["jobs"] > 1
    name = f"{path.stem} " if side_by_side else ""  # lines of notebooks running together say whose they are
    with state.lock:
        info = state.manifest["notebooks"][path.stem]
        info.update(status="running", started=_now())
        state.save()
    state.say(f"[{number}/{len(state.plan.selected)}] {path.stem}" + (" started" if side_by_side else ""))
    t_start = time.perf_counter()
    error: str | None = "interrupted"  # unless execute_notebook returns
    try:
        error = execute_notebook(state, kernels, path)
    finally:
        record_notebook(state, path, error, t_start)
    if error is None:
        state.say(f"  {name}ok in {info['duration_s']:.1f} s")
    else:
        state.say(f"FAILED {path.stem}: {error}")
        state.say(f"  see {state.run_dir / (info.get('html') or path.name)}")
    return error


def run_notebooks(state: RunState, kernels: KernelSession) -> str:
    """The selected notebooks until one fails (one at a time, or side by side as their needs allow): the status."""
    if state.opts.log_output:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(message)s")
    if state.manifest["jobs"] > 1:
        return run_side_by_side(state, kernels, state.manifest["jobs"])
    for number, path in enumerate(state.plan.selected, 1):
        if run_notebook(state, kernels, path, number) is not None:
            return "failed"
    return "ok"


def run_side_by_side(state: RunState, kernels: KernelSession, jobs: int) -> str:
    """Up to `jobs` notebooks at once, each started when the notebooks it needs are done; after a failure no new
    one starts (the running ones finish). Ctrl-C / SIGTERM kills every kernel at once and marks what ran
    interrupted. Workers are daemon threads, so a worker stuck on a dead kernel cannot keep the process alive."""
    import queue

    paths = {p.stem: p for p in state.plan.selected}
    numbers = {p.stem: i for i, p in enumerate(state.plan.selected, 1)}
    finished: queue.Queue = queue.Queue()
    done: set[str] = set()
    running: dict[str, float] = {}  # stem -> perf_counter at start
    failed = False

    def work(stem: str) -> None:
        try:
            error = run_notebook(state, kernels, paths[stem], numbers[stem])
        except BaseException as err:  # reported to the main thread, never lost in a worker
            error = f"{type(err).__name__}: {err}"
        finished.put((stem, error))

    try:
        while True:
            for stem in ([] if failed else ready(state.plan.deps, done, set(running) | done)[:jobs - len(running)]):
                running[stem] = time.perf_counter()
                threading.Thread(target=work, args=(stem,), name=f"labkit-{stem}", daemon=True).start()
            if not running:
                return "failed" if failed else "ok"
            try:
                stem, error = finished.get(timeout=0.5)  # a timed wait: Ctrl-C / SIGTERM are seen at once
            except queue.Empty:
                continue
            running.pop(stem)
            if error is None:
                done.add(stem)
            else:
                failed = True
    except KeyboardInterrupt:
        state.interrupted = True
        kernels.kill_all()
        deadline = time.perf_counter() + 20
        while running and time.perf_counter() < deadline:  # workers record themselves once their kernel is gone
            with contextlib.suppress(queue.Empty):
                running.pop(finished.get(timeout=0.5)[0], None)
        for stem, t_start in running.items():  # still waiting on a dead kernel: recorded from here
            record_notebook(state, paths[stem], "interrupted", t_start)
        raise


def finish_run(state: RunState, status: str) -> None:
    """Final manifest (notebooks never reached marked skipped), index, and the time table."""
    from labkit.report.index import write_index

    for info in state.manifest["notebooks"].values():
        if info["status"] == "pending":
            info["status"] = "skipped"
    state.manifest.update(status=status, finished=_now(), duration_s=round(time.perf_counter() - state.started, 2))
    state.save()
    write_index(state.plan.reports_dir)
    state.say("")
    state.say(time_table(state.manifest))
    state.say(f"index: {state.plan.reports_dir / 'index.html'}")
    state.say(f"status: {status}")


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
def run_with(opts: RunOptions) -> RunResult:
    """Plan (errors before anything exists), prepare the run folder, run the notebooks, finish; never raises for a
    failing notebook."""
    started = time.perf_counter()
    plan = plan_run(opts)
    state = prepare_run_folder(opts, plan, started)
    status = "failed"  # a bug or a set-up failure (no kernel) must not leave the folder claiming to be running
    kernels = None
    try:
        # OMP_NUM_THREADS as well: torch takes it at import, so a notebook that never calls configure_threads
        # (evaluation, attention) does not run every core's worth of threads next to another kernel
        threads = str(state.manifest["threads"])
        kernels = KernelSession(ensure_kernel(), plan.notebooks_dir, opts.share_kernel,
                                LABKIT_RUN_DIR=str(state.run_dir), LABKIT_THREADS=threads, OMP_NUM_THREADS=threads)
        status = run_notebooks(state, kernels)
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        if kernels is not None:
            kernels.close(interrupted=status == "interrupted")
        finish_run(state, status)
    return RunResult(run_dir=state.run_dir, status=status, manifest=state.manifest)


def run(profile: str = "tiny", only: str | list[str] | None = None,
        overrides: list[str] | dict[str, str] | None = None, **options: Any) -> RunResult:
    """Run the selected notebooks in order into a new run folder (`options`: the other RunOptions fields).

    Parameter problems raise LabkitError before any folder or kernel exists; a failing notebook does not raise
    (the result's status says it).
    """
    return run_with(RunOptions(profile=profile, only=only, overrides=overrides, **options))


"""Notebook 05 in real JupyterLab: `make lab`'s server, headless Chromium, Run All, the attention explorer responds.

The server runs from .venv on a free loopback port with a token set here, on a temporary copy of notebooks/
(so nothing is saved into the repository), and is killed at teardown. The browser may reach only that server.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import browser_util as bu  # tests/ is on sys.path (pytest rootdir-relative import)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = os.environ.get("LABKIT_LAB_NOTEBOOK", "05_attention.ipynb")  # override: develop on another notebook
SERVER_START_S = 90
RUN_ALL_S = int(os.environ.get("LABKIT_LAB_RUN_S", "600"))  # notebook 05 on the tiny models, 2 shared CPU cores
SLIDER_S = 60
# `make lab`'s flags, used if the Makefile's recipe cannot be read
MAKE_LAB_ARGS = ["--notebook-dir=.", "--ServerApp.kernel_spec_manager_class=jupyter_client.kernelspec.KernelSpecManager"]

pytestmark = pytest.mark.slow


def make_lab_args() -> list[str]:
    """The arguments `make lab` passes to `jupyter lab` (read from the Makefile so the test runs the same thing)."""
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    match = re.search(r"^lab:.*\n((?:\t.*\n?)+)", text, re.M)
    if match:
        for line in match.group(1).splitlines():
            if "jupyter lab" in line:
                args = line.split("jupyter lab", 1)[1]
                # make-level expansions (e.g. `$(if $(filter 0,$(shell id -u)),--allow-root)`) are dropped,
                # innermost first: the test adds what it needs itself
                while re.search(r"\$\([^()]*\)", args):
                    args = re.sub(r"\$\([^()]*\)", "", args)
                return shlex.split(args)
    return list(MAKE_LAB_ARGS)


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"jupyter lab exited ({proc.returncode}):\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # loopback only
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"jupyter lab did not answer at {url} in {timeout}s:\n{log.read_text(errors='replace')[-3000:]}")


def _die_with_parent() -> None:
    """In the server's child process: get SIGTERM if pytest itself dies (Linux), so no server outlives a killed run."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _write_lab_settings(settings_dir: Path) -> None:
    """User settings for this server only: start the notebook's kernel without asking, never fetch news."""
    for name, value in {
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"autoStartDefaultKernel": True,
                                                                        "recordTiming": True},
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
            "fetchNews": "false", "checkForUpdates": False,
        },
    }.items():
        path = settings_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value), encoding="utf-8")


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server and its kernels: SIGTERM to its process group, SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


@pytest.fixture
def lab_server(tmp_path):
    """JupyterLab from .venv (`make lab`'s command) on 127.0.0.1:<free port>, token set here; yields base URL, token."""
    src = ROOT / "notebooks" / NOTEBOOK if not Path(NOTEBOOK).is_absolute() else Path(NOTEBOOK)
    if not src.exists():
        pytest.fail(f"{src} does not exist (notebook 05 comes with the attention issue)", pytrace=False)
    jupyter = Path(sys.prefix) / "bin" / "jupyter"
    venv_jupyter = ROOT / ".venv" / "bin" / "jupyter"
    jupyter = venv_jupyter if venv_jupyter.exists() else jupyter
    work = tmp_path / "notebooks"
    shutil.copytree(src.parent, work, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    home = tmp_path / "jupyter"
    token = secrets.token_hex(16)
    port = bu.free_port()
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
        IPYTHONDIR=str(home / "ipython"),
        LABKIT_ROOT=str(ROOT),  # the copy's labkit paths (data, cache, tiny models) stay the repository's
        LABKIT_RUN_DIR=str(tmp_path / "run"),
        MPLBACKEND="module://matplotlib_inline.backend_inline",
        PYTHONUNBUFFERED="1",
    )
    _write_lab_settings(home / "settings")
    cmd = [str(jupyter), "lab", *make_lab_args(),
           "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", "--ServerApp.open_browser=False",
           "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--LabApp.extension_manager=readonly"]  # nothing on the server side reaches the network either
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers run as root; jupyter refuses without this
        cmd.append("--allow-root")
    env.pop("LABKIT_NOTEBOOK", None)  # set only under `labkit run`; it would switch the explorer to its static view
    log = tmp_path / "jupyter-lab.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_die_with_parent)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{base}/api/status?token={token}", proc, log, SERVER_START_S)
        yield {"base": base, "token": token, "log": log, "notebook": src.name, "work": work}
    finally:
        _stop(proc)


def _explorer(page):
    """The layer slider of the attention explorer (an ipywidgets slider whose description is 'layer')."""
    return page.locator(".jp-OutputArea-output .widget-slider").filter(
        has=page.locator(".widget-label", has_text=re.compile(r"^\s*layer\s*$", re.I))
    )


def _slowest_cells(path: Path, n: int = 5) -> list[tuple[int, float]]:
    """(cell index, seconds) of the slowest cells, from the execution times JupyterLab recorded (recordTiming)."""
    from datetime import datetime

    try:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    except (OSError, ValueError, KeyError):
        return []
    times = []
    for i, cell in enumerate(cells):
        ex = cell.get("metadata", {}).get("execution", {})
        start, end = ex.get("iopub.execute_input"), ex.get("shell.execute_reply")
        if start and end:
            parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
            times.append((i, round((parse(end) - parse(start)).total_seconds(), 1)))
    return sorted(times, key=lambda t: -t[1])[:n]


def _accept_kernel_dialog(page) -> None:
    """If JupyterLab asks which kernel to start, take the notebook's preferred one."""
    dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
    try:
        dialog.wait_for(state="visible", timeout=3_000)
    except Exception:
        return
    dialog.locator("button", has_text=re.compile(r"^\s*Select\s*$")).click()


def _figure_signature(area) -> str:
    """What the explorer shows: the sources of its images and the markup of its SVGs (changes when redrawn)."""
    return area.evaluate(
        """el => [...el.querySelectorAll('img')].map(i => i.src).join('|') + '#' +
                 [...el.querySelectorAll('svg')].filter(s => s.closest('.jp-OutputArea-output')).map(s => s.outerHTML.length + s.outerHTML.slice(-2000)).join('|')"""
    )


def test_attention_explorer_responds_in_jupyterlab(lab_server, tmp_path):
    from playwright.sync_api import TimeoutError as PWTimeout
    from playwright.sync_api import sync_playwright

    base, token = lab_server["base"], lab_server["token"]
    watch = bu.PageWatch()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    with sync_playwright() as pw:
        browser = bu.launch(pw, tmp_path / "chromium")
        try:
            ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
            bu.block_network(ctx, watch, allow_prefixes=(base,))
            ctx.set_default_timeout(60_000)
            page = ctx.new_page()
            bu.watch_page(page, watch)
            page.goto(f"{base}/lab/tree/{lab_server['notebook']}?token={token}", wait_until="domcontentloaded")
            notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
            notebook.locator(".jp-Cell").first.wait_for(timeout=120_000)
            _accept_kernel_dialog(page)
            # the kernel is up when the toolbar's status says idle
            page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(
                timeout=120_000
            )
            timings["open"] = time.perf_counter() - t0

            # Run > Run All Cells, as a user does
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
            t1 = time.perf_counter()
            slider = _explorer(page)
            try:
                slider.first.wait_for(state="visible", timeout=RUN_ALL_S * 1000)
            except PWTimeout:
                shot = lab_server["work"] / "lab-timeout.png"
                page.screenshot(path=str(shot))
                pytest.fail(f"no 'layer' slider rendered within {RUN_ALL_S}s of Run All (screenshot {shot})")
            # and every cell finished: no '[*]' prompt left, kernel idle
            page.wait_for_function(
                """() => ![...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-InputPrompt')]
                         .some(p => p.textContent.includes('*'))""",
                timeout=RUN_ALL_S * 1000,
            )
            timings["run_all"] = time.perf_counter() - t1
            errors = notebook.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']")
            tracebacks = [errors.nth(i).inner_text()[-1500:] for i in range(errors.count())]
            assert not tracebacks, "a cell raised while running notebook 05:\n" + "\n---\n".join(tracebacks)
            assert slider.count() == 1, f"expected one 'layer' slider, found {slider.count()}"

            area = slider.locator("xpath=ancestor::div[contains(@class,'jp-OutputArea')][last()]")
            # the figure is drawn (an image or an SVG in the explorer's output)
            page.wait_for_function(
                "el => el.querySelector('.jp-OutputArea-output img, .jp-OutputArea-output svg') !== null",
                arg=area.element_handle(), timeout=SLIDER_S * 1000,
            )
            placeholders = [p for p in bu.WIDGET_PLACEHOLDERS if p in area.inner_text()]
            assert not placeholders, f"widget placeholder text in the explorer: {placeholders}"
            before = _figure_signature(area)
            value_before = slider.locator(".widget-readout").inner_text().strip()
            area.screenshot(path=str(lab_server["work"] / "explorer-before.png"))

            # move the layer slider with the keyboard, as a user does
            t2 = time.perf_counter()
            handle = slider.locator(".noUi-handle, [role='slider'], input[type='range']").first
            now, top = (handle.get_attribute(a) for a in ("aria-valuenow", "aria-valuemax"))
            key = "ArrowLeft" if now is not None and top is not None and float(now) >= float(top) else "ArrowRight"
            handle.focus()
            handle.press(key)
            page.wait_for_function(
                "([el, before]) => { const s = [...el.querySelectorAll('img')].map(i => i.src).join('|') + '#' +"
                " [...el.querySelectorAll('svg')].filter(s => s.closest('.jp-OutputArea-output'))"
                ".map(s => s.outerHTML.length + s.outerHTML.slice(-2000)).join('|'); return s !== before"
                " && el.querySelector('.jp-OutputArea-output img, .jp-OutputArea-output svg') !== null; }",
                arg=[area.element_handle(), before], timeout=SLIDER_S * 1000,
            )
            timings["slider"] = time.perf_counter() - t2
            value_after = slider.locator(".widget-readout").inner_text().strip()
            area.screenshot(path=str(lab_server["work"] / "explorer-after.png"))
            assert value_after != value_before, f"the layer slider did not move ({value_before!r})"
            page.keyboard.press("Control+s")  # save the temporary copy: its cells carry their execution times
            page.wait_for_timeout(2_000)
            assert _figure_signature(area) != before, "moving the layer slider did not change the figure"
        except BaseException:
            shot = lab_server["work"].parent / "lab-failure.png"
            try:
                page.screenshot(path=str(shot), timeout=10_000)
                print(f"failure screenshot: {shot}; server log: {lab_server['log']}")
            except Exception:
                pass
            raise
        finally:
            browser.close()
    timings["total"] = time.perf_counter() - t0
    print("jupyterlab timings (s):", {k: round(v, 1) for k, v in timings.items()},
          "layer", value_before, "->", value_after)
    print("slowest cells (s):", _slowest_cells(lab_server["work"] / lab_server["notebook"]))
    assert not watch.blocked, f"the page tried to reach the network: {watch.blocked}"
    assert not watch.page_errors, f"uncaught exceptions in JupyterLab: {watch.page_errors}"

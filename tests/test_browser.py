"""The HTML reports as a reader sees them: headless Chromium, network off, images load, no errors, index links work.

`labkit run` writes the reports into a temporary reports folder (LABKIT_REPORTS); each page is opened from disk
with every non-file request refused, checked, and screenshotted next to its HTML (`<name>.png`).
Set LABKIT_BROWSER_RUN=reports/<run-id> to check an existing run folder instead (e.g. after `make report`).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

import browser_util as bu  # tests/ is on sys.path (pytest rootdir-relative import)
from workbook_util import run_workbook

ROOT = Path(__file__).resolve().parents[1]
SETTLE_MS = 10_000  # a page may render widgets asynchronously; placeholders must be gone by then


def _report_pages(run: Path) -> list[Path]:
    pages = sorted(run.glob("*.html"))
    assert pages, f"no HTML report in {run}"
    return pages


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = bu.launch(pw, tmp_path_factory.mktemp("chromium"))
        try:
            yield b
        finally:
            b.close()


def notebook_images(ipynb: Path) -> int:
    """How many image outputs (png, jpeg, svg) the executed notebook holds: the HTML must show at least as many."""
    import nbformat

    if not ipynb.exists():
        return 0
    nb = nbformat.read(ipynb, as_version=4)
    mimes = ("image/png", "image/jpeg", "image/svg+xml")
    return sum(1 for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
               if any(m in out.get("data", {}) for m in mimes))


def check_page(browser, html: Path, screenshot: Path) -> list[str]:
    """Open `html` from disk with the network off; return every problem found; write a full-page screenshot."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, offline=True)
    watch = bu.PageWatch()
    bu.block_network(ctx, watch)
    try:
        page = ctx.new_page()
        bu.watch_page(page, watch)
        page.goto(html.as_uri(), wait_until="load", timeout=60_000)
        bu.wait_images(page)
        try:  # widgets render after load; give them a moment to replace their placeholders
            page.wait_for_function(
                "(ps) => !ps.some(p => (document.body ? document.body.innerText : '').includes(p))",
                arg=list(bu.WIDGET_PLACEHOLDERS), timeout=SETTLE_MS,
            )
        except Exception:
            pass
        problems = [f"image did not load: {src}" for src in bu.broken_images(page)]
        shown = page.evaluate("() => document.images.length + document.querySelectorAll('.jp-OutputArea svg').length")
        expected = notebook_images(html.with_suffix(".ipynb"))
        if shown < expected:
            problems.append(f"the notebook has {expected} image outputs but the page shows {shown}")
        problems += [f"widget placeholder left in the page: {t!r}" for t in bu.placeholder_texts(page)]
        page.screenshot(path=str(screenshot), full_page=True, timeout=60_000)
        problems += watch.problems()
        return problems
    finally:
        ctx.close()


def check_index_links(browser, index: Path, run: Path) -> list[str]:
    """Every link of reports/index.html resolves to an existing file and opens when clicked; the run is listed."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, offline=True)
    watch = bu.PageWatch()
    bu.block_network(ctx, watch)
    problems: list[str] = []
    try:
        page = ctx.new_page()
        bu.watch_page(page, watch)
        page.goto(index.as_uri(), wait_until="load")
        links = page.eval_on_selector_all(
            "a[href]", "els => els.map(a => ({raw: a.getAttribute('href'), href: a.href}))"
        )
        local = [i for i, ln in enumerate(links) if not ln["raw"].startswith(("#", "mailto:", "javascript:"))]
        if not local:
            problems.append("index.html has no links")
        targets: list[Path] = []
        for i in local:
            link = links[i]
            url = urlparse(link["href"])
            if url.scheme != "file":
                problems.append(f"index link is not a local file: {link['raw']}")
                continue
            target = Path(unquote(url.path))
            if not target.exists():
                problems.append(f"index link points to a missing file: {link['raw']} -> {target}")
                continue
            targets.append(target.resolve())
            # click it, as a reader would (same tab), and check where the browser lands
            page.goto(index.as_uri(), wait_until="load")
            anchor = page.locator("a[href]").nth(i)
            anchor.evaluate("a => a.removeAttribute('target')")
            with page.expect_navigation(wait_until="load", timeout=30_000):
                anchor.click()
            landed = Path(unquote(urlparse(page.url).path))
            if landed.resolve() != target.resolve():
                problems.append(f"clicking {link['raw']} opened {page.url}, expected {target}")
        if not any(t == run or run in t.parents for t in targets):
            problems.append(f"index.html does not link to anything in this run ({run.name})")
        problems += watch.problems()
        return problems
    finally:
        ctx.close()


def verify_run(browser, run: Path) -> dict[str, float]:
    """All report pages of `run` and the reports index: problems collected per page, asserted at the end."""
    timings: dict[str, float] = {}
    failures: list[str] = []
    index = run.parent / "index.html"
    assert index.exists(), f"no reports index at {index}"
    for html in _report_pages(run) + [index]:
        start = time.perf_counter()
        shot = html.with_suffix(".png")
        problems = check_page(browser, html, shot)
        timings[html.name] = time.perf_counter() - start
        assert shot.exists() and shot.stat().st_size > 1000, f"no screenshot written for {html}"
        failures += [f"{html.relative_to(run.parent)}: {p}" for p in problems]
    failures += [f"index.html: {p}" for p in check_index_links(browser, index, run)]
    assert not failures, "the reports do not render cleanly offline:\n  " + "\n  ".join(failures)
    return timings


def verify_and_print(browser, run: Path) -> None:
    timings = verify_run(browser, run)
    images = {p.stem: notebook_images(p) for p in sorted(run.glob("*.ipynb"))}
    if "05_attention" in images:  # the figure notebook: its heatmaps must reach the report
        assert images["05_attention"] > 0, "05_attention has no figure in its executed notebook"
    print("browser check times (s):", {k: round(v, 2) for k, v in timings.items()}, "image outputs:", images)


def test_environment_report_renders_offline(browser, tmp_path):
    """`labkit run --only 00`: its HTML and reports/index.html, checked in Chromium with no network."""
    existing = os.environ.get("LABKIT_BROWSER_RUN")
    run = Path(existing).resolve() if existing else run_workbook(tmp_path / "reports", only="00")
    verify_and_print(browser, run)


@pytest.mark.slow
def test_whole_workbook_reports_render_offline(browser, tmp_path, tiny_workbook_run):
    """The whole tiny workbook (every notebook's HTML, attention figures included) checked offline."""
    if os.environ.get("LABKIT_BROWSER_RUN"):
        pytest.skip("LABKIT_BROWSER_RUN set: the existing run is checked by the other test")
    # a copy of the shared run: the check writes a screenshot next to every page
    shutil.copytree(tiny_workbook_run.parent, tmp_path / "reports")
    run = tmp_path / "reports" / tiny_workbook_run.name
    names = {p.stem for p in _report_pages(run)}
    notebooks = {p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    assert notebooks <= names, f"notebooks without an HTML report: {sorted(notebooks - names)}"
    verify_and_print(browser, run)

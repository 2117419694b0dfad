"""Headless Chromium for the browser tests: Debian's chromium through Playwright, network off, CJK font, checks."""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
# Text a notebook front end leaves where a widget did not render.
WIDGET_PLACEHOLDERS = (
    "Loading widget",
    "Error displaying widget",
    "Widget Javascript not detected",
    "Error rendering output item",
    "Failed to load model class",
)
# Schemes a page may load with the network off (local files and inline data).
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")


def chromium_executable() -> str:
    """Debian's chromium (LABKIT_CHROMIUM overrides); fails with the install command when it is missing."""
    env = os.environ.get("LABKIT_CHROMIUM")
    for cand in ([env] if env else []) + list(CHROMIUM_CANDIDATES) + [shutil.which("chromium") or ""]:
        if cand and Path(cand).exists():
            return cand
    pytest.fail(
        "chromium not found (looked at LABKIT_CHROMIUM, /usr/bin/chromium, PATH); install it with "
        "`apt-get install -y chromium` (.ci/run does this when missing)",
        pytrace=False,
    )


def cjk_font_file() -> Path | None:
    """The Noto Sans SC font shipped by the pinned `pylopdf-fonts-zh-cn` wheel, if installed."""
    try:
        import pylopdf_fonts_zh_cn
    except ImportError:
        return None
    path = Path(pylopdf_fonts_zh_cn.__file__).parent / "NotoSansSC-Regular.otf"
    return path if path.exists() else None


def fontconfig_env(workdir: Path) -> dict[str, str]:
    """Environment for chromium: a fontconfig file = the system fonts + the pinned CJK font (no root needed).

    A reader's desktop has CJK fonts; a bare CI image may not, and Chinese in HTML text would show as boxes.
    """
    env = dict(os.environ)
    font = cjk_font_file()
    if font is None:
        return env
    fonts_dir = workdir / "fonts"
    fonts_dir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "fonts.conf"
    system = '<include ignore_missing="yes">/etc/fonts/fonts.conf</include>' if Path("/etc/fonts/fonts.conf").exists() else ""
    conf.write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "fonts.dtd">\n<fontconfig>\n'
        f"  {system}\n  <dir>{font.parent}</dir>\n  <cachedir>{workdir / 'fontcache'}</cachedir>\n"
        "</fontconfig>\n",
        encoding="utf-8",
    )
    env["FONTCONFIG_FILE"] = str(conf)
    return env


def launch(playwright, workdir: Path):
    """Launch Debian's chromium headless through Playwright (no `playwright install`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    return playwright.chromium.launch(
        executable_path=chromium_executable(),
        args=CHROMIUM_ARGS,
        env=fontconfig_env(workdir),
        timeout=60_000,
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PageWatch:
    """What a page did: console errors, uncaught exceptions, requests refused or failed."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        out = [f"console error: {m}" for m in self.console_errors]
        out += [f"uncaught exception: {m}" for m in self.page_errors]
        out += [f"network request attempted (network is off): {u}" for u in self.blocked]
        out += [f"request failed: {u}" for u in self.failed]
        return out


def block_network(context, watch: PageWatch, allow_prefixes: tuple[str, ...] = ()) -> None:
    """Refuse every request that is not a local file (or an allowed prefix, e.g. the loopback Jupyter server)."""

    def handler(route):
        url = route.request.url
        if url.startswith(LOCAL_SCHEMES) or (allow_prefixes and url.startswith(allow_prefixes)):
            route.continue_()
        else:
            watch.blocked.append(url)
            route.abort("internetdisconnected")

    context.route("**/*", handler)


def watch_page(page, watch: PageWatch, ignore_console: tuple[str, ...] = ()) -> None:
    def on_console(msg):
        if msg.type == "error" and not any(s in msg.text for s in ignore_console):
            loc = msg.location or {}
            watch.console_errors.append(f"{msg.text} ({loc.get('url', '')}:{loc.get('lineNumber', '')})")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: watch.page_errors.append(str(exc)))
    page.on(
        "requestfailed",
        lambda req: watch.failed.append(f"{req.url} ({req.failure})") if req.url not in watch.blocked else None,
    )


def broken_images(page) -> list[str]:
    """Every <img> that did not load (complete with naturalWidth 0), described by its src (shortened)."""
    return page.evaluate(
        """() => Array.from(document.images)
            .filter(img => !(img.complete && img.naturalWidth > 0))
            .map(img => (img.currentSrc || img.src || '<no src>').slice(0, 120))"""
    )


def placeholder_texts(page) -> list[str]:
    text = page.evaluate("() => document.body ? document.body.innerText : ''")
    return [p for p in WIDGET_PLACEHOLDERS if p in text]


def wait_images(page, timeout_ms: int = 15_000) -> None:
    """Wait until every <img> finished loading (or failed), lazy ones included."""
    page.evaluate(
        """() => Array.from(document.images).forEach(img => { img.loading = 'eager'; })"""
    )
    page.wait_for_function(
        "() => Array.from(document.images).every(img => img.complete)", timeout=timeout_ms
    )

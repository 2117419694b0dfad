"""Live widgets or static output: `is_headless()` decides for every notebook helper (playground, attention explorer)."""

from __future__ import annotations

import os

STATIC = ("static", "html", "table")
LIVE = ("widget", "widgets", "interactive")


def is_headless() -> bool:
    """True when nobody can use a live widget, so helpers show static tables and figures instead.

    LABKIT_WIDGETS=static|widget decides when set (LABKIT_PLAYGROUND is read as an older spelling); else True
    under `labkit run` (the runner sets LABKIT_NOTEBOOK in its kernels: papermill -> HTML, nobody to click)
    and outside a Jupyter kernel (plain Python has no widget front-end). LABKIT_RUN_DIR alone does not count:
    in JupyterLab it points the notebooks at a run's adapters, and the person there can click.
    """
    mode = (os.environ.get("LABKIT_WIDGETS") or os.environ.get("LABKIT_PLAYGROUND") or "").strip().lower()
    if mode in STATIC:
        return True
    if mode in LIVE:
        return False
    if os.environ.get("LABKIT_NOTEBOOK"):
        return True
    from labkit.log import in_kernel_shell  # a kernel has IPython loaded; without it there is none

    return not in_kernel_shell()

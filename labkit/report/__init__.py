"""Reports: `record(**metrics)` for notebooks; the papermill runner, HTML export, manifest, index, rerun, share.

Only `record` is imported eagerly (notebooks call it); the runner pieces load papermill/nbconvert lazily.
"""

import importlib

from labkit.report.metrics import record

# public name -> module defining it (imported on first use). `labkit.report.rerun` is the module of
# `labkit run --rerun` (its function: `labkit.report.rerun.rerun`).
_LAZY = {
    "run": "labkit.report.runner",
    "export_html": "labkit.report.html",
    "write_index": "labkit.report.index",
    "read_manifest": "labkit.report.manifest",
    "write_share_zip": "labkit.report.share",
}

__all__ = ["record", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'labkit.report' has no attribute {name!r}")

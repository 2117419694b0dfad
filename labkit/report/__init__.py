"""Reports: `record(**metrics)` for notebooks; the papermill runner, HTML export, manifest and index.

Only `record` is imported eagerly (notebooks call it); the runner pieces load papermill/nbconvert lazily.
"""

from labkit.report.metrics import record

__all__ = ["record", "run", "rerun", "export_html", "write_index", "read_manifest"]


def __getattr__(name: str):
    if name in ("run", "rerun"):
        from labkit.report import runner

        return getattr(runner, name)
    if name == "export_html":
        from labkit.report.html import export_html

        return export_html
    if name == "write_index":
        from labkit.report.index import write_index

        return write_index
    if name == "read_manifest":
        from labkit.report.manifest import read_manifest

        return read_manifest
    raise AttributeError(f"module 'labkit.report' has no attribute {name!r}")

"""labkit.evaluate: generation (batched, template-applied), held-out metrics, plots and the playground."""

from __future__ import annotations

__all__ = ["generate_pair", "SamplingConfig", "compare", "evaluate_arch", "records", "summary_table",
           "playground", "comparison_figure", "per_task_figure"]

_LAZY = {
    "generate_pair": "labkit.evaluate.generate",
    "SamplingConfig": "labkit.evaluate.generate",
    "compare": "labkit.evaluate.metrics",
    "evaluate_arch": "labkit.evaluate.heldout",
    "records": "labkit.evaluate.heldout",
    "summary_table": "labkit.evaluate.heldout",
    "playground": "labkit.evaluate.playground",
    "comparison_figure": "labkit.evaluate.plots",
    "per_task_figure": "labkit.evaluate.plots",
}


def __getattr__(name: str):
    """Lazy attributes (`labkit.evaluate.generate` is the submodule; its function is generate.generate)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'labkit.evaluate' has no attribute {name!r}")

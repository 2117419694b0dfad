"""labkit.data: read, validate, template, tokenize, collate and mix instruction data (see docs/architecture.md)."""

from __future__ import annotations

__all__ = ["REFUSALS", "load_datasets", "get_template", "tokenize_examples"]

_LAZY = {
    "REFUSALS": "labkit.data.bundled",
    "load_datasets": "labkit.data.registry",
    "get_template": "labkit.data.templates",
    "tokenize_examples": "labkit.data.tokenize",
}


def __getattr__(name: str):
    """Lazy attributes, so `python -m labkit.data.bundled` and light imports stay light."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'labkit.data' has no attribute {name!r}")

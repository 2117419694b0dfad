"""Self-contained HTML of an executed notebook: images embedded, no script or stylesheet from a network."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"

# nbconvert's lab template loads require.js, MathJax, mermaid and the widget manager from CDNs; this
# template (an extension of lab/index.html.j2) drops those blocks so the page needs no network.
_OFFLINE_TEMPLATE = r"""{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""

_REMOTE_ASSET = re.compile(r"<(script|link)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//[^>]*>(?:\s*</script>)?",
                           re.IGNORECASE)


def strip_widgets(nb: Any) -> int:
    """Headless reports cannot render live widgets: drop widget views (keeping a text/html or image
    alternative when the output has one, otherwise the whole output, whose text/plain is a placeholder
    such as `HBox(children=...)`), and the saved widget state. Returns the number of outputs changed."""
    changed = 0
    for cell in nb.get("cells", []):
        outputs = cell.get("outputs")
        if not outputs:
            continue
        kept = []
        for out in outputs:
            data = out.get("data") or {}
            if WIDGET_VIEW in data:
                changed += 1
                rich = {k: v for k, v in data.items() if k == "text/html" or k.startswith("image/")}
                if rich:
                    out["data"] = rich
                    kept.append(out)
                continue
            kept.append(out)
        cell["outputs"] = kept
    md = nb.get("metadata", {})
    if "widgets" in md:
        del md["widgets"]
    return changed


def remove_remote_assets(html: str) -> str:
    """Belt and braces: remove any <script src=//...> or <link href=//...> the template still emitted."""
    return _REMOTE_ASSET.sub("", html)


def export_html(ipynb: str | Path, html_path: str | Path | None = None) -> Path:
    """Write a self-contained HTML next to (or at) `html_path`; returns its path."""
    import copy

    import jinja2
    import nbformat
    from nbconvert import HTMLExporter

    ipynb = Path(ipynb)
    html_path = Path(html_path) if html_path else ipynb.with_suffix(".html")
    nb = nbformat.read(ipynb, as_version=4)
    nb = copy.deepcopy(nb)
    strip_widgets(nb)
    exporter = HTMLExporter(
        template_name="lab",
        extra_loaders=[jinja2.DictLoader({"labkit_offline.html.j2": _OFFLINE_TEMPLATE})],
        template_file="labkit_offline.html.j2",
        embed_images=True,
        exclude_anchor_links=True,
    )
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"path": str(ipynb.parent), "name": ipynb.stem}})
    html_path.write_text(remove_remote_assets(body), encoding="utf-8")
    return html_path

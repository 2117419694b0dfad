"""labkit.report.html: self-contained HTML (no CDN scripts or stylesheets, no widget placeholders)."""

import re

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from labkit.report.html import WIDGET_VIEW, export_html, strip_widgets

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
REMOTE = re.compile(r"<(script|link)\b[^>]*\b(src|href)\s*=\s*[\"']?(https?:)?//", re.IGNORECASE)


def _nb():
    nb = new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                                "language_info": {"name": "python"},
                                "widgets": {"application/vnd.jupyter.widget-state+json": {"state": {}}}})
    cell = new_code_cell("w")
    cell.outputs = [
        new_output("display_data", data={"text/plain": "HBox(children=(IntSlider(value=1),))",
                                         WIDGET_VIEW: {"model_id": "m1", "version_major": 2, "version_minor": 0}}),
        new_output("display_data", data={"text/plain": "FigureWidget", "image/png": PNG,
                                         WIDGET_VIEW: {"model_id": "m2", "version_major": 2, "version_minor": 0}}),
        new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"}),
        new_output("stream", name="stdout", text="hello\n"),
    ]
    nb.cells = [new_markdown_cell("# Title\n\nMath $a^2$."), cell]
    return nb


def test_strip_widgets_keeps_rich_alternatives():
    nb = _nb()
    assert strip_widgets(nb) == 2
    outs = nb.cells[1].outputs
    assert len(outs) == 3 and all(WIDGET_VIEW not in (o.get("data") or {}) for o in outs)
    assert outs[0]["data"] == {"image/png": PNG}
    assert "widgets" not in nb.metadata


def test_export_is_offline_with_embedded_images(tmp_path):
    path = tmp_path / "x.ipynb"
    nbformat.write(_nb(), path)
    html = export_html(path).read_text()
    assert not REMOTE.search(html), REMOTE.search(html)
    assert "cdnjs" not in html and "unpkg" not in html and "require.min.js" not in html
    assert html.count('src="data:image/png;base64,') == 2
    assert "HBox(children" not in html and "IntSlider" not in html and "FigureWidget" not in html
    assert "hello" in html and "<h1" in html

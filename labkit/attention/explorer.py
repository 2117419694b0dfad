"""Interactive attention explorer (ipywidgets: maps, layer, head, token) with a static fallback for headless reports."""

from __future__ import annotations

from labkit.attention.figures import explorer_figure, to_png
from labkit.widgets import is_headless


def _as_dict(maps) -> dict:
    return dict(maps) if isinstance(maps, dict) else {"attention": maps}


def build_explorer(maps, layer: int = 0, head: int = 0, token: int | None = None):
    """A VBox of controls and an Image that re-renders on every change.

    `maps` is an AttentionMaps or a dict name -> AttentionMaps (e.g. "zh base", "zh adapter"); the widget
    descriptions are "maps", "layer", "head" and "token". Returns the VBox; `.image` is the Image widget.
    """
    import ipywidgets as widgets

    choices = _as_dict(maps)
    first = next(iter(choices.values()))
    pick = widgets.Dropdown(options=list(choices), description="maps")
    layer_w = widgets.IntSlider(value=layer, min=min(first.layers), max=max(first.layers), description="layer",
                                continuous_update=False)
    head_w = widgets.IntSlider(value=head, min=min(first.heads), max=max(first.heads), description="head",
                               continuous_update=False)
    token_w = widgets.Dropdown(description="token")
    image = widgets.Image(format="png")
    status = widgets.HTML()

    def token_options(m):
        return [(f"{i}: {t}", i) for i, t in enumerate(m.tokens)]

    def render(*_):
        m = choices[pick.value]
        lay = min(m.layers, key=lambda x: abs(x - layer_w.value))
        hd = min(m.heads, key=lambda x: abs(x - head_w.value))
        tok = token_w.value if token_w.value is not None else len(m.tokens) - 1
        fig = explorer_figure(m, lay, hd, tok, title=pick.value)
        image.value = to_png(fig)
        status.value = f"<code>{pick.value}</code>: layer {lay}, head {hd}, query token {tok}"

    def on_maps(*_):
        m = choices[pick.value]
        layer_w.min, layer_w.max = min(m.layers), max(m.layers)
        head_w.min, head_w.max = min(m.heads), max(m.heads)
        opts = token_options(m)
        keep = token_w.value if token_w.value is not None and token_w.value < len(opts) else len(opts) - 1
        token_w.options = opts
        token_w.value = keep
        render()

    token_w.options = token_options(first)
    token_w.value = token if token is not None else len(first.tokens) - 1
    pick.observe(on_maps, names="value")
    for w in (layer_w, head_w, token_w):
        w.observe(render, names="value")
    render()
    box = widgets.VBox([widgets.HBox([pick, layer_w, head_w, token_w]), status, image])
    box.image = image
    box.controls = {"maps": pick, "layer": layer_w, "head": head_w, "token": token_w}
    return box


def show_explorer(maps, layer: int = 0, head: int = 0, token: int | None = None, mode: str = "auto",
                  max_static: int = 2):
    """Display the explorer: a live widget in JupyterLab, static figures in a headless report.

    mode: "auto" (static under `labkit run`), "widget" or "static". The static view shows the first
    `max_static` maps. Returns the widget or the list of figures.
    """
    from IPython.display import Markdown, display

    if mode not in ("auto", "widget", "static"):
        raise ValueError(f"explorer mode {mode!r}: expected 'auto', 'widget' or 'static'")
    static = mode == "static" or (mode == "auto" and is_headless())
    if not static:
        box = build_explorer(maps, layer, head, token)
        display(box)
        return box
    display(Markdown("*Static view (headless run): open this notebook in JupyterLab (`make lab`) for the "
                     "interactive explorer with layer, head and token controls.*"))
    figs = []
    for name, m in list(_as_dict(maps).items())[:max_static]:
        lay = layer if layer in m.layers else m.layers[0]
        hd = head if head in m.heads else m.heads[0]
        tok = token if token is not None else len(m.tokens) - 1
        fig = explorer_figure(m, lay, hd, tok, title=name)
        display(fig)
        figs.append(fig)
    return figs

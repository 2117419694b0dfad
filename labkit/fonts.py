"""CJK-capable matplotlib fonts: register Noto Sans SC (from the pinned PyPI package pylopdf-fonts-zh-cn), report glyph coverage."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from labkit.errors import LabkitError

FONT_PACKAGE = "pylopdf-fonts-zh-cn"  # pinned in requirements.txt; ships NotoSansSC-Regular.otf (OFL)


def cjk_font_path() -> Path:
    """Path of the CJK font file shipped by the pinned package (no root, no system fonts needed)."""
    try:
        import pylopdf_fonts_zh_cn
    except ImportError as exc:  # pragma: no cover - the pin is installed by `make`
        raise LabkitError(
            f"the CJK font package {FONT_PACKAGE} is not installed; run `make venv` "
            f"(requirements.txt pins it) or `pip install {FONT_PACKAGE}`"
        ) from exc
    path = Path(pylopdf_fonts_zh_cn.sans_path())
    if not path.is_file():
        raise LabkitError(f"{FONT_PACKAGE} is installed but its font file is missing: {path}")
    return path


def setup_cjk_font() -> str:
    """Register the CJK font with matplotlib and put it first in font.sans-serif; returns its family name.

    Idempotent. Latin glyphs the CJK font lacks fall back to the next family in the list (DejaVu Sans).
    """
    import matplotlib
    from matplotlib import font_manager

    path = cjk_font_path()
    family = font_manager.FontProperties(fname=str(path)).get_name()  # "Noto Sans SC"
    known = {Path(f.fname).resolve() for f in font_manager.fontManager.ttflist}
    if path.resolve() not in known:
        font_manager.fontManager.addfont(str(path))
    rest = [name for name in matplotlib.rcParams["font.sans-serif"] if name != family]
    matplotlib.rcParams["font.sans-serif"] = [family, *rest]
    matplotlib.rcParams["font.family"] = ["sans-serif"]
    return family


@dataclass
class GlyphCoverage:
    """Which characters of a text the configured font can draw."""

    font_path: str
    family: str
    checked: int  # distinct printable characters looked at
    missing: list[str] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        return 1.0 if self.checked == 0 else 1.0 - len(self.missing) / self.checked

    @property
    def complete(self) -> bool:
        return not self.missing

    def __str__(self) -> str:
        miss = "".join(self.missing[:20]) + ("..." if len(self.missing) > 20 else "")
        return (f"{self.family} ({Path(self.font_path).name}): {self.checked - len(self.missing)}/{self.checked} "
                f"characters covered" + (f"; missing: {miss!r}" if self.missing else ""))


def configured_font_path() -> str:
    """The file matplotlib uses for the first family of the current sans-serif configuration."""
    import matplotlib
    from matplotlib import font_manager

    families = matplotlib.rcParams["font.family"]
    family = families[0] if isinstance(families, list) else families
    return font_manager.findfont(font_manager.FontProperties(family=[family]), fallback_to_default=True)


def glyph_coverage(text: str | list[str], font_path: str | Path | None = None) -> GlyphCoverage:
    """Glyph coverage of `text` (a string or a list of token strings) by `font_path` (default: the configured font).

    Whitespace and control characters are not counted (they are never drawn as glyphs).
    """
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    joined = "".join(text) if isinstance(text, list) else text
    path = str(font_path) if font_path is not None else configured_font_path()
    charmap = FT2Font(path).get_charmap()  # codepoint -> glyph index
    chars = sorted({c for c in joined if not c.isspace() and unicodedata.category(c)[0] != "C"})
    missing = [c for c in chars if ord(c) not in charmap]
    family = font_manager.FontProperties(fname=path).get_name()
    return GlyphCoverage(font_path=path, family=family, checked=len(chars), missing=missing)

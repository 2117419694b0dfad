"""labkit.fonts: the configured font covers Chinese tokens; figures with Chinese labels save without missing glyphs."""

import io
import warnings

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from labkit import fonts  # noqa: E402

ZH_TOKENS = ["你好", "，", "世界", "。", "注意力", "机制", "模型", "微调", "百川", "羊驼", "请", "解释", "一下"]


@pytest.fixture
def clean_rc():
    with matplotlib.rc_context():
        yield


def _glyph_warnings(labels):
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.set_xticks(range(len(labels)), labels)
    ax.set_title("注意力热图 attention")
    buf = io.BytesIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.savefig(buf, format="png")
        fig.savefig(io.BytesIO(), format="svg")
    plt.close(fig)
    assert buf.getbuffer().nbytes > 1000
    return [str(w.message) for w in caught if "Glyph" in str(w.message) and "missing" in str(w.message)]


def test_setup_registers_cjk_font_first(clean_rc):
    family = fonts.setup_cjk_font()
    assert family == "Noto Sans SC"
    assert matplotlib.rcParams["font.sans-serif"][0] == family
    assert fonts.configured_font_path().endswith("NotoSansSC-Regular.otf")
    # idempotent: no duplicate entries
    fonts.setup_cjk_font()
    assert matplotlib.rcParams["font.sans-serif"].count(family) == 1


def test_configured_font_covers_chinese_tokens(clean_rc):
    fonts.setup_cjk_font()
    cov = fonts.glyph_coverage(ZH_TOKENS)
    assert cov.checked == len(set("".join(ZH_TOKENS)))
    assert cov.missing == [] and cov.fraction == 1.0, str(cov)
    # Latin, digits and the marks used for token labels too
    assert fonts.glyph_coverage("Attention 123 ▁ ␣ −").complete


def test_default_font_lacks_chinese_so_the_check_can_fail(clean_rc):
    matplotlib.rcdefaults()
    cov = fonts.glyph_coverage(ZH_TOKENS)
    assert "DejaVu" in cov.family
    assert cov.fraction == 0.0 and len(cov.missing) == cov.checked > 10


def test_chinese_labels_save_without_glyph_warnings(clean_rc):
    matplotlib.rcdefaults()
    before = _glyph_warnings(ZH_TOKENS)
    assert before, "DejaVu Sans should warn about missing CJK glyphs (control)"
    fonts.setup_cjk_font()
    assert _glyph_warnings(ZH_TOKENS) == []

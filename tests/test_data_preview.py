"""Preview helpers and notebook 01's structure (committed clean, typed parameters, no def/class)."""

import ast
import json

import pytest

from labkit.data.preview import lengths_frame, pick_preview, samples_html, trained_span_html
from labkit.data.registry import load_datasets
from labkit.data.tokenize import quick_bpe_tokenizer, tokenize_examples
from labkit.paths import data_dir, notebooks_dir


@pytest.fixture(scope="module")
def setup():
    ex, _ = load_datasets("alpaca_1058_100negative,dialog")
    tok = quick_bpe_tokenizer([m["content"] for e in ex[:300] for m in e["messages"]], vocab_size=400)
    return ex, tok


def test_trained_span_marked_from_labels(setup):
    ex, tok = setup
    ds, rep = tokenize_examples(ex[:3], tok, "alpaca-lora/alpaca", cutoff_len=512)
    html = trained_span_html(ds[0]["input_ids"], ds[0]["labels"], tok, "t")
    answer = ex[0]["messages"][-1]["content"]
    assert f'solid #2e7d32">{answer}&lt;/s&gt;</span>' in html
    assert html.count("<span") == 2


def test_samples_html_and_pick(setup):
    ex, tok = setup
    ds, rep = tokenize_examples(ex, tok, "labkit/roles", cutoff_len=40)  # some dialogs dropped/truncated
    picked = pick_preview(ex, 6, seed=1)
    assert len(picked) == 6 and picked == sorted(picked) and picked == pick_preview(ex, 6, seed=1)
    assert len({(ex[i]["source"], ex[i]["task"]) for i in picked}) >= 5
    out = samples_html(ds, tok, ex, picked, rep)
    assert out.count("<pre") + out.count("dropped") == 6
    frame = lengths_frame(ex, rep.lengths)
    assert len(frame) == len(ex) and set(frame.columns) == {"source", "task", "tokens"}


def test_notebook_01_structure():
    nb = json.loads((notebooks_dir() / "01_data.ipynb").read_text(encoding="utf-8"))
    assert nb["metadata"]["kernelspec"] == {"name": "python3", "display_name": "Python 3", "language": "python"}
    assert nb["metadata"]["language_info"] == {"name": "python"}
    cells = nb["cells"]
    assert cells[0]["cell_type"] == "markdown" and "".join(cells[0]["source"]).startswith("# ")
    params = cells[2]
    assert params["metadata"].get("tags") == ["parameters"]
    for line in "".join(params["source"]).splitlines():
        node = ast.parse(line.split("  #")[0]).body[0]
        assert isinstance(node, ast.AnnAssign) and isinstance(node.value, ast.Constant), line
        assert "  # " in line, line
    for c in cells:
        if c["cell_type"] == "code":
            assert c["outputs"] == [] and c["execution_count"] is None
            tree = ast.parse("".join(c["source"]))
            assert not any(isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda)) for n in ast.walk(tree))


@pytest.mark.slow
def test_notebook_01_runs(tmp_path, monkeypatch):
    import papermill

    monkeypatch.setenv("LABKIT_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("LABKIT_NOTEBOOK", "01_data")
    out = tmp_path / "01.ipynb"
    papermill.execute_notebook(str(notebooks_dir() / "01_data.ipynb"), str(out), cwd=str(notebooks_dir()),
                               parameters={"cutoff_len": 40}, progress_bar=False)
    metrics = json.loads((tmp_path / "metrics" / "01_data.json").read_text())
    records = sum(len(json.loads((data_dir() / f).read_text())) for f in ("tasks.json", "negatives.json"))
    assert records == 1900 + 240  # the bundled train splits of notebook 01's default datasets
    assert metrics["read"] == metrics["kept"] == records and metrics["rejected"] == 0
    assert metrics["truncated"] > 0 and metrics["tokens_cut"] > 0

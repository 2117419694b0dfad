"""labkit.report.portable: manifest paths as <run>/..., <root>/..., absolute only outside both (and named)."""

import os

from labkit.report.portable import looks_like_path, resolve, to_portable


def test_run_folder_root_and_outside(tmp_path):
    root = tmp_path / "clone"
    run = root / "reports" / "20240101-tiny"
    run.mkdir(parents=True)
    outside: dict[str, str] = {}
    value = {
        "adapter_dir": str(run / "linly_lora"),  # inside the run folder (which is inside the root): <run> wins
        "run": str(run),
        "data": [str(root / "data" / "tasks.json"), str(root / "notebooks" / ".." / "data")],
        "model": "/models/linly-7b",
        "message": f"saved to {run}/linly_lora",  # a sentence that mentions a path is not a path
        "steps": 5,
        "url": "//cdn.example.org/x.js",
        "command": ["labkit", "run", "-p", f"dataset_dir={root / 'data'}", "-p", "llama_model=/models/l7b", "a=b"],
    }
    out = to_portable(value, run, root, outside, "metrics")
    assert out["adapter_dir"] == "<run>/linly_lora" and out["run"] == "<run>"
    assert out["data"] == ["<root>/data/tasks.json", "<root>/data"]
    assert out["model"] == "/models/linly-7b"
    assert out["command"][3:] == ["dataset_dir=<root>/data", "-p", "llama_model=/models/l7b", "a=b"]
    assert outside == {"metrics.model": "/models/linly-7b", "metrics.command[5]": "/models/l7b"}
    assert out["message"] == value["message"] and out["steps"] == 5 and out["url"] == value["url"]
    other_run, other_root = tmp_path / "b" / "reports" / "r2", tmp_path / "b"
    back = resolve(out, other_run, other_root)
    assert back["adapter_dir"] == str(other_run / "linly_lora") and back["run"] == str(other_run)
    assert back["data"][0] == str(other_root / "data" / "tasks.json") and back["model"] == "/models/linly-7b"


def test_symlinked_folder_and_prefix_lookalike(tmp_path):
    real = tmp_path / "real"
    (real / "run").mkdir(parents=True)
    link = tmp_path / "link"
    os.symlink(real, link)
    # the path was written through the real location, the run folder is known through the link
    assert to_portable(str(real / "run" / "x"), link / "run", None) == "<run>/x"
    # /a/run-2 is not inside /a/run
    assert to_portable(str(real / "run-2" / "x"), real / "run", None) == str(real / "run-2" / "x")


def test_looks_like_path():
    assert looks_like_path("/tmp/x") and not looks_like_path("tmp/x") and not looks_like_path("/a\n/b")
    assert not looks_like_path(3) and not looks_like_path("<run>/x")

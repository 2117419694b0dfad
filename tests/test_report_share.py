"""labkit.report.share: the share zip holds reports, manifest, notebooks and adapters, never base models."""

import json
import zipfile
from pathlib import Path

import pytest

from labkit.cli import main as labkit_main
from labkit.errors import LabkitError
from labkit.report.share import open_run, share_files, write_share_zip


def make_run_folder(base: Path, run_id: str = "20240101-000000-tiny") -> Path:
    """A finished-looking run folder: reports, metrics, a trained adapter with a checkpoint, a merged model."""
    run = base / run_id
    (run / "metrics").mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"run_id": run_id, "profile": "tiny", "notebooks": {}}))
    for stem in ("00_environment", "02_linly_lora"):
        (run / f"{stem}.ipynb").write_text("{}")
        (run / f"{stem}.html").write_text("<html></html>")
    (run / "metrics" / "02_linly_lora.json").write_text("{}")
    lora = run / "linly_lora"
    (lora / "checkpoint-10").mkdir(parents=True)
    for name in ("adapter_config.json", "labkit_train.json", "tokenizer.json", "README.md"):
        (lora / name).write_text("{}")
    (lora / "adapter_model.safetensors").write_bytes(b"a" * 128)
    (lora / "training_args.bin").write_bytes(b"pickle")
    (lora / "checkpoint-10" / "adapter_config.json").write_text("{}")
    (lora / "checkpoint-10" / "adapter_model.safetensors").write_bytes(b"c" * 128)
    (lora / "checkpoint-10" / "optimizer.pt").write_bytes(b"o" * 128)
    merged = run / "merged"
    merged.mkdir()
    (merged / "config.json").write_text("{}")
    (merged / "model.safetensors").write_bytes(b"m" * 128)
    return run


def test_share_files_keep_adapters_drop_checkpoints_and_models(tmp_path):
    run = make_run_folder(tmp_path)
    names = [p.as_posix() for p in share_files(run)]
    assert names == ["manifest.json", "00_environment.html", "00_environment.ipynb", "02_linly_lora.html",
                     "02_linly_lora.ipynb", "linly_lora/README.md", "linly_lora/adapter_config.json",
                     "linly_lora/adapter_model.safetensors", "linly_lora/labkit_train.json",
                     "linly_lora/tokenizer.json"]


def test_zip_round_trip_and_cli(tmp_path, capsys):
    run = make_run_folder(tmp_path / "reports")
    out, files = write_share_zip(run)
    assert out == run.parent / f"{run.name}.zip"
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == sorted(f"{run.name}/{p.as_posix()}" for p in files)
    with open_run(out) as (folder, manifest):
        assert manifest["run_id"] == run.name and (folder / "linly_lora" / "adapter_model.safetensors").is_file()
        extracted = folder
    assert not extracted.exists()  # the temporary extraction is gone after the block

    assert labkit_main(["share", str(run), "--out", str(tmp_path / "x" / "shared.zip")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == str(tmp_path / "x" / "shared.zip") and "labkit run --rerun" in lines[-2]
    assert "  linly_lora/adapter_model.safetensors" in lines


def test_bad_sources_are_refused(tmp_path):
    with pytest.raises(LabkitError, match="no manifest.json"):
        share_files(tmp_path)
    run = make_run_folder(tmp_path)
    with pytest.raises(LabkitError, match="inside the run folder"):
        write_share_zip(run, run / "x.zip")
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../outside.txt", "x")
    with pytest.raises(LabkitError, match="outside the folder"):
        with open_run(evil):
            pass
    two = tmp_path / "two.zip"
    with zipfile.ZipFile(two, "w") as zf:
        zf.writestr("a/manifest.json", "{}")
        zf.writestr("b/manifest.json", "{}")
    with pytest.raises(LabkitError, match="found 2"):
        with open_run(two):
            pass
    (tmp_path / "not.zip").write_text("plain text")
    with pytest.raises(LabkitError, match="neither a run folder nor a zip"):
        with open_run(tmp_path / "not.zip"):
            pass

"""One .zip to share a run (HTML, manifest, executed notebooks, trained adapters; no base model), and opening it."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterator

from labkit.errors import LabkitError
from labkit.report.manifest import MANIFEST, read_manifest

ADAPTER_MARKER = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors",)
# Small files of an adapter folder that travel with it (config, training plan, tokenizer, plots); anything else
# there (checkpoint-N/ with optimizer states, full-model weights, pickles) stays home.
ADAPTER_SUFFIXES = (".json", ".md", ".txt", ".model", ".png", ".yaml", ".yml")
RUN_SUFFIXES = (".html", ".ipynb")


def share_files(run_dir: str | Path) -> list[Path]:
    """The files of a run folder that go into its share zip, relative to the folder."""
    run_dir = Path(run_dir)
    read_manifest(run_dir)  # a clear error for a folder that is not a run
    files = [Path(MANIFEST)]
    files += sorted(p.relative_to(run_dir) for p in run_dir.iterdir() if p.is_file() and p.suffix in RUN_SUFFIXES)
    for marker in sorted(run_dir.rglob(ADAPTER_MARKER)):
        folder = marker.parent
        if any(part.startswith("checkpoint-") for part in folder.relative_to(run_dir).parts):
            continue  # resumable training state, not the trained adapter
        files += sorted(p.relative_to(run_dir) for p in folder.iterdir() if p.is_file()
                        and (p.name in ADAPTER_WEIGHTS or p.suffix in ADAPTER_SUFFIXES))
    return files


def write_share_zip(run_dir: str | Path, out: str | Path | None = None) -> tuple[Path, list[Path]]:
    """<run folder>.zip (or `out`) holding the share files under `<run-id>/`; returns (zip, files)."""
    run_dir = Path(run_dir).resolve()
    files = share_files(run_dir)
    out = Path(out) if out else run_dir.parent / f"{run_dir.name}.zip"
    if out.resolve().is_relative_to(run_dir):
        raise LabkitError(f"--out {out}: the zip cannot go inside the run folder it holds; write it elsewhere")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for rel in files:
            zf.write(run_dir / rel, f"{run_dir.name}/{rel.as_posix()}")
    tmp.replace(out)
    return out, files


def _safe_members(zf: zipfile.ZipFile, source: Path) -> list[zipfile.ZipInfo]:
    members = zf.infolist()
    for info in members:
        parts = Path(info.filename).parts
        if info.filename.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            raise LabkitError(f"{source}: entry {info.filename!r} would land outside the folder; not a labkit share")
    return members


def _find_run(folder: Path, source: Path) -> Path:
    """The run folder in an extracted share: the folder itself or its single subfolder with a manifest."""
    if (folder / MANIFEST).is_file():
        return folder
    found = sorted(p.parent for p in folder.glob(f"*/{MANIFEST}"))
    if len(found) != 1:
        raise LabkitError(f"{source}: expected one run folder with a {MANIFEST} in the zip, found {len(found)}; "
                          "make it with `labkit share FOLDER`")
    return found[0]


@contextlib.contextmanager
def open_run(source: str | Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(run folder, manifest) of a run folder or of a share zip (extracted to a temporary folder for the block)."""
    source = Path(source)
    if source.is_dir():
        yield source, read_manifest(source)
        return
    if not source.is_file():
        raise LabkitError(f"--rerun {source}: no such folder or zip")
    if not zipfile.is_zipfile(source):
        raise LabkitError(f"--rerun {source}: neither a run folder nor a zip made by `labkit share`")
    tmp = Path(tempfile.mkdtemp(prefix="labkit-share-"))
    try:
        with zipfile.ZipFile(source) as zf:
            zf.extractall(tmp, members=_safe_members(zf, source))
        folder = _find_run(tmp, source)
        yield folder, read_manifest(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

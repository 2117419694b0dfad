"""Checkpoints: completion marker (size + sha256 per file) written last, newest-intact lookup, resume, state repair."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from labkit.errors import LabkitError
from labkit.log import notice, warn

MARKER = "labkit_complete.json"
_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")
STATE_FILE = "trainer_state.json"
MARKER_VERSION = 2  # 1: {"files": {name: size}}; 2: {"files": {name: {"size", "sha256"}}}
_CHUNK = 8 << 20  # bytes per read while hashing: flat memory for multi-GB optimizer states


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 8 MiB chunks (hashlib releases the GIL, so files hash in parallel)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _hash_all(paths: list[Path]) -> list[str]:
    if len(paths) < 2:
        return [sha256_file(p) for p in paths]
    with ThreadPoolExecutor(max_workers=min(4, len(paths), os.cpu_count() or 1)) as pool:
        return list(pool.map(sha256_file, paths))


def step_of(path: str | os.PathLike) -> int | None:
    m = _CKPT_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """checkpoint-N folders of output_dir, oldest step first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and step_of(p) is not None]
    return sorted(found, key=lambda p: step_of(p))


def _checkpoint_files(ckpt: Path) -> list[Path]:
    return [p for p in sorted(ckpt.rglob("*")) if p.is_file() and p.name != MARKER and not p.name.startswith(".tmp")]


def _write_json_atomic(path: Path, body: dict) -> None:
    tmp = path.parent / f".tmp-{path.name}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(body, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_marker(ckpt: str | os.PathLike, **extra) -> Path:
    """Write labkit_complete.json LAST: every file with its size and sha256; tmp file + fsync + os.replace (atomic)."""
    ckpt = Path(ckpt)
    paths = _checkpoint_files(ckpt)
    files = {str(p.relative_to(ckpt)): {"size": p.stat().st_size, "sha256": digest}
             for p, digest in zip(paths, _hash_all(paths))}
    body = {"version": MARKER_VERSION, "step": step_of(ckpt), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "files": files, **extra}
    _write_json_atomic(ckpt / MARKER, body)
    try:  # make the rename itself durable
        fd = os.open(ckpt, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass
    return ckpt / MARKER


def _entry(value) -> tuple[int | None, str | None]:
    """(size, sha256) of a marker entry: an int (version 1, size only) or {"size", "sha256"} (version 2)."""
    if isinstance(value, bool):
        return None, None
    if isinstance(value, int):
        return value, None
    if isinstance(value, dict):
        size, digest = value.get("size"), value.get("sha256")
        return (size if isinstance(size, int) else None), (digest if isinstance(digest, str) else None)
    return None, None


def incomplete_reason(ckpt: str | os.PathLike, verify_hashes: bool = True) -> str | None:
    """None when the checkpoint is complete and intact, else why not (no marker, file missing, truncated, or its
    content no longer matches the sha256 recorded at save time). Markers of version 1 (sizes only) still work."""
    found = problem(ckpt, verify_hashes)
    return None if found is None else found[1]


def problem(ckpt: str | os.PathLike, verify_hashes: bool = True) -> tuple[Path, str] | None:
    """None when complete and intact, else (the file at fault, why): the marker itself or a file it lists."""
    ckpt = Path(ckpt)
    marker = ckpt / MARKER
    if not marker.is_file():
        return marker, f"no {MARKER} (half-written: the run stopped during the save)"
    try:
        body = json.loads(marker.read_text(encoding="utf-8"))
        files = body["files"]
        if not isinstance(files, dict):
            raise ValueError("'files' is not an object")
    except (OSError, ValueError, KeyError, TypeError) as err:
        return marker, f"{MARKER} unreadable ({type(err).__name__}: {err})"
    to_hash = []
    for rel, value in files.items():
        size, digest = _entry(value)
        p = ckpt / rel
        if size is None:
            return marker, f"{MARKER} is damaged (entry {rel!r}: {value!r})"
        if not p.is_file():
            return p, f"{rel} listed in {MARKER} is missing"
        if p.stat().st_size != size:
            return p, f"{rel} has {p.stat().st_size} bytes, {MARKER} says {size}"
        if digest and verify_hashes:
            to_hash.append((rel, p, digest))
    for (rel, p, digest), got in zip(to_hash, _hash_all([p for _, p, _ in to_hash])):
        if got != digest:
            return p, f"{rel} does not match its sha256 in {MARKER} (changed or damaged after it was saved)"
    return None


def is_complete(ckpt: str | os.PathLike) -> bool:
    return incomplete_reason(ckpt) is None


def latest_complete(output_dir: str | os.PathLike, *, quiet: bool = False) -> Path | None:
    """Newest complete, intact checkpoint-N in output_dir; warns naming each newer half-written or damaged one."""
    for ckpt in reversed(list_checkpoints(output_dir)):
        why = incomplete_reason(ckpt)
        if why is None:
            return ckpt
        if not quiet:
            warn(f"skipping {ckpt}: {why}")
    return None


def _looks_like_checkpoint(path: Path) -> bool:
    return (path / STATE_FILE).is_file() and any((path / f).is_file() for f in ADAPTER_FILES)


def resolve_resume(value: str | bool | None, output_dir: str | os.PathLike) -> Path | None:
    """--resume_from_checkpoint PATH|auto|true -> the checkpoint folder to resume from (None = start fresh)."""
    if value in (None, "", False, "false", "False", "no", "none", "None"):
        return None
    output_dir = Path(output_dir)
    if value in (True, "auto", "true", "True", "latest"):
        ckpt = latest_complete(output_dir)
        if ckpt is None:
            notice(f"no complete checkpoint in {output_dir}; starting from the beginning")
        return ckpt
    path = Path(str(value)).expanduser()
    if not path.is_dir():
        raise LabkitError(f"--resume_from_checkpoint {value}: no such folder")
    if step_of(path) is None:  # an output folder: take its newest complete checkpoint
        ckpt = latest_complete(path)
        if ckpt is None:
            raise LabkitError(f"--resume_from_checkpoint {value}: no complete checkpoint-N folder inside")
        return ckpt.resolve()
    found = problem(path)
    if found is not None:
        if (path / MARKER).exists() or not _looks_like_checkpoint(path):
            bad, why = found
            older = [c.name for c in list_checkpoints(path.parent) if (step_of(c) or 0) < (step_of(path) or 0)]
            hint = f"resume from an earlier one ({older[-1]}) or use auto" if older else "start without it"
            kind = "damaged" if "sha256" in why or "bytes" in why else "incomplete"
            rel = os.path.relpath(bad, path)
            detail = why[len(rel) + 1:] if why.startswith(rel + " ") else why
            raise LabkitError(f"--resume_from_checkpoint {value}: {kind} checkpoint: {bad}: {detail}; {hint}")
        warn(f"{path} has no {MARKER} (not written by labkit?); it has trainer state and adapter, using it")
    return path.resolve()


def repair_best_checkpoint(ckpt: str | os.PathLike, output_dir: str | os.PathLike) -> str | None:
    """Point trainer_state.best_model_checkpoint at a folder that exists (the "'checkpoint-1400' is not in list" bug).

    The recorded path may be gone, moved with its run, or spelled differently (relative, ./, another
    output_dir). Looks for checkpoint-<best step> in output_dir, then beside `ckpt`; else clears it.
    Rewrites trainer_state.json atomically (original kept as trainer_state.json.orig). Returns the new value.
    """
    ckpt, output_dir = Path(ckpt), Path(output_dir)
    state_path = ckpt / STATE_FILE
    if not state_path.is_file():
        return None
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise LabkitError(f"{state_path}: unreadable trainer state ({err}); resume from another checkpoint") from None
    best = state.get("best_model_checkpoint") if isinstance(state, dict) else None
    if not best:
        return None
    best_step = state.get("best_global_step") or step_of(best)
    candidates = []
    if best_step is not None:
        candidates = [output_dir / f"checkpoint-{best_step}", ckpt.parent / f"checkpoint-{best_step}"]
    new = None
    for cand in candidates:
        if cand.is_dir() and is_complete(cand) or (cand.is_dir() and _looks_like_checkpoint(cand)):
            new = str(cand.resolve())
            break
    if new == best:
        return new
    if new is None:
        warn(f"{state_path}: best_model_checkpoint {best!r} does not exist; cleared (the next evaluation sets it again)")
    elif os.path.realpath(best) != new:
        notice(f"{state_path}: best_model_checkpoint {best!r} -> {new!r}")
    state["best_model_checkpoint"] = new
    if new is None:
        state["best_global_step"] = None
    backup = ckpt / (STATE_FILE + ".orig")
    if not backup.exists():
        shutil.copy2(state_path, backup)
    tmp = ckpt / f".tmp-{STATE_FILE}"
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, state_path)
    if (ckpt / MARKER).is_file():  # keep the marker's list true (sizes, and hashes where it has them)
        _update_marker(ckpt, [STATE_FILE, backup.name])
    return new


def _update_marker(ckpt: Path, names: list[str]) -> None:
    """Re-record `names` (files this module rewrote) in an existing marker, in the marker's own format."""
    body = json.loads((ckpt / MARKER).read_text(encoding="utf-8"))
    files = body.get("files", {})
    if STATE_FILE not in files:
        return
    hashed = isinstance(files.get(STATE_FILE), dict)
    for name in names:
        p = ckpt / name
        if p.is_file():
            files[name] = {"size": p.stat().st_size, "sha256": sha256_file(p)} if hashed else p.stat().st_size
    _write_json_atomic(ckpt / MARKER, body)


def drop_stale_after(output_dir: str | os.PathLike, step: int) -> list[Path]:
    """Before resuming at `step`: remove half-written or damaged checkpoints newer than it (they are redone)."""
    removed = []
    for ckpt in list_checkpoints(output_dir):
        why = incomplete_reason(ckpt) if step_of(ckpt) > step else None
        if why is not None:
            warn(f"removing {ckpt} ({why}); it is redone from checkpoint-{step}")
            shutil.rmtree(ckpt, ignore_errors=True)
            removed.append(ckpt)
    return removed

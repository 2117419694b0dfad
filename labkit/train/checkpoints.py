"""Checkpoints: completion marker written last, newest-complete lookup, resume resolution, trainer_state repair."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

from labkit.errors import LabkitError

MARKER = "labkit_complete.json"
_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")
STATE_FILE = "trainer_state.json"


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


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


def write_marker(ckpt: str | os.PathLike, **extra) -> Path:
    """Write labkit_complete.json LAST: lists every file with its size; tmp file + fsync + os.replace (atomic)."""
    ckpt = Path(ckpt)
    files = {}
    for p in sorted(ckpt.rglob("*")):
        if p.is_file() and p.name != MARKER and not p.name.startswith(".tmp"):
            files[str(p.relative_to(ckpt))] = p.stat().st_size
    body = {"step": step_of(ckpt), "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "files": files, **extra}
    tmp = ckpt / f".tmp-{MARKER}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(body, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, ckpt / MARKER)
    try:  # make the rename itself durable
        fd = os.open(ckpt, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass
    return ckpt / MARKER


def incomplete_reason(ckpt: str | os.PathLike) -> str | None:
    """None when the checkpoint is complete, else why not (missing marker, file missing or truncated)."""
    ckpt = Path(ckpt)
    marker = ckpt / MARKER
    if not marker.is_file():
        return f"no {MARKER} (half-written: the run stopped during the save)"
    try:
        body = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return f"{MARKER} unreadable ({err})"
    for rel, size in body.get("files", {}).items():
        p = ckpt / rel
        if not p.is_file():
            return f"{rel} listed in {MARKER} is missing"
        if p.stat().st_size != size:
            return f"{rel} has {p.stat().st_size} bytes, {MARKER} says {size}"
    return None


def is_complete(ckpt: str | os.PathLike) -> bool:
    return incomplete_reason(ckpt) is None


def latest_complete(output_dir: str | os.PathLike, *, quiet: bool = False) -> Path | None:
    """Newest complete checkpoint-N in output_dir; warns naming each newer half-written one it skips."""
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
            print(f"notice: no complete checkpoint in {output_dir}; starting from the beginning", flush=True)
        return ckpt
    path = Path(str(value)).expanduser()
    if not path.is_dir():
        raise LabkitError(f"--resume_from_checkpoint {value}: no such folder")
    if step_of(path) is None:  # an output folder: take its newest complete checkpoint
        ckpt = latest_complete(path)
        if ckpt is None:
            raise LabkitError(f"--resume_from_checkpoint {value}: no complete checkpoint-N folder inside")
        return ckpt.resolve()
    why = incomplete_reason(path)
    if why is not None:
        if (path / MARKER).exists() or not _looks_like_checkpoint(path):
            raise LabkitError(f"--resume_from_checkpoint {value}: incomplete checkpoint: {why}")
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
    state = json.loads(state_path.read_text(encoding="utf-8"))
    best = state.get("best_model_checkpoint")
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
        print(f"notice: {state_path}: best_model_checkpoint {best!r} -> {new!r}", flush=True)
    state["best_model_checkpoint"] = new
    if new is None:
        state["best_global_step"] = None
    backup = ckpt / (STATE_FILE + ".orig")
    if not backup.exists():
        shutil.copy2(state_path, backup)
    tmp = ckpt / f".tmp-{STATE_FILE}"
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, state_path)
    if (ckpt / MARKER).is_file():  # keep the marker's size list true
        body = json.loads((ckpt / MARKER).read_text(encoding="utf-8"))
        if STATE_FILE in body.get("files", {}):
            body["files"][STATE_FILE] = state_path.stat().st_size
            if backup.name not in body["files"]:
                body["files"][backup.name] = backup.stat().st_size
            tmp = ckpt / f".tmp-{MARKER}"
            tmp.write_text(json.dumps(body, indent=1), encoding="utf-8")
            os.replace(tmp, ckpt / MARKER)
    return new


def drop_stale_after(output_dir: str | os.PathLike, step: int) -> list[Path]:
    """Before resuming at `step`: remove half-written checkpoints newer than it (they would be overwritten)."""
    removed = []
    for ckpt in list_checkpoints(output_dir):
        if step_of(ckpt) > step and not is_complete(ckpt):
            warn(f"removing half-written {ckpt} (no complete {MARKER}); it is redone from checkpoint-{step}")
            shutil.rmtree(ckpt, ignore_errors=True)
            removed.append(ckpt)
    return removed

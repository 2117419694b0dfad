"""Where things live: project root, bundled data, notebooks, profiles, reports, caches, the current run folder."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def project_root() -> Path:
    """The repository root (folder holding notebooks/ and data/); LABKIT_ROOT overrides."""
    env = os.environ.get("LABKIT_ROOT")
    if env:
        return Path(env).resolve()
    return PACKAGE_DIR.parent


def data_dir() -> Path:
    """Bundled datasets and dataset_info.json."""
    return project_root() / "data"


def notebooks_dir() -> Path:
    return project_root() / "notebooks"


def profiles_dir() -> Path:
    return project_root() / "profiles"


def reports_dir() -> Path:
    """Where `labkit run` writes run folders; LABKIT_REPORTS overrides."""
    env = os.environ.get("LABKIT_REPORTS")
    return Path(env).resolve() if env else project_root() / "reports"


def cache_dir() -> Path:
    """Generated artefacts (tiny models, tokenizer); LABKIT_CACHE overrides. Gitignored."""
    env = os.environ.get("LABKIT_CACHE")
    path = Path(env).resolve() if env else project_root() / ".cache" / "labkit"
    _make_folder(path, "cache folder", "set LABKIT_CACHE to a writable folder")
    return path


def run_dir() -> Path:
    """The folder of the current `labkit run` (LABKIT_RUN_DIR, set by the runner), else runs/interactive/."""
    env = os.environ.get("LABKIT_RUN_DIR")
    path = Path(env).resolve() if env else project_root() / "runs" / "interactive"
    _make_folder(path, "run folder", "set LABKIT_RUN_DIR to a writable folder")
    return path


def resolve_output(value: str | os.PathLike | None, default_name: str) -> Path:
    """A notebook output folder: `value` if given (relative to the cwd), else <run folder>/<default_name>."""
    if value:
        return Path(value).expanduser().resolve()
    return run_dir() / default_name


# The adapters notebooks 02/03 write into a run folder, the notebook that writes each, and its parameter name.
RUN_ADAPTERS = {"llama": ("linly_lora", "02_linly_lora", "llama_adapter"),
                "baichuan": ("baichuan_lora", "03_baichuan_wpack", "baichuan_adapter")}


def resolve_adapter(arch: str, value: str = "") -> tuple[Path | None, str]:
    """(adapter folder or None, note): `value`, else <run folder>/<linly_lora|baichuan_lora> when notebook 02/03
    wrote it in this run. A `value` that is not an adapter folder is a LabkitError; no default adapter is None."""
    from labkit.errors import LabkitError

    if arch not in RUN_ADAPTERS:
        raise LabkitError(f"arch {arch!r}: expected llama or baichuan")
    folder, notebook, param = RUN_ADAPTERS[arch]
    path = resolve_output(value, folder)
    if (path / "adapter_config.json").is_file():
        return path, f"{arch}: adapter {path}"
    what = "no such folder" if not path.exists() else "no adapter_config.json in it"
    if value:
        raise LabkitError(f"{param}={value!r}: {what} ({path}); give the folder a LoRA adapter was saved to")
    return None, (f"{arch}: no adapter at {path} (run notebook {notebook} first in this run: labkit run --only "
                  f"{notebook[:2]},..., or set {param}=PATH)")


def _make_folder(path: Path, what: str, todo: str) -> None:
    """mkdir -p, with a LabkitError naming the folder (read-only, full, or a file in the way) instead of a traceback."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        from labkit.errors import LabkitError

        raise LabkitError(f"{what} {path}: cannot be created ({err.strerror or err}); {todo}") from None


def writable_folder(path: str | os.PathLike, what: str = "output folder", need_bytes: int = 1 << 20) -> Path:
    """Check, before any work, that `path` can be created and written: LabkitError naming the folder otherwise.

    Nothing is created: the nearest existing ancestor must be a folder, on a file system mounted read-write,
    writable by this user, with at least `need_bytes` free (a full disk). Returns the path.
    """
    from labkit.errors import LabkitError

    path = Path(path).expanduser()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    todo = "choose another folder"
    if not probe.is_dir():
        where = "is a file" if probe == path else f"cannot be created: {probe} is a file, not a folder"
        raise LabkitError(f"{what} {path}: {where}; {todo}")
    st = os.statvfs(probe)
    if st.f_flag & getattr(os, "ST_RDONLY", 1):
        raise LabkitError(f"{what} {path}: {probe} is on a read-only file system; {todo}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise LabkitError(f"{what} {path}: {probe} is not writable (permission denied); {todo} or fix its "
                          f"permissions")
    free = st.f_bavail * st.f_frsize
    if free < need_bytes:
        raise LabkitError(f"{what} {path}: the disk holding {probe} is full ({free / 2**20:.1f} MiB free, "
                          f"{need_bytes / 2**20:.1f} MiB needed); free space or {todo}")
    return path

"""Two runs side by side: the metrics that differ (timings ignored), the environment and the code that differ."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from labkit.report import portable
from labkit.report.manifest import changed_between, git_info
from labkit.report.metrics import flatten, same_value

# Metrics whose leaf name matches are timings/throughput: they differ run to run and `--rerun` ignores them.
VOLATILE = re.compile(r"(runtime|seconds|duration|elapsed|wall|_time$|time_s$|_s$|per_second|per_s$|"
                      r"throughput|timestamp|tokens_per|samples_per|steps_per|flos|memory|rss|_mb$|_gb$)",
                      re.IGNORECASE)
MISSING = "<missing>"

# Environment facts a rerun states before it compares numbers: (label, key path in the fingerprint).
ENV_FIELDS = (
    ("python", "python"), ("torch build", "torch"), ("CUDA", "cuda"), ("cuDNN", "cudnn"), ("os", "os"),
    ("CPU", "cpu"), ("CPU cores", "cpu_count"), ("CPU capability (torch)", "cpu_capability"),
    ("CPU bf16 instructions", "cpu_bf16_instructions"), ("GPUs", "gpus"), ("bf16 on GPU", "bf16.cuda"),
    ("bf16 fast on CPU", "bf16.cpu_accelerated"),
)
# Fingerprint keys that are package versions (also listed under "packages").
_TOP_LEVEL_PACKAGES = ("transformers", "peft", "datasets", "accelerate", "tokenizers", "papermill")


def _legacy_neutral(manifest: dict[str, Any], value: Any, run_dir: str | Path | None) -> Any:
    """Manifests written before paths were portable hold absolute paths into their own run folder."""
    folder = run_dir or manifest.get("run_dir")
    return portable.to_portable(value, folder, None) if folder else value


def comparable_metrics(manifest: dict[str, Any], run_dir: str | Path | None = None) -> dict[str, Any]:
    """Flattened metrics ('<notebook>.<path>': value) minus the environment fingerprint and timing-like values."""
    out = {}
    for stem, info in (manifest.get("notebooks") or {}).items():
        for name, value in flatten(info.get("metrics") or {}):
            if name.startswith("fingerprint") or VOLATILE.search(name.rsplit(".", 1)[-1]):
                continue
            out[f"{stem}.{name}"] = _legacy_neutral(manifest, value, run_dir)
    return out


def compare_metrics(old: dict[str, Any], new: dict[str, Any], rtol: float = 0.0, old_dir: str | Path | None = None,
                    new_dir: str | Path | None = None) -> list[tuple[str, Any, Any]]:
    """(name, old, new) for every comparable metric that differs beyond `rtol` (0: exact) between two manifests."""
    a, b = comparable_metrics(old, old_dir), comparable_metrics(new, new_dir)
    diffs = []
    for name in list(a) + [n for n in b if n not in a]:
        va, vb = a.get(name, MISSING), b.get(name, MISSING)
        if not same_value(va, vb, rtol):
            diffs.append((name, va, vb))
    return diffs


def _get(env: dict[str, Any], dotted: str) -> Any:
    value: Any = env
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def _gpu_kinds(gpus: Any) -> Any:
    """GPU list -> 'name (sm x.y, N GB)' per GPU: the kind, not the index."""
    if not isinstance(gpus, list):
        return gpus
    kinds = [f"{g.get('name')} (sm {g.get('capability')}, {g.get('memory_gb')} GB)" if isinstance(g, dict) else str(g)
             for g in gpus]
    return ", ".join(kinds) or "none"


def _versions(env: dict[str, Any]) -> dict[str, Any]:
    versions = {k: env[k] for k in _TOP_LEVEL_PACKAGES if k in env}
    versions.update(env.get("packages") or {})
    versions.pop("torch", None)  # "torch build" covers it, with its +cpu / +cu121 tag
    return versions


def environment_differences(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(what, recorded, now) for every environment fact recorded in both fingerprints that differs: torch build,
    CPU/GPU kind, bf16 capability, Python and OS, then package versions. Facts one side did not record are
    skipped (a run without notebook 00 has no GPU list)."""
    out = []
    for label, key in ENV_FIELDS:
        a, b = _get(old, key), _get(new, key)
        if key == "gpus":
            a, b = _gpu_kinds(a), _gpu_kinds(b)
        if MISSING not in (a, b) and a != b:
            out.append((label, a, b))
    va, vb = _versions(old), _versions(new)
    for name in sorted(set(va) & set(vb)):
        if va[name] != vb[name]:
            out.append((name, va[name], vb[name]))
    return out


def code_differences(old_git: dict[str, Any], root: str | Path) -> list[str]:
    """Lines saying how the code of the earlier run (its recorded git state) differs from this clone's."""
    now = git_info(root)
    old_commit, new_commit = old_git.get("commit"), now.get("commit")
    if not old_commit:
        lines = ["code: the earlier run recorded no git commit (not run from a git checkout)"]
    elif not new_commit:
        lines = [f"code: earlier commit {old_commit[:10]}; this project root ({root}) is not a git checkout"]
    elif old_commit == new_commit:
        lines = [f"code: same commit {new_commit[:10]}"]
    else:
        lines = [f"code: commit {old_commit[:10]} -> {new_commit[:10]}"]
        changed = changed_between(root, old_commit, new_commit)
        if changed is None:
            lines.append(f"  commit {old_commit[:10]} is not in this clone: `git fetch` it to list what changed")
        elif changed:
            lines.append(f"  {len(changed)} file(s) changed between them: " + _shorten(changed))
        else:
            lines.append("  no notebook, labkit, profile or data file changed between them")
    if old_git.get("dirty"):
        files = old_git.get("changed") or []
        lines.append("  the earlier run had uncommitted changes" + (f": {_shorten(files)}" if files else ""))
    if now.get("dirty"):
        lines.append(f"  this clone has uncommitted changes: {_shorten(now.get('changed') or [])}")
    return lines


def _shorten(items: list[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" ... and {len(items) - limit} more" if len(items) > limit else "")

"""Notebook 04's steps: find an adapter and its base, load them once, evaluate base vs adapter on held-out data."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from labkit.errors import LabkitError
from labkit.paths import resolve_adapter

HELDOUT_DATASETS = "tasks_test,negatives_test"  # bundled held-out splits (disjoint from the train splits)
TRAIN_CONFIG_FILE = "labkit_train.json"  # written by labkit.train next to the adapter


def load_heldout(datasets: str = HELDOUT_DATASETS, max_per_dataset: int = 0, seed: int = 42,
                 dataset_dir: str | Path | None = None) -> list[dict]:
    """Held-out examples: each dataset capped at `max_per_dataset` (0 = all), a seeded sample, order kept."""
    import random

    from labkit.data.registry import load_datasets

    names = [n.strip() for n in datasets.split(",") if n.strip()]
    if not names:
        raise LabkitError("no held-out dataset named (e.g. eval_datasets='tasks_test,negatives_test')")
    out: list[dict] = []
    for name in names:
        examples, _ = load_datasets(name, dataset_dir=dataset_dir or None, seed=seed, shuffle=False)
        if max_per_dataset and len(examples) > max_per_dataset:
            keep = sorted(random.Random(seed).sample(range(len(examples)), max_per_dataset))
            examples = [examples[i] for i in keep]
        out += examples
    return out


def adapter_info(adapter_dir: str | Path) -> dict:
    """The training settings saved next to an adapter (labkit_train.json), or {} when there are none."""
    p = Path(adapter_dir) / TRAIN_CONFIG_FILE
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def base_for(arch: str, value: str = "", info: dict | None = None) -> str:
    """The base model folder: `value`, else the adapter's training base, else labkit's tiny model of `arch`.

    `value` and the default follow labkit.models.resolve_base (a folder, tiny-llama / tiny-baichuan, "").
    """
    from labkit.models.load import resolve_base

    if not value and info and info.get("base_model"):
        recorded = str(info["base_model"])
        if recorded.lower().startswith("tiny") or Path(recorded).expanduser().is_dir():
            return str(resolve_base(recorded, arch))
        raise LabkitError(f"{TRAIN_CONFIG_FILE} of the {arch} adapter names base model {recorded}, which is not "
                          f"there (moved?); set {arch}_model=PATH to the base folder")
    return str(resolve_base(value, arch))


def load_with_adapter(base: str | Path, adapter: str | Path | None, precision: str = "fp32",
                      allow_empty: bool = False, allow_pickle: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer): the base loaded ONCE at `precision`, the LoRA adapter on top (not merged).

    `base` follows labkit.models.resolve_base; an adapter whose every lora_B is zero is refused unless
    `allow_empty` (labkit.models.integrity.load_adapter).
    """
    from labkit.evaluate.generate import prepare_tokenizer
    from labkit.models import load_model, load_tokenizer
    from labkit.models.load import resolve_base

    base = resolve_base(base)
    model = load_model(base, precision=precision, allow_pickle=allow_pickle)
    tokenizer = load_tokenizer(base)
    if adapter is not None:
        from labkit.models.integrity import load_adapter  # checks every tensor was applied

        model = load_adapter(model, adapter, allow_empty=allow_empty)
    model.eval()
    return model, prepare_tokenizer(tokenizer)


@dataclasses.dataclass
class ArchEval:
    """One architecture's evaluation: where things came from, the loaded model and the comparison."""

    arch: str
    base: str
    adapter: str
    template: str
    model: Any
    tokenizer: Any
    comparison: Any  # labkit.evaluate.metrics.Comparison
    seconds: float

    def summary(self):
        return self.comparison.summary()

    def record(self) -> dict:
        return self.comparison.record()


def evaluate_arch(arch: str, base: str = "", adapter: str = "", *, template: str = "",
                  datasets: str = HELDOUT_DATASETS, max_eval_samples: int = 0, max_new_tokens: int = 32,
                  precision: str = "fp32", batch_size: int = 16, seed: int = 42, verbose: bool = True,
                  examples: list[dict] | None = None, allow_empty: bool = False, allow_pickle: bool = False,
                  **sampling: Any) -> ArchEval | None:
    """Base vs adapter for one architecture on held-out data; None (and a message) when the adapter is missing.

    An adapter whose every lora_B is zero is refused (LabkitError) unless `allow_empty`; `allow_pickle` reads a
    base stored as pytorch_model*.bin (torch.load(weights_only=True)).

    `template` "" = the template the adapter was trained with (its labkit_train.json), else alpaca-lora/alpaca.
    """
    from labkit.evaluate.metrics import compare

    path, message = resolve_adapter(arch, adapter)
    if path is None:
        print(message + "; skipped")
        return None
    info = adapter_info(path)
    base_path = base_for(arch, base, info)
    template = template or info.get("template") or "alpaca-lora/alpaca"
    cutoff = max(int(info.get("cutoff_len") or 0), 256)
    t0 = time.perf_counter()
    model, tokenizer = load_with_adapter(base_path, path, precision, allow_empty=allow_empty,
                                         allow_pickle=allow_pickle)
    if examples is None:
        examples = load_heldout(datasets, max_eval_samples, seed)
    cmp = compare(model, tokenizer, examples, template, batch_size=batch_size, cutoff_len=cutoff,
                  max_new_tokens=max_new_tokens, seed=seed, **sampling)
    seconds = time.perf_counter() - t0
    if verbose:
        print(f"{arch}: base {base_path} + adapter {path} (template {template}, {precision}); "
              f"{len(examples)} held-out examples in {seconds:.1f} s")
    return ArchEval(arch, base_path, str(path), template, model, tokenizer, cmp, seconds)


def tasks_not_above_base(ev: ArchEval) -> list[str]:
    """Rows of the per-task chart where the adapter does not beat its base: exact match on the checkable tasks,
    the share refused on the refusal task (a task with no score for either variant counts as not above)."""
    pt = ev.comparison.per_task()
    if "adapter" not in pt.columns.get_level_values("variant"):
        return []
    out = []
    for task in pt.index:
        metric = "refused" if task == "refusal" else "exact_match"
        if not pt.loc[task, (metric, "adapter")] > pt.loc[task, (metric, "base")]:
            out.append(str(task))
    return out


def records(**evals: ArchEval | None) -> dict:
    """{arch: {variant: {metric: value}, "tasks_not_above_base": [task]}} for labkit.report.record, skipping
    architectures not evaluated."""
    return {arch: {**ev.record(), "tasks_not_above_base": tasks_not_above_base(ev)}
            for arch, ev in evals.items() if ev is not None}


def summary_table(**evals: ArchEval | None):
    """One pandas table: rows = metrics, columns = (arch, base|adapter)."""
    import pandas as pd

    frames = {arch: ev.summary() for arch, ev in evals.items() if ev is not None}
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, axis=1)


def show(ev: ArchEval | None, n_examples: int = 6) -> None:
    """Display one architecture's tables: metrics side by side, per task, a few examples side by side."""
    from IPython.display import Markdown, display

    if ev is None:
        display(Markdown("*Not evaluated (see the message above).*"))
        return
    display(Markdown(f"**{ev.arch}**: base `{ev.base}` + adapter `{ev.adapter}`, template `{ev.template}`, "
                     f"{ev.seconds:.1f} s"))
    display(ev.summary().round(4))
    display(ev.comparison.per_task().round(3))
    display(ev.comparison.examples(n_examples))


def verdict(**evals: ArchEval | None):
    """Does the adapter beat its base on held-out data? One row per architecture and criterion."""
    import pandas as pd

    rows = []
    for arch, ev in evals.items():
        if ev is None:
            continue
        s = ev.summary()
        if "adapter" not in s.columns:
            continue
        b, a = s["base"], s["adapter"]
        checks = [
            ("lower response loss", f"{a['response_loss']:.3f} < {b['response_loss']:.3f}",
             a["response_loss"] < b["response_loss"]),
            ("higher exact match", f"{a['exact_match']:.3f} > {b['exact_match']:.3f}",
             a["exact_match"] > b["exact_match"]),
            ("refuses most held-out negatives", f"{a['refusal_rate']:.3f} > 0.5", a["refusal_rate"] > 0.5),
            ("declines fewer than half of held-out positives", f"{a['false_refusal_rate']:.3f} < 0.5",
             a["false_refusal_rate"] < 0.5),
        ]
        behind = tasks_not_above_base(ev)
        checks.append(("above the base on every task", "all tasks" if not behind else "not on " + ", ".join(behind),
                       not behind))
        rows += [{"arch": arch, "criterion": c, "measured": m, "pass": bool(ok)} for c, m, ok in checks]
    return pd.DataFrame(rows, columns=["arch", "criterion", "measured", "pass"])

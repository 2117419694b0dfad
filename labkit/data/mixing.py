"""Mixing datasets: per-dataset counts, fractions or shares of the mix ("tasks,negatives:100", "negatives:10%")."""

from __future__ import annotations

import random
from dataclasses import dataclass

from labkit.errors import LabkitError


@dataclass
class Amount:
    """How much of one dataset goes into the mix: all, a count, a fraction of it, or a share of the final mix."""

    kind: str = "all"  # all | count | fraction | share
    value: float = 0.0

    def __str__(self) -> str:
        return {"all": "all", "count": f"{int(self.value)}", "fraction": f"{self.value:g}",
                "share": f"{self.value:g}%"}[self.kind]


def parse_amount(text: str, where: str = "") -> Amount:
    """'' -> all; '100' -> count; '0.5' -> fraction of the dataset; '10%' -> share of the final mix."""
    t = text.strip()
    try:
        if not t or t == "all":
            return Amount()
        if t.endswith("%"):
            v = float(t[:-1])
            if not 0 < v < 100:
                raise ValueError
            return Amount("share", v)
        if t.isdigit():
            return Amount("count", int(t))
        v = float(t)
        if not 0 < v <= 1:
            raise ValueError
        return Amount("fraction", v)
    except ValueError:
        raise LabkitError(f"bad amount {text!r}{where}: use a count (100), a fraction of the dataset (0.5) "
                          "or a share of the mix (10%)") from None


def parse_spec(spec: str | list[str] | tuple[str, ...]) -> list[tuple[str, Amount]]:
    """'tasks,negatives:100' or ['tasks', 'negatives:10%'] -> [(name, Amount), ...]."""
    items = spec.split(",") if isinstance(spec, str) else [x for s in spec for x in str(s).split(",")]
    out = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        name, _, amount = item.partition(":")
        out.append((name.strip(), parse_amount(amount, where=f" for dataset {name.strip()!r}")))
    if not out:
        raise LabkitError("no dataset named (e.g. --dataset tasks,negatives:100)")
    names = [n for n, _ in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise LabkitError(f"dataset named twice: {', '.join(sorted(dup))}")
    return out


def _take(items: list, n: int, rng: random.Random) -> list:
    """n items: a sample without replacement (file order kept), or whole copies plus a sample when n > len."""
    if not items or n <= 0:
        return []
    whole, rest = divmod(n, len(items))
    picked = sorted(rng.sample(range(len(items)), rest))
    return items * whole + [items[i] for i in picked]


def mix(groups: dict[str, list], amounts: dict[str, Amount] | None = None, seed: int = 42,
        total: int | None = None, shuffle: bool | None = None) -> tuple[list, list[dict]]:
    """Mix datasets deterministically. Returns (examples, summary rows: dataset, available, taken, share).

    Shares ("10%") are of the final mix: with fixed counts C and shares p_i, total = C / (1 - sum p_i).
    `shuffle` defaults to True when any amount other than "all" is given.
    """
    amounts = {k: v for k, v in (amounts or {}).items()}
    rng = random.Random(seed)
    fixed, shares = 0, 0.0
    want: dict[str, int] = {}
    for name, items in groups.items():
        a = amounts.get(name, Amount())
        if a.kind == "all":
            want[name] = len(items)
        elif a.kind == "count":
            want[name] = int(a.value)
        elif a.kind == "fraction":
            want[name] = round(len(items) * a.value)
        if a.kind != "share":
            fixed += want[name]
        else:
            shares += a.value
    if shares:
        if shares >= 100:
            raise LabkitError(f"dataset shares add up to {shares:g}% (must be below 100%)")
        if total is None:
            if not fixed:
                raise LabkitError("every dataset is given as a share (%); give one a count or 'all', or a total")
            total = round(fixed / (1 - shares / 100))
        for name in groups:
            a = amounts.get(name, Amount())
            if a.kind == "share":
                want[name] = round(total * a.value / 100)
    out, summary = [], []
    for name, items in groups.items():
        taken = _take(items, want[name], rng) if want[name] != len(items) else list(items)
        out += taken
        summary.append({"dataset": name, "available": len(items), "amount": str(amounts.get(name, Amount())),
                        "taken": len(taken)})
    n = len(out)
    for row in summary:
        row["share"] = round(row["taken"] / n, 4) if n else 0.0
    if shuffle if shuffle is not None else any(a.kind != "all" for a in amounts.values()):
        rng.shuffle(out)
    return out, summary


def summary_frame(summary: list[dict]):
    """The mix summary as a DataFrame (dataset, available, amount, taken, share)."""
    import pandas as pd

    return pd.DataFrame(summary, columns=["dataset", "available", "amount", "taken", "share"])

"""Torch intra-op threads = the CPUs this process can really use: affinity, cgroup quota, other processes' load.

torch starts one thread per core it sees. In a container limited by a cgroup quota, or next to another
CPU-bound process, some of those threads wait for a core at every parallel region and a training step takes
many times longer (measured: ~15x on 2 cores next to two other jobs). `configure_threads()` sets
`torch.set_num_threads` to the CPUs of our affinity mask, capped by the cgroup quota, minus what other
processes keep busy (sampled from /proc/stat for a fraction of a second), never below 1, and warns once when
that is fewer than the machine has. An explicit `LABKIT_THREADS` or `OMP_NUM_THREADS` is respected.
`ThreadPlanner.update()` re-samples without sleeping (training calls it every few seconds).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

ENV = "LABKIT_THREADS"
_warned = False


def affinity_cpus() -> list[int]:
    """The CPUs this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def cgroup_quota(root: str | Path = "/sys/fs/cgroup") -> float | None:
    """CPUs allowed by the cgroup CPU quota (v2 cpu.max or v1 cfs_quota/period), None when unlimited."""
    root = Path(root)
    try:
        text = (root / "cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
        if text:
            return None
    except (OSError, ValueError, IndexError):
        pass
    for folder in (root / "cpu", root / "cpu,cpuacct"):
        try:
            quota = int((folder / "cpu.cfs_quota_us").read_text())
            period = int((folder / "cpu.cfs_period_us").read_text())
            return quota / period if quota > 0 and period > 0 else None
        except (OSError, ValueError):
            continue
    return None


def available_cpus() -> int:
    """CPUs usable at all: the affinity mask, capped by the cgroup quota (rounded up)."""
    n = len(affinity_cpus())
    quota = cgroup_quota()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota - 1e-9)))
    return max(1, n)


def _cpu_jiffies(cpus: list[int]) -> tuple[int, int]:
    """(busy, total) jiffies summed over `cpus` from /proc/stat."""
    busy = total = 0
    wanted = {f"cpu{c}" for c in cpus}
    with open("/proc/stat", encoding="ascii") as fh:
        for line in fh:
            parts = line.split()
            if parts and parts[0] in wanted:
                values = [int(x) for x in parts[1:]]
                idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
                total += sum(values[:8])
                busy += sum(values[:8]) - idle
    return busy, total


def _own_jiffies() -> int:
    """utime + stime of this process, all threads (clock ticks)."""
    with open("/proc/self/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


class ThreadPlanner:
    """Samples how busy our CPUs are with other processes' work and plans the thread count."""

    def __init__(self):
        self.cpus = affinity_cpus()
        self.limit = available_cpus()
        self._last = self._sample()

    @staticmethod
    def _probe_ok() -> bool:
        return os.path.exists("/proc/stat") and os.path.exists("/proc/self/stat")

    def _sample(self):
        if not self._probe_ok():
            return None
        busy, total = _cpu_jiffies(self.cpus)
        return busy, total, _own_jiffies(), time.monotonic()

    def others_busy(self) -> float | None:
        """CPUs (of ours) kept busy by other processes since the last sample; None if not measurable yet."""
        now = self._sample()
        last, self._last = self._last, now
        if now is None or last is None or now[1] - last[1] <= 0:
            return None
        share = (now[0] - last[0]) / (now[1] - last[1])  # busy share of our CPUs, all processes
        busy_cpus = share * len(self.cpus)
        own = (now[2] - last[2]) / (now[1] - last[1]) * len(self.cpus)  # same units (ticks of our CPUs)
        return max(0.0, busy_cpus - own)

    def plan(self, others: float | None) -> int:
        """Threads to use given `others` busy CPUs: the quota-capped CPUs minus the busy ones, at least 1."""
        if others is None:
            return self.limit
        return max(1, min(self.limit, int(math.floor(len(self.cpus) - others + 0.5))))

    def update(self) -> int:
        """Re-plan from the load since the last call (no sleep)."""
        return self.plan(self.others_busy())


def explicit_threads() -> int | None:
    """Threads the user asked for: LABKIT_THREADS, else OMP_NUM_THREADS (None if neither is a positive int)."""
    for name in (ENV, "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def plan_threads(sample_seconds: float = 0.3) -> tuple[int, float | None, int]:
    """(threads, CPUs other processes keep busy or None, usable CPUs) for this machine now; torch not needed.
    An explicit LABKIT_THREADS / OMP_NUM_THREADS wins. The report runner calls it once per run and gives every
    kernel the same count, so a run's numbers do not depend on load changing in the middle of it."""
    explicit = explicit_threads()
    planner = ThreadPlanner()
    if explicit is not None:
        return explicit, None, planner.limit
    time.sleep(sample_seconds)
    others = planner.others_busy()
    return planner.plan(others), others, planner.limit


def configure_threads(sample_seconds: float = 0.3, planner: ThreadPlanner | None = None) -> int:
    """Set torch's intra-op threads for this machine now; returns the count. Warns once if oversubscribed."""
    import torch

    explicit = explicit_threads()
    if explicit is not None:
        torch.set_num_threads(explicit)
        return explicit
    planner = planner or ThreadPlanner()
    time.sleep(sample_seconds)
    others = planner.others_busy()
    n = planner.plan(others)
    apply_threads(n, planner, others)
    return n


def apply_threads(n: int, planner: ThreadPlanner, others: float | None) -> None:
    """torch.set_num_threads(n) when it changes; one warning per process when n is below the usable CPUs."""
    import torch

    global _warned
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    if n < planner.limit and not _warned:
        from labkit.log import warn

        _warned = True
        warn(f"the machine is busy: other processes keep ~{others:.1f} of {len(planner.cpus)} CPUs busy; training "
             f"uses {n} thread(s) instead of {planner.limit} (a fully loaded core would stall every step). "
             f"{ENV}=N sets the count.")

"""keep_freed_memory: freed multi-megabyte buffers are reused, not page-faulted back; give_back trims; opt-out."""

import resource
import subprocess
import sys
import textwrap

import pytest

from labkit.env import malloc

CHILD = textwrap.dedent("""
    import resource, sys, torch
    from labkit.env import malloc
    kept = malloc.keep_freed_memory() if sys.argv[1] == "keep" else False
    def churn():  # like a micro-batch: 40 activation buffers of 4-8 MB live at once (~240 MB), then all freed
        for _ in range(5):
            live = [torch.ones(n) for n in (1_000_000, 1_500_000, 2_000_000) * 13]
            del live
    churn()  # the first pass may fault: the heap grows once
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    churn()
    print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    if kept:
        malloc.give_back()
""")


def _faults(mode, env=None):
    import os

    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})}).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(malloc._glibc() is None, reason="glibc's mallopt: Linux with glibc only")
def test_freed_buffers_are_reused_without_page_faults():
    kept, faults_kept = _faults("keep")
    plain_kept, faults_plain = _faults("plain")
    assert kept and not plain_kept
    assert faults_plain > 50 * 1000  # glibc's default: the freed heap is trimmed and page-faulted anew
    assert faults_kept < faults_plain / 10


@pytest.mark.skipif(malloc._glibc() is None, reason="glibc's mallopt: Linux with glibc only")
def test_opt_out():
    kept, _ = _faults("keep", {malloc.ENV: "0"})
    assert not kept


def test_harmless_without_glibc(monkeypatch):
    monkeypatch.setattr(malloc, "_glibc", lambda: None)
    assert malloc.keep_freed_memory() is False
    malloc.give_back()  # nothing to do, no error
    assert resource.getrusage(resource.RUSAGE_SELF).ru_minflt >= 0

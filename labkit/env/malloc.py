"""glibc malloc during CPU training: keep freed activation buffers for reuse instead of page-faulting them back.

A training step on CPU allocates and frees the same multi-megabyte activation and gradient buffers every
micro-batch. glibc serves blocks above its mmap threshold with fresh mmap()s and returns a heap top above its
trim threshold to the kernel, so every micro-batch touches new pages: ~300,000 minor page faults in the tiny
benchmark run's 10 steps (measured with getrusage). `keep_freed_memory()` raises the mmap threshold to its
maximum (32 MiB on 64-bit) and the trim threshold to 2 GiB for the duration of a training run (mallopt; Linux
glibc only, elsewhere nothing happens); `give_back()` returns the trim threshold to glibc's default and hands
the freed heap back to the kernel (malloc_trim). `LABKIT_MALLOC=0` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

ENV = "LABKIT_MALLOC"
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
MMAP_MAX = 32 * 1024 * 1024  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_KEEP = 2**31 - 1  # mallopt takes an int: the largest it can hold (2 GiB)
TRIM_DEFAULT = 128 * 1024


def _glibc():
    """The C library when it is glibc (has mallopt and malloc_trim), else None."""
    if os.environ.get(ENV, "") == "0" or os.uname().sysname != "Linux":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it (musl does not)
        return libc
    except (OSError, AttributeError):
        return None


def keep_freed_memory() -> bool:
    """Set glibc's thresholds so freed large blocks stay in the heap for reuse; True when they were set."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_MAX)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_KEEP))


def give_back() -> None:
    """After training: glibc's default trim threshold again, and the free heap returned to the kernel."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_DEFAULT)
        libc.malloc_trim(0)

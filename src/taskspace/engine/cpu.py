"""CPU allocator tuning for the batched engine.

A batched step over M models allocates activations of a few MiB each. glibc's malloc
serves such blocks with fresh ``mmap`` pages (or trims the heap after they are freed), so
every step pays the kernel's page faults and zeroing again: on a 2-core machine that was
a quarter of a 64-MLP step. Keeping freed memory in the heap removes that cost. The
setting is process-wide, applied once, only on glibc, and can be switched off with
``TASKSPACE_MALLOC_TUNING=0``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_done = False


def tune_malloc() -> bool:
    """Keep freed blocks in the heap (trim threshold 1 GiB, mmap threshold 32 MiB).

    Returns True when the setting is in effect (glibc found and not switched off).
    """
    global _done
    if _done:
        return True
    if os.environ.get("TASKSPACE_MALLOC_TUNING", "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (macOS, musl): nothing to tune
    ok = mallopt(_M_TRIM_THRESHOLD, 1 << 30) and mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    ok = ok and mallopt(_M_TOP_PAD, 64 << 20)
    _done = bool(ok)
    return _done

"""CPU allocator tuning for the batched engine.

A batched step over M models allocates activations of a few MiB each. glibc's malloc
serves such blocks with fresh ``mmap`` pages (or trims the heap after they are freed), so
every step pays the kernel's page faults and zeroing again, a large share of a small-MLP
step on a CPU. Keeping freed memory in the heap removes that cost. The
setting is process-wide, tried once per process, only on glibc, and can be switched off
with ``TASKSPACE_MALLOC_TUNING=0``.
"""

from __future__ import annotations

import ctypes
import os

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_state: bool | None = None  # None: not tried yet


def tune_malloc() -> bool:
    """Keep freed blocks in the heap (trim threshold 1 GiB, mmap threshold 32 MiB).

    Returns True when the setting is in effect (glibc and not switched off). Cheap after
    the first call: the outcome is remembered.
    """
    global _state
    if _state is None:
        _state = _apply()
    return _state


def _apply() -> bool:
    if os.environ.get("TASKSPACE_MALLOC_TUNING", "1") == "0":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the running process's C library
    except (OSError, AttributeError):
        return False  # not glibc (macOS, musl): nothing to tune
    return bool(
        mallopt(_M_TRIM_THRESHOLD, 1 << 30)
        and mallopt(_M_MMAP_THRESHOLD, 32 << 20)
        and mallopt(_M_TOP_PAD, 64 << 20)
    )

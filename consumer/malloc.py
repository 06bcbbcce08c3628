"""Pin glibc's mmap threshold so that large transient buffers go back to the OS when freed.

Why (issue 15, measured with bench/memory.py and bench/memory_trace.py): the daemon's RSS kept
growing slowly (+2.4-2.8 MiB from 100k to 500k messages, +3.4 MiB from 100k to 1M) while the live
Python heap stayed flat under tracemalloc (traced bytes, allocated blocks and GC objects unchanged).
The growth is glibc's dynamic mmap threshold: the file sink joins each batch into one buffer (hundreds
of KB to MBs); the first ones are mmapped and unmapped on free, which makes glibc raise the threshold
(up to 32 MiB), so later batch buffers come from the heap arenas, where freed space fragments and
stays resident. Fixing the threshold (`mallopt(M_MMAP_THRESHOLD, 128 KiB)`, which also turns the
dynamic adjustment off) keeps those buffers mmapped: RSS from 100k to 500k messages then grew by
0.05 MiB. `MALLOC_ARENA_MAX=1` made it worse (+20 MiB): not the fix.

`pin_mmap_threshold()` is called once by `event-consumer run`. It does nothing on a C library without
`mallopt` (musl, macOS) or when the operator set `MALLOC_MMAP_THRESHOLD_` in the environment.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["MMAP_THRESHOLD", "pin_mmap_threshold"]

M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
MMAP_THRESHOLD = 128 * 1024  # glibc's initial default


def pin_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """True when the threshold was set."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))

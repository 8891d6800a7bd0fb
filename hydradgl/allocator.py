"""Process-wide memory allocator settings for CPU speed.

Every training step and inference batch allocates and frees the same large per-edge tensors (a few MB
each). With glibc's defaults, blocks that size come from fresh ``mmap`` pages that the kernel faults in
and zeroes on first touch, and freed heap memory is handed back to the system, so the next step pays
the same faults again, a noticeable share of a CPU training step (benchmarks/RESULTS.md). Raising the
thresholds keeps freed memory in the process for reuse (the usual advice for CPU training is a caching
allocator such as jemalloc or tcmalloc; this gets most of it without preloading a library).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # glibc's mallopt parameter ids
_SETTINGS = {
    _M_MMAP_THRESHOLD: 32 << 20,  # blocks below 32 MiB (glibc's upper limit) come from the reusable heap
    _M_TRIM_THRESHOLD: 1 << 30,  # give freed heap memory back to the system only beyond 1 GiB
    _M_TOP_PAD: 64 << 20,  # grow the heap in steps of 64 MiB
}
_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Apply the settings above once per process (glibc only; elsewhere nothing). True when applied."""
    global _applied
    if _applied is None:
        _applied = False
        name = ctypes.util.find_library("c")
        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc" and name:
            mallopt = ctypes.CDLL(name).mallopt
            _applied = all(mallopt(param, value) == 1 for param, value in _SETTINGS.items())
    return _applied

"""Keep large CPU tensors' memory in the process instead of handing it back to the OS on every free.

Why: glibc's malloc serves every block above its mmap threshold (128 KiB, raised dynamically to
at most 32 MiB) with a fresh ``mmap`` and returns it with ``munmap`` on free. A CPU tensor of a
few MiB -- every intermediate of the z-buffer and of a training step -- is therefore page-faulted
in, zero-filled by the kernel and unmapped again on every call. On the z-buffer of a batch of 64
faces at 128x128 this was measured at half of the wall time (``bench/render.py``; see
docs/results.md). Raising the mmap threshold and the trim threshold makes glibc recycle freed
blocks from its heap instead, as jemalloc or tcmalloc would; the cost is that the process keeps
its peak heap after a burst.

Applied once when ``facefactors`` is imported (glibc on Linux only; a no-op elsewhere). Set
``FACEFACTORS_MALLOC=0`` in the environment to leave the allocator alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap and are recycled
TRIM_THRESHOLD = (1 << 31) - 1  # free heap top kept up to 2 GiB before it is returned to the OS

_applied: bool | None = None


def tune_cpu_allocator() -> bool:
    """Set glibc's mmap and trim thresholds (once per process). Returns whether they are in effect."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("FACEFACTORS_MALLOC", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; an older glibc that refuses a threshold this high keeps its default
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) & bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _applied

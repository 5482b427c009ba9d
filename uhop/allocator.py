"""Keep freed CPU memory in the process instead of handing it back to the kernel after every tensor.

Why this exists: on Linux, glibc's ``malloc`` serves every request above ``M_MMAP_THRESHOLD`` (128 KiB at start,
growing adaptively up to 32 MiB) with a fresh ``mmap`` and returns it with ``munmap`` on ``free``; freed heap
space above ``M_TRIM_THRESHOLD`` is trimmed back to the kernel too.  The long-horizon forecasting models allocate
26-44 MB temporaries inside every α-entmax solve (the decoder's (B, heads, L, L) score tensors), so each solve
page-faults tens of thousands of fresh zero pages: ``benchmarks/bench_forecasting.py --allocator`` counted about
84 000 minor faults per 128-window evaluation pass of a trained ETTm1-336 network and 1.5 million for a fresh
WTH-720 one, and measured the throughput with and without :func:`retain_freed_memory`
(``results/forecasting/bench_allocator.json``; evaluation 1.2-1.6x faster, training steps 1.0-1.15x).

:func:`retain_freed_memory` turns ``mmap`` off for large blocks (``M_MMAP_MAX = 0``) and raises the trim threshold,
so freed blocks stay on the heap and the next solve reuses the already-mapped pages.  It changes where bytes live,
never which bytes are computed: results are bit-identical (``tests/test_allocator.py`` checks this).  The cost is
that the process keeps its peak heap resident.  It is a no-op (returning ``False``) off glibc.

The CUDA caching allocator already does the same on a GPU; this is only for CPU runs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["RETAINED_BYTES", "glibc_malloc", "retain_freed_memory", "retaining"]

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# glibc's documented defaults, restored by retain_freed_memory(False).
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_MAX = 65536
# Freed heap above this is still returned to the kernel: bounds the memory a long run keeps after a peak.
RETAINED_BYTES = 1 << 30

_state = {"retaining": False}


def _libc():
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def glibc_malloc():
    """The C library's ``mallopt`` when this process runs on glibc (Linux), else ``None``."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = _libc()
        libc.gnu_get_libc_version  # musl and other C libraries lack this symbol
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


def retain_freed_memory(enable: bool = True) -> bool:
    """Make glibc keep freed blocks for reuse (``enable=True``) or restore its defaults (``enable=False``).

    Returns whether the setting was applied; ``False`` off glibc, where nothing changes.
    """
    mallopt = glibc_malloc()
    if mallopt is None:
        return False
    mmap_max, trim = (0, RETAINED_BYTES) if enable else (_DEFAULT_MMAP_MAX, _DEFAULT_TRIM_THRESHOLD)
    # mallopt returns 1 on success and 0 on error.
    applied = bool(mallopt(_M_MMAP_MAX, mmap_max)) and bool(mallopt(_M_TRIM_THRESHOLD, trim))
    if applied:
        _state["retaining"] = enable
    return applied


def retaining() -> bool:
    """Whether :func:`retain_freed_memory` is in effect in this process (recorded in run manifests)."""
    return _state["retaining"]

"""Keep freed host memory in the process, so XLA:CPU does not page-fault its scratch every step.

XLA:CPU allocates one temporary buffer per executable run (2.4 GB for the benchmark DiT's train
step) with `posix_memalign`, from an Eigen worker thread. glibc serves a request that large with
a fresh `mmap` and returns it with `munmap` when it is freed, so every step touches 2.4 GB of
new pages: ~590,000 minor page faults and ~0.95 s of kernel time a step on this 2-core CPU
(`benchmarks/train_step.py` prints the step time). With one malloc arena, no mmap-backed chunks
and no trimming, the buffer is carved from the heap once and reused; the process keeps its peak
heap for its lifetime, as allocators like tcmalloc and jemalloc do.

`retain_freed_memory()` must run before a second thread first allocates (XLA's thread pool
starts with the first jax computation): glibc fixes the number of arenas then, and a later call
still returns True but leaves threads on their own arenas. The console script calls it before
importing a command, `python -m sora_jax.<command>` before running it, the benchmarks first
thing. It does nothing without glibc's mallopt or with SORA_JAX_SYSTEM_MALLOC=1.
"""

import ctypes
import ctypes.util
import os

# mallopt(3) parameters.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


def retain_freed_memory() -> bool:
    """Returns True when glibc took the settings (one arena, no mmap chunks, no trimming)."""
    if os.environ.get("SORA_JAX_SYSTEM_MALLOC") == "1":
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError):  # no mallopt (macOS): nothing to do
        return False
    # -1 is read as SIZE_MAX: the heap top is never given back.
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1))
    results = [mallopt(param, value) for param, value in settings]
    return all(result == 1 for result in results)

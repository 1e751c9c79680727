"""How Ray's worker processes use glibc's allocator: they give freed memory back while idle, and
reuse it while they work.

Workers outlive their tasks: the processes that ran preprocessing sit idle (or drive a fit)
while the model trains, and would keep what they had freed. Arrow's default pool (mimalloc)
holds freed pages, and glibc's dynamic mmap threshold moves large arrays onto a heap that
fragments and is never trimmed. So every Ray worker starts with Arrow on the system allocator
and every large allocation mapped afresh (WORKER_MEMORY_ENV): freed memory leaves the process.

Mapping afresh has a price where a process allocates and frees large arrays all the time: each
one comes back as fresh zeroed pages, faulted in one at a time. Pandas' feature code on one
block then takes nearly twice the CPU, and a boosting round far longer than in a plain process.
So the work itself runs with glibc's reuse: a training process for its whole life (it lives as
long as its fit, and what it keeps is given back when the fit ends), a preprocessing task for
the length of the task, after which the process trims its heap and maps afresh again.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, TypeVar

# The image sets the same (Dockerfile; tests/k8s/test_k8s_dockerfile.py keeps them equal); an
# in-process Ray gets them from runtime/cluster.py before it starts.
WORKER_MEMORY_ENV = {"ARROW_DEFAULT_MEMORY_POOL": "system", "MALLOC_MMAP_THRESHOLD_": "65536"}

# glibc's mallopt parameters (malloc.h), the highest mmap threshold glibc's own dynamic
# adjustment reaches on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX; it then trims at twice that), and
# its default trim threshold (what a fixed MALLOC_MMAP_THRESHOLD_ leaves in place).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_MAX = 32 * 2**20
DEFAULT_TRIM_THRESHOLD = 128 * 2**10

F = TypeVar("F", bound=Callable)


@functools.lru_cache(maxsize=None)
def _libc() -> Optional[ctypes.CDLL]:
    # Once per process: find_library runs `ldconfig -p`, a process of its own.
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def training_allocator() -> bool:
    """In a process that trains (a Train worker, a Tune trial): keep large buffers on the heap for
    reuse, as glibc does by default, for the rest of the process's life. False where the C
    library is not glibc (nothing to undo there)."""
    libc = _libc()
    return bool(libc and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
                and libc.mallopt(M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD_MAX))


@contextmanager
def reusing_memory() -> Iterator[None]:
    """Reuse freed memory inside the block; afterwards give it back (trim the heap) and, in a
    process started to map large allocations afresh, map them afresh again."""
    if not training_allocator():
        yield
        return
    libc = _libc()
    try:
        yield
    finally:
        mapped = os.environ.get("MALLOC_MMAP_THRESHOLD_", "")
        if mapped.isdigit():
            libc.mallopt(M_MMAP_THRESHOLD, int(mapped))
            libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)


def data_task(fn: F) -> F:
    """`fn`, for Ray Data to run on blocks, run with `reusing_memory`."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        with reusing_memory():
            return fn(*args, **kwargs)
    return run  # type: ignore[return-value]

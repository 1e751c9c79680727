"""Ray's workers start with large allocations always mapped (WORKER_MEMORY_ENV), so that idle
workers give freed memory back; the work itself reuses its memory (training/runtime/memory.py):
a training process for good, a preprocessing task for its length, after which it gives back.

Counted in page faults and resident memory, not time: with the workers' setting every freed
1 MB buffer is unmapped and the next one faults in 256 fresh pages; reused, the same memory is
faulted in once, and what a task freed stays resident until it is given back."""

import subprocess
import sys

from training.runtime.memory import WORKER_MEMORY_ENV

LOOP = """
import resource, sys
import numpy as np
from training.runtime import memory

def faults():
    np.ones(2**17)  # warm-up: numpy's own first allocations
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(200):
        np.ones(2**17).sum()  # 1 MB, written, freed
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

def resident_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

if sys.argv[1] == "training":
    assert memory.training_allocator()
    print(faults())
elif sys.argv[1] == "worker":
    print(faults())
else:  # a preprocessing task, then the idle worker
    @memory.data_task
    def task(n):
        # 1 MB buffers, each followed by a small array that outlives the task: freed, the large
        # ones leave holes in the heap rather than a top that glibc trims anyway.
        pairs = [(np.ones(2**17), np.ones(2**10)) for _ in range(n)]
        return faults(), [small for _, small in pairs]

    during, kept = task(400)
    print(during, resident_mb())
"""


def _run(mode: str):
    import os

    env = {**os.environ, **WORKER_MEMORY_ENV}
    out = subprocess.run([sys.executable, "-c", LOOP, mode], env=env, capture_output=True, text=True, check=True)
    return [float(x) for x in out.stdout.split()]


def test_a_training_process_reuses_its_buffers_where_ray_workers_map_each_one():
    [mapped], [reused] = _run("worker"), _run("training")
    assert mapped > 200 * 200, mapped      # about 256 pages per 1 MB buffer, every time
    assert reused < 2000, reused           # the same heap memory, faulted in once


def test_a_preprocessing_task_reuses_its_buffers_and_gives_them_back_when_it_ends():
    during, resident_mb = _run("task")
    assert during < 2000, during           # inside the task: reused
    # The task's 400 MB, freed between arrays that are still alive, are no longer resident.
    assert resident_mb < 200, resident_mb

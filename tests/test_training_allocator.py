"""Training processes keep large buffers for reuse although Ray's workers start with large
allocations always mapped (WORKER_MEMORY_ENV, training/runtime/workers.py's training_allocator).

Counted in page faults, not time: with the workers' setting every freed 1 MB buffer is unmapped
and the next one faults in 256 fresh pages; a training process reuses the same memory."""

import subprocess
import sys

from training.runtime.cluster import WORKER_MEMORY_ENV

LOOP = """
import resource, sys
import numpy as np
from training.runtime.workers import training_allocator
if sys.argv[1] == "training":
    assert training_allocator()
np.ones(2**17)  # warm-up: numpy's own first allocations
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    np.ones(2**17).sum()  # 1 MB, written, freed
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    import os

    env = {**os.environ, **WORKER_MEMORY_ENV}
    out = subprocess.run([sys.executable, "-c", LOOP, mode], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


def test_a_training_process_reuses_its_buffers_where_ray_workers_map_each_one():
    mapped, reused = _faults("worker"), _faults("training")
    assert mapped > 200 * 200, mapped      # about 256 pages per 1 MB buffer, every time
    assert reused < 2000, reused           # the same heap memory, faulted in once

"""Stop Ray on the way out only where this call started it.

The CLI entry points run in their own process, where Ray is theirs to stop. Called in-process
(a notebook, a test session, a program that imports them) they may find Ray already running:
that Ray belongs to the caller and outlives the call."""

from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager
from typing import Iterator, List


def ray_running() -> bool:
    if "ray" not in sys.modules:  # no import just to ask: `--help` and config errors stay fast
        return False
    import ray

    return ray.is_initialized()


@contextmanager
def stops_ray_it_started() -> Iterator[None]:
    was_running = ray_running()
    try:
        yield
    finally:
        if ray_running() and not was_running:
            shutdown()


def shutdown() -> None:
    """`ray.shutdown()`, without the second it spends on the autoscaler's monitor of a Ray this
    process started. Ray 2.60 stops its processes one kind at a time, the GCS before the
    monitor; the monitor answers SIGTERM by reporting its end to that GCS, which is gone, and
    Ray waits a second for it before it kills it. Killed first, it holds up nothing: it keeps
    no state a stopped cluster needs. Every CLI run on its own Ray exits that much sooner."""
    import ray

    for process in _monitor_processes():
        process.kill()
        try:
            process.wait(timeout=5)  # reaped, so that Ray's own stop finds it gone
        except subprocess.TimeoutExpired:
            pass  # Ray's stop waits for it, as it would have
    ray.shutdown()


def _monitor_processes() -> List[subprocess.Popen]:
    """The monitor process of the Ray this process started: none for a Ray it joined (whose
    processes are not its own), nor where a later Ray keeps its processes otherwise (its stop
    is then as slow as Ray's, not wrong)."""
    try:
        from ray._private import worker  # Ray's record of the processes ray.init started

        return [info.process for info in worker._global_node.all_processes.get("monitor", [])]
    except (ImportError, AttributeError):
        return []

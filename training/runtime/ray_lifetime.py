"""Stop Ray on the way out only where this call started it.

The CLI entry points run in their own process, where Ray is theirs to stop. Called in-process
(a notebook, a test session, a program that imports them) they may find Ray already running:
that Ray belongs to the caller and outlives the call."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator


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
            import ray

            ray.shutdown()

"""Ctrl-C around writes that belong together.

A Ctrl-C lands wherever the main thread happens to be. Where a few registry writes make one
decision (an alias moved and the tags that say why), an interrupt between two of them would
leave half of it; `held_interrupt` lets the writes finish and then raises the interrupt.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator, List


class HeldInterrupt(KeyboardInterrupt):
    """A Ctrl-C that came while `held_interrupt`'s block ran, raised once the block had finished."""


@contextmanager
def held_interrupt() -> Iterator[None]:
    """Run the block with a first Ctrl-C (SIGINT) held back; raise it as KeyboardInterrupt once
    the block has finished (as `HeldInterrupt`). A second Ctrl-C is not held: a write that hangs can still be stopped.
    Off the main thread, where no signal handler can be set, the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: List[int] = []

    def hold(signum, frame):
        if received:
            raise KeyboardInterrupt
        received.append(signum)

    before = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)
    if received:
        raise HeldInterrupt


class Terminated(KeyboardInterrupt):
    """SIGTERM (a pod stopped, a CI job cancelled), raised where a Ctrl-C would be."""


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM during the block raises `Terminated`, so a command says what it leaves behind as
    it does for Ctrl-C; off the main thread the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Terminated

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)

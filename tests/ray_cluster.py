"""A real multi-process Ray cluster on this machine, for tests (the code lives in
tests/local_cluster.py, shared with the benchmarks); here a timeout fails the test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.local_cluster import LocalCluster, RayNodes, free_port, http_ok, node_ports, wait_until

__all__ = ["LocalCluster", "RayNodes", "free_port", "http_ok", "node_ports", "wait_for"]


def wait_for(predicate, timeout: float, what: str, logs: Path):
    try:
        wait_until(predicate, timeout, what, logs)
    except TimeoutError as exc:
        pytest.fail(str(exc))

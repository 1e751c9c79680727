"""A real multi-process Ray cluster on this machine, for tests: `ray start` head and worker nodes
as separate process groups, stopped by process group and temp dir (never `ray stop`, which would
kill every Ray instance on the machine, the test session's own included)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_ports() -> list[str]:
    return [f"--{name}={free_port()}" for name in (
        "node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
        "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port")]


class LocalCluster:
    """Processes this test started; stopped by process group and by temp dir, never `ray stop`."""

    def __init__(self, root: Path):
        self.root = root
        self.procs: list[subprocess.Popen] = []
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rtk8s-", dir="/tmp"))  # short: unix socket paths

    def spawn(self, argv: list[str], env: dict, log: str) -> subprocess.Popen:
        out = open(self.root / f"{log}.log", "w")
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=env["RT_WORKDIR"],
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        time.sleep(3)
        # Anything left that belongs to this cluster (its temp dir is in every Ray process's argv).
        marker = str(self.temp_dir).encode()
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if marker in cmdline.read_bytes():
                    os.kill(int(cmdline.parent.name), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def wait_for(predicate, timeout: float, what: str, logs: Path):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(1)
    tails = "\n".join(f"== {p.name}\n{p.read_text()[-2000:]}" for p in sorted(logs.glob("*.log")))
    pytest.fail(f"timed out waiting for {what}\n{tails}")


def http_ok(url: str, host: str | None = None) -> int:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0

"""A real multi-process Ray cluster on this machine: `ray start` head and worker nodes as separate
process groups, stopped by process group and temp dir (never `ray stop`, which would kill every
Ray instance on the machine, including other people's). Used by tests and benchmarks."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Dict, List, Optional

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    """A port free on every address: Ray binds most of its servers on all of them, and a port held
    on any one address (another cluster's node, a connection's source port) keeps a raylet from
    starting ("The current node timed out during startup")."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))  # nosec B104: a probe for a free port, closed at once
        return s.getsockname()[1]


def node_ports() -> List[str]:
    return [f"--{name}={free_port()}" for name in (
        "node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
        "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port")]


def http_ok(url: str, host: Optional[str] = None) -> int:
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:  # nosec B310: a local http:// URL we built
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, logs: Path) -> None:
    """Poll `predicate` each second; on timeout raise TimeoutError with the tails of the node logs."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(1)
    tails = "\n".join(f"== {p.name}\n{p.read_text()[-2000:]}" for p in sorted(logs.glob("*.log")))
    raise TimeoutError(f"timed out waiting for {what}\n{tails}")


class LocalCluster:
    """Processes this object started; stopped by process group and by temp dir, never `ray stop`."""

    def __init__(self, root: Path):
        self.root = root
        self.procs: List[subprocess.Popen] = []
        # /tmp, not $TMPDIR: Ray's unix socket paths must stay short. mkdtemp makes a fresh 0700 dir.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rtk8s-", dir="/tmp"))  # nosec B108
        self.node_dirs = 0

    def node_temp_dir(self) -> Path:
        """The `--temp-dir` of a node that joins: a directory of its own, as each pod has its own
        /tmp/ray. Its log monitor then tails only its own workers' files (a driver prints each
        worker line once, not once per node), and a log read from another node really comes
        from there. Inside `temp_dir`, where `stop()` finds every process; a short name, since
        Ray's unix socket paths below it must stay short."""
        self.node_dirs += 1
        return self.temp_dir / f"n{self.node_dirs}"

    def spawn(self, argv: List[str], env: Dict[str, str], log: str) -> subprocess.Popen:
        out = open(self.root / f"{log}.log", "w")
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=env["RT_WORKDIR"],
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def start_node(self, argv: Callable[[], List[str]], env: Dict[str, str], name: str,
                   attempts: int = 3) -> subprocess.Popen:
        """Start a `ray start --block` node and wait until it runs. `ray start` gives its raylet a
        fixed 30 s to register with the GCS and exits when an overloaded machine misses that: try
        again, as a kubelet restarts a pod. `argv` is called for each attempt (a head takes fresh
        ports); a failed attempt's processes (its GCS, its raylet) are killed, its log kept as
        <name>.failed-<n>.log."""
        log = self.root / f"{name}.log"
        for attempt in range(1, attempts + 1):
            proc = self.spawn(argv(), env, name)
            wait_until(lambda: "Ray runtime started" in log.read_text() or proc.poll() is not None, 180, name,
                       self.root)
            if proc.poll() is None:
                return proc
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if attempt < attempts:
                os.rename(log, self.root / f"{name}.failed-{attempt}.log")
        raise RuntimeError(f"node {name} did not start after {attempts} attempts:\n{log.read_text()[-2000:]}")

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


# How soon the head's GCS declares a node dead that stopped answering: a health check every
# second, three failed in a row (Ray's defaults: every 3 s, five in a row). A killed node then
# counts as lost within about 3 s rather than 15, and the node-loss drills' runs restart sooner.
HEAD_HEALTH_CHECKS = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}


class RayNodes(LocalCluster):
    """A head and any number of worker nodes, token auth on (as in the chart); `address` to join."""

    def __init__(self, root: Path, head_cpus: int = 0, head_resources: Optional[Dict[str, float]] = None,
                 object_store_bytes: int = 200_000_000, pythonpath: Optional[str] = None):
        super().__init__(root)
        self.object_store = object_store_bytes
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16), RT_WORKDIR=str(root),
                        PYTHONUNBUFFERED="1")
        if pythonpath:
            self.env["PYTHONPATH"] = pythonpath
        self.gcs = self.dashboard = 0
        self.nodes: Dict[str, subprocess.Popen] = {}

        def head_argv() -> List[str]:
            self.gcs, self.dashboard = free_port(), free_port()
            return [RAY, "start", "--head", "--block", f"--port={self.gcs}", "--node-ip-address=127.0.0.1",
                    f"--num-cpus={head_cpus}", *_resources(head_resources), f"--dashboard-port={self.dashboard}",
                    "--dashboard-host=127.0.0.1", f"--ray-client-server-port={free_port()}",
                    f"--temp-dir={self.temp_dir}", f"--object-store-memory={object_store_bytes}", *node_ports()]

        try:
            self.start_node(head_argv, {**self.env, **HEAD_HEALTH_CHECKS}, "head")
            wait_until(lambda: http_ok(f"http://127.0.0.1:{self.dashboard}/api/gcs_healthz") == 200, 180,
                       "the Ray head", root)
        except BaseException:
            self.stop()
            raise

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs}"

    def add_node(self, name: str, cpus: int = 1, resources: Optional[Dict[str, float]] = None,
                 attempts: int = 3) -> None:
        """Start a worker node and wait until it has joined (`start_node`: retried)."""
        self.nodes[name] = self.start_node(
            lambda: [RAY, "start", "--block", f"--address={self.address}", "--node-ip-address=127.0.0.1",
                     f"--num-cpus={cpus}", *_resources(resources), f"--object-store-memory={self.object_store}",
                     f"--temp-dir={self.node_temp_dir()}", *node_ports()], self.env, name, attempts)

    def kill_node(self, name: str) -> None:
        os.killpg(self.nodes.pop(name).pid, signal.SIGKILL)


def _resources(resources: Optional[Dict[str, float]]) -> List[str]:
    import json

    return [f"--resources={json.dumps(resources)}"] if resources else []

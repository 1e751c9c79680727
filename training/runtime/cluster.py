"""Start or join Ray, and refuse requests the cluster can never satisfy (instead of waiting forever)."""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

import ray

from training.runtime.memory import WORKER_MEMORY_ENV
from training.settings import ClusterConfig, ClusterMode
from training.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class Capacity:
    cpus: float
    gpus: float
    nodes: List[Dict[str, float]]

    def describe(self, gpus: bool = True) -> str:
        return f"{len(self.nodes)} node(s), {self.cpus:g} CPUs" + (f", {self.gpus:g} GPUs" if gpus else "")


def connect(cfg: ClusterConfig) -> Capacity:
    # Read by Ray Train's controller when a trainer is built; the driver propagates it. Set
    # every time: the option is the one place for it, also for a notebook's second run.
    os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = str(cfg.train_poll_interval_s)
    # Ray Train re-routes worker print() through its logger, which prints each line twice here.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    # The driver colours each worker line's "(pid=...)" prefix; in a file, a CI log or
    # `kubectl logs` those colours are escape codes around every line.
    if not sys.stdout.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    num_cpus, dashboard = None, ""
    if cfg.mode is ClusterMode.local:
        num_cpus = cfg.num_cpus or os.cpu_count() or 1
        local_defaults(num_cpus)
    if not ray.is_initialized():
        if cfg.mode is ClusterMode.local:
            _quiet_token_auth_notice()
            dashboard = start_local(num_cpus=num_cpus, num_gpus=cfg.num_gpus,
                                    object_store_memory=cfg.object_store_memory,
                                    # The dashboard also serves the state API that Ray Train's cleanup polls.
                                    include_dashboard=cfg.dashboard, log_to_driver=True,
                                    logging_level=logging.WARNING, configure_logging=True)
        else:
            try:
                ray.init(address=cfg.address, log_to_driver=True, logging_level=logging.WARNING)
            except ConnectionError as exc:
                raise UserError(f"cannot join the Ray cluster at cluster.address={cfg.address}: "
                                f"{str(exc).splitlines()[0]}") from None
    _quiet_ray_data()
    cap = capacity()
    where = cfg.address
    if cfg.mode is ClusterMode.local:
        where = f"in-process, dashboard http://{dashboard}" if dashboard else "in-process"
    log.info("ray: %s (%s)", cap.describe(), where)
    return cap


# How long a head gets to accept a TCP connection. Ray itself retries an unreachable GCS for
# minutes without a word; this says within seconds that nothing listens there.
PROBE_TIMEOUT_S = 10.0


def probe_head(address: str) -> None:
    """A one-line error when nothing accepts a TCP connection at `address` (host:port or
    ray://host:port), or when what accepts it is not a Ray head's GCS (Ray would retry it for
    minutes). `auto` (inside a RayJob: the local head) is left to Ray."""
    import socket

    target = address.split("://", 1)[-1]
    if address == "auto" or ":" not in target:
        return
    host, port = target.rsplit(":", 1)
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S):
            pass
    except ValueError:
        raise UserError(f"cluster.address={address}: the port must be a number (host:port or "
                        "ray://host:port)") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UserError(f"nothing answers at cluster.address={address} (a TCP connection to {host}:{port} "
                        f"failed: {reason}); is the Ray head running there, and is that its GCS port (6379) "
                        "or, with ray://, its client port (10001)?") from None
    if "://" not in address:  # the Ray Client server (ray://) is left to the client's own errors
        _probe_gcs(address, host, port)


# Codes a gRPC server gives a request it will not serve: still a gRPC server, so left to Ray.
_GRPC_SPOKEN = ("UNIMPLEMENTED", "UNAUTHENTICATED", "PERMISSION_DENIED")


def _probe_gcs(address: str, host: str, port: str) -> None:
    """The GCS serves gRPC's standard health check (with or without token auth); an HTTP server,
    a database or a silent port does not."""
    import grpc

    with grpc.insecure_channel(f"{host}:{port}") as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=bytes,
                                    response_deserializer=bytes)
        try:
            check(b"", timeout=PROBE_TIMEOUT_S)  # an empty HealthCheckRequest: the whole server
        except grpc.RpcError as exc:
            if exc.code().name in _GRPC_SPOKEN:
                return
            detail = (exc.details() or "").split(": ")[-1][:120]
            raise UserError(f"cluster.address={address} answers, but not as a Ray head's GCS (gRPC health "
                            f"check: {exc.code().name}{', ' + detail if detail else ''}); is that the head's "
                            "GCS port (6379), not its dashboard (8265) or another service?") from None


def local_defaults(num_cpus: int) -> None:
    """Environment for an in-process Ray on one machine, set before it starts: the workers it
    starts inherit the driver's environment. A value the user set wins."""
    for key, value in WORKER_MEMORY_ENV.items():
        os.environ.setdefault(key, value)
    # One machine has no node to be preempted; the watcher is one more process per fit.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    # Ray Data 2.60 starts 32 FooterReader actors, a process each, for every parquet read
    # (a batch of footers is 10 files, and each actor reads with 128 I/O threads). On one
    # machine that is process start-up, not I/O: one actor per 8 CPUs reads as fast.
    os.environ.setdefault("RAY_DATA_PARQUET_FOOTER_NUM_ACTORS", str(max(1, num_cpus // 8)))


# Where a process with no address given finds the state API (Ray's own name for it).
API_SERVER_ENV = "RAY_API_SERVER_ADDRESS"


def start_local(**init_kwargs) -> str:
    """`ray.init` of an in-process cluster whose processes know which cluster is theirs; its
    dashboard's URL ("" without one).

    Ray Train's placement group cleaner, a helper actor that removes a run's placement group
    when the run's controller dies (as when Tune ends a distributed trial that ASHA stopped),
    asks the state API about the controller without an address. With another Ray on the machine
    (a second run, a test session beside this one) it finds several, its thread dies, and the
    placement group keeps its CPUs until the job ends. So the dashboard, which serves the state
    API, gets its port here, and Ray's processes inherit its URL: the raylet inherits the
    environment as `ray.init` starts it, and every worker inherits the raylet's. The driver's
    own environment is restored, so a process it starts later (another run's Ray) does not
    inherit the URL. A RAY_API_SERVER_ADDRESS the user set wins.
    """
    if not init_kwargs.get("include_dashboard") or API_SERVER_ENV in os.environ:
        return ray.init(**init_kwargs).dashboard_url or ""
    port = _free_port()
    os.environ[API_SERVER_ENV] = f"http://127.0.0.1:{port}"
    try:
        return ray.init(dashboard_host="127.0.0.1", dashboard_port=port, **init_kwargs).dashboard_url or ""
    finally:
        del os.environ[API_SERVER_ENV]


def _free_port() -> int:
    """A port the kernel finds free now. Not Ray's fixed default (8265): two Rays starting side
    by side would both find that one free, and Ray does not retry a port it was given."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _quiet_token_auth_notice() -> None:
    """Ray 2.60 turns token authentication on for a new local cluster and says so with a
    warning on every start. The run keeps it on (the default); the notice is for whoever
    decides whether others may reach a cluster, and this one lives and dies with the run.
    A RAY_AUTH_MODE the user set is theirs: Ray then prints nothing anyway."""
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)


def _quiet_ray_data() -> None:
    """Ray Data's per-dataset progress bars and logs drown the run's own progress lines.

    Datasets carry the driver's DataContext into the workers that read them, so this also
    silences the shards' reads inside Ray Train workers."""
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # no line per dataset execution
    # Ray Data 2.60 then warns "Progress bars disabled" at the first execution; this module
    # logs nothing else.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def capacity() -> Capacity:
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    return Capacity(cpus=sum(n.get("CPU", 0) for n in nodes), gpus=sum(n.get("GPU", 0) for n in nodes),
                    nodes=[{"CPU": n.get("CPU", 0), "GPU": n.get("GPU", 0)} for n in nodes])


def less_one_cpu(cap: Capacity) -> Capacity:
    """The capacity left for workers when one CPU stays free for Ray Data's streaming tasks
    (taken from the node with the most CPUs): a stream whose read tasks find no CPU waits forever."""
    nodes = [dict(n) for n in cap.nodes]
    if nodes:
        biggest = max(nodes, key=lambda n: n["CPU"])
        biggest["CPU"] = max(0.0, biggest["CPU"] - 1)
    return Capacity(cpus=max(0.0, cap.cpus - 1), gpus=cap.gpus, nodes=nodes)


STREAMING_NOTE = "data.materialize=false streams the data while training and keeps one CPU free for it"


def workers_that_fit(cap: Capacity, cpus: float, gpus: float) -> int:
    """How many workers of this shape the cluster's nodes can hold at once (bin packing per node)."""
    total = 0
    for n in cap.nodes:
        fits = [n["CPU"] // cpus if cpus else 10**9, n["GPU"] // gpus if gpus else 10**9]
        total += int(min(fits))
    return total


def planned_capacity(cfg: ClusterConfig) -> Optional[Capacity]:
    """The capacity of the in-process Ray this run is about to start, known before it starts: one
    node of cluster.num_cpus (all cores when null) and cluster.num_gpus. None where Ray decides: a
    cluster to join, a Ray this process already runs (or RAY_ADDRESS names), GPU workers on GPUs
    left to Ray's detection."""
    if cfg.mode is not ClusterMode.local or ray.is_initialized() or os.environ.get("RAY_ADDRESS"):
        return None
    if cfg.gpus_per_worker and cfg.num_gpus is None:
        return None
    cpus, gpus = float(cfg.num_cpus or os.cpu_count() or 1), float(cfg.num_gpus or 0)
    return Capacity(cpus=cpus, gpus=gpus, nodes=[{"CPU": cpus, "GPU": gpus}])


def require_before_start(cfg: ClusterConfig, what: str = "training", streaming: bool = False) -> None:
    """`require` against the in-process Ray's planned size, before Ray starts: an impossible
    request fails in seconds, without a cluster. Left to `require` where the size is Ray's to find."""
    cap = planned_capacity(cfg)
    if cap is not None:
        _fit_or_fail(cfg, cap, what, streaming, final=True)


def require(cfg: ClusterConfig, what: str = "training", streaming: bool = False) -> int:
    """Fail fast unless the cluster can hold one model's workers; return how many models fit at once.
    `streaming`: the data is read while the workers train, so one CPU is kept for it."""
    deadline = time.monotonic() + cfg.resource_wait_s
    while True:
        fit = _fit_or_fail(cfg, capacity(), what, streaming, final=time.monotonic() >= deadline)
        if fit:
            return fit
        time.sleep(5)


def _fit_or_fail(cfg: ClusterConfig, cap: Capacity, what: str, streaming: bool, final: bool) -> int:
    """How many models of cfg's shape `cap` holds at once; 0 when it holds none yet, a UserError
    when it holds none and `final`."""
    need = cfg.num_workers
    fit = workers_that_fit(less_one_cpu(cap) if streaming else cap, cfg.cpus_per_worker, cfg.gpus_per_worker)
    if fit >= need:
        return max(1, fit // need)
    if not final:
        return 0
    shape = f"{cfg.cpus_per_worker} CPU" + (f" + {cfg.gpus_per_worker} GPU" if cfg.gpus_per_worker else "")
    missing = "GPU" if cfg.gpus_per_worker and cap.gpus < need * cfg.gpus_per_worker else "CPU"
    raise UserError(
        f"{what} needs {need} workers x ({shape}) but the cluster ({cap.describe(gpus=bool(cfg.gpus_per_worker))}) "
        f"can hold only {fit}{' (' + STREAMING_NOTE + ')' if streaming else ''}; not enough {missing}: lower "
        "cluster.num_workers / cluster.cpus_per_worker / cluster.gpus_per_worker"
        + (" or set data.materialize=true" if streaming else ""))

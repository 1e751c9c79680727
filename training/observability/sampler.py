"""Samples the cluster's size and utilisation every few seconds, from Ray's own APIs.

Size (CPUs, GPUs, memory, object store: total and free) comes from `ray.cluster_resources()`
and `ray.available_resources()`; utilisation per node from the Prometheus endpoint every
Ray node serves (`MetricsExportPort` in `ray.nodes()`; served by the dashboard agent, so it
is there with the dashboard off too); failed tasks and restarted actors of this job from the
state API (dashboard on) or, without it, from the same metrics. A sampling error never
fails the run: it is logged once and the next sample tries again.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import ray

from training.observability.node_metrics import NodeUsage, failed_task_count_from_metrics, parse_node_metrics, scrape

log = logging.getLogger(__name__)
GB = 1024 ** 3


@dataclass
class Sample:
    t: float                      # epoch seconds
    nodes: int
    cpus: float
    cpus_free: float
    gpus: float
    gpus_free: float
    memory_gb: float              # Ray's `memory` + `object_store_memory` resources
    memory_free_gb: float
    object_store_gb: float
    object_store_free_gb: float
    failed_tasks: Optional[int] = None        # this run's (the Sampler makes it so)
    restarted_actors: Optional[int] = None
    # Ray's metrics' count of failed tasks: every job's on the cluster since it started.
    failed_tasks_cluster: Optional[int] = None
    per_node: Dict[str, NodeUsage] = field(default_factory=dict)   # node IP -> usage

    def cluster_cpu_percent(self) -> Optional[float]:
        """The share of all the nodes' CPUs that was busy: each node weighs by its CPU count, so an
        idle 2-CPU head does not halve a busy 16-CPU worker (a plain mean where counts are unknown)."""
        nodes = [u for u in self.per_node.values() if u.cpu_percent is not None]
        if not nodes:
            return None
        if all(u.cpu_count for u in nodes):
            return sum(u.cpu_percent * u.cpu_count for u in nodes) / sum(u.cpu_count for u in nodes)
        return sum(u.cpu_percent for u in nodes) / len(nodes)

    def cpus_busy(self) -> Optional[float]:
        """The nodes' busy CPUs (machine CPUs, not Ray's: a head that offers Ray none still has some)."""
        nodes = [u for u in self.per_node.values() if u.cpu_percent is not None and u.cpu_count]
        return sum(u.cpu_percent / 100 * u.cpu_count for u in nodes) if nodes else None

    def metrics(self) -> Dict[str, float]:
        """Flat name -> value, the MLflow metrics and CSV columns of this sample."""
        out = {"cluster_nodes": self.nodes, "cluster_cpus": self.cpus, "cluster_cpus_used": self.cpus - self.cpus_free,
               "cluster_gpus": self.gpus, "cluster_gpus_used": self.gpus - self.gpus_free,
               "cluster_memory_gb": self.memory_gb, "cluster_object_store_gb": self.object_store_gb,
               "cluster_object_store_used_gb": self.object_store_gb - self.object_store_free_gb}
        cpu = self.cluster_cpu_percent()
        if cpu is not None:
            out["cluster_cpu_percent"] = cpu
        if self.failed_tasks is not None:
            out["failed_tasks"] = self.failed_tasks
        if self.restarted_actors is not None:
            out["restarted_actors"] = self.restarted_actors
        for ip, u in self.per_node.items():
            for key in ("cpu_percent", "memory_used_gb", "gpu_percent", "gpu_memory_used_gb"):
                value = getattr(u, key)
                if value is not None:
                    out[f"node/{ip}/{key}"] = value
        return out


def state_api_responds(timeout: float) -> bool:
    """Whether Ray's state API (served by the dashboard) answers within about `timeout` seconds.
    Its client retries a refused connection until ~0.8 x its timeout, so a call to a dashboard
    that is gone costs that long every time."""
    try:
        from ray.util.state import list_nodes

        list_nodes(address=state_address(), limit=1, timeout=timeout)
        return True
    except Exception:  # noqa: BLE001
        return False


def state_address() -> str:
    """The connected cluster's GCS address: with none given, the state API looks for a Ray on
    this machine and refuses when it finds several (other clusters, other users)."""
    return ray.get_runtime_context().gcs_address


# An actor's constructor "task" turns FAILED when the actor is killed on purpose (Ray Data's
# parquet FooterReader actors, Ray Train's helpers): 31 of them in a small successful run here.
# Failures that matter are those of tasks and actor method calls.
REAL_TASK_FAILURES = [("type", "!=", "ACTOR_CREATION_TASK")]


def killed_on_purpose(task) -> bool:
    """A call still pending on an actor that its owner ended with ray.kill (Ray Train does that
    to its SynchronizationActor at the end of a successful fit): not a failure of the run."""
    return "killed by `ray.kill`" in (getattr(task, "error_message", None) or "")


def created_since(task, since_s: float) -> bool:
    """The task was created at or after `since_s` (epoch seconds): one of this run's. Ray reports
    task events seconds late, so a failure of an earlier run of the same job (a notebook's, a
    test session's) can first be listed while this one runs; its creation time tells them apart.
    A task without one counts, rather than a failure going unseen."""
    created_ms = getattr(task, "creation_time_ms", None)
    return created_ms is None or created_ms >= since_s * 1000


def _state_api(since_s: float) -> Optional["StateApi"]:
    """The state API for this job, or None when its first listing fails (a dashboard that
    restarts, a listing that times out on a cluster of many actors): observing never fails a run."""
    try:
        return StateApi(ray.get_runtime_context().get_job_id(), since_s)
    except Exception as exc:  # noqa: BLE001
        log.warning("observability: the state API did not answer (%s); failures are counted from the metrics",
                    (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200])
        return None


class StateApi:
    """Failed tasks and restarted actors of this job through Ray's state API (needs the dashboard).
    The job may have run earlier runs (a notebook's, a test session's): a run's own are the tasks
    created since `since_s` and the actors not listed when it began."""

    def __init__(self, job_id: str, since_s: float):
        self.job_id, self.since_s = job_id, since_s
        self.actors_before = {a.actor_id for a in self._actors()}

    def _failed_tasks(self) -> list:
        from ray.util.state import list_tasks

        tasks = list_tasks(filters=[("state", "=", "FAILED"), ("job_id", "=", self.job_id), *REAL_TASK_FAILURES],
                           limit=10_000, detail=True,
                           raise_on_missing_output=False, timeout=10, address=state_address())
        return [t for t in tasks if created_since(t, self.since_s)]

    def _actors(self) -> list:
        from ray.util.state import list_actors

        return list_actors(filters=[("job_id", "=", self.job_id)], limit=10_000, detail=True,
                           raise_on_missing_output=False, timeout=10, address=state_address())

    def failed_tasks(self) -> int:
        return sum(1 for t in self._failed_tasks() if not killed_on_purpose(t))

    def restarted_actors(self) -> int:
        return sum(int(getattr(a, "num_restarts", 0) or 0) for a in self._actors())

    def failures(self, wait_s: float) -> Dict[str, object]:
        """The run's failed tasks, restarted and dead actors, for the run's summary; up to
        `wait_s` seconds for a failed task to be listed (Ray lists them late)."""
        deadline = time.monotonic() + wait_s
        tasks = self._failed_tasks()
        while not any(not killed_on_purpose(t) for t in tasks) and time.monotonic() < deadline:
            time.sleep(0.25)
            tasks = self._failed_tasks()
        actors = [a for a in self._actors() if a.actor_id not in self.actors_before]
        return {
            "failed_tasks": [{"name": t.name, "error_type": t.error_type, "node_id": t.node_id,
                              "error": (t.error_message or "").strip().splitlines()[-1:]}
                             for t in tasks if not killed_on_purpose(t)],
            "calls_on_actors_killed_on_purpose": sum(1 for t in tasks if killed_on_purpose(t)),
            "restarted_actors": [{"class_name": a.class_name, "state": a.state, "num_restarts": a.num_restarts}
                                 for a in actors if getattr(a, "num_restarts", 0)],
            "dead_actors": sum(1 for a in actors if a.state == "DEAD"),
        }


def take_sample(state: Optional[StateApi]) -> Sample:
    """One sample; a part that cannot be read (metrics endpoint, state API) is left empty."""
    total, free = ray.cluster_resources(), ray.available_resources()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    s = Sample(t=time.time(), nodes=len(nodes), cpus=total.get("CPU", 0.0), cpus_free=free.get("CPU", 0.0),
               gpus=total.get("GPU", 0.0), gpus_free=free.get("GPU", 0.0),
               memory_gb=(total.get("memory", 0.0) + total.get("object_store_memory", 0.0)) / GB,
               memory_free_gb=(free.get("memory", 0.0) + free.get("object_store_memory", 0.0)) / GB,
               object_store_gb=total.get("object_store_memory", 0.0) / GB,
               object_store_free_gb=free.get("object_store_memory", 0.0) / GB)
    failed_from_metrics: Optional[int] = None
    for n in nodes:
        port = n.get("MetricsExportPort")
        if not port:
            continue
        try:
            text = scrape(n["NodeManagerAddress"], port)
        except OSError as exc:
            log.debug("metrics of node %s: %s", n["NodeManagerAddress"], exc)
            continue
        s.per_node.update(parse_node_metrics(text))
        failed = failed_task_count_from_metrics(text)
        if failed is not None:
            failed_from_metrics = (failed_from_metrics or 0) + failed
    s.failed_tasks_cluster = failed_from_metrics
    if state is not None:
        s.failed_tasks = state.failed_tasks()
        s.restarted_actors = state.restarted_actors()
    return s


STATE_API_PROBE_S = 2.0


class Sampler:
    """A daemon thread that appends a Sample every `interval_s` seconds until `stop()`."""

    def __init__(self, interval_s: float, use_state_api: bool,
                 take: Optional[Callable[[], Sample]] = None):
        self.interval_s = interval_s
        self.started_at = time.time()
        # None once the state API is gone: samples then count failures from the metrics.
        self.state: Optional[StateApi] = _state_api(self.started_at) if use_state_api else None
        self._take = take or (lambda: take_sample(self.state))
        self.samples: List[Sample] = []
        self.on_sample: Optional[Callable[[int, Sample], None]] = None  # (its index, the sample), on this thread
        self.errors = 0
        # What the run's own failure counts start from (see _since_start).
        self._restarts_at_start: Optional[int] = None
        self._failed_by_state_api = 0                    # its last answer
        self._cluster_failed_mark: Optional[int] = None  # the metrics' count then
        self.stopped_at: Optional[float] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="observability-sampler", daemon=True)

    def start(self) -> "Sampler":
        self.started_at = time.time()
        self._thread.start()
        return self

    def stop(self) -> List[Sample]:
        """Stop the thread and take one last sample, so the run's end is always covered."""
        if self.stopped_at is None:
            self._stop.set()
            # A sample in flight takes well under a second; one caught in the state API's retries
            # (its dashboard gone, see below) is left to end on its own and dropped.
            self._thread.join(timeout=STATE_API_PROBE_S)
            if self.state is not None and not state_api_responds(timeout=STATE_API_PROBE_S):
                # Ctrl-C in a terminal also reaches the dashboard of an in-process Ray (same
                # process group): waiting out the API's retries would delay the exit at every call.
                log.warning("observability: Ray's state API no longer answers; the last sample and the "
                            "run's logs use this node's metrics and files")
                self.state = None
            self._sample_once(last=True)
            self.stopped_at = time.time()
        return self.samples

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample_once()
            self._stop.wait(self.interval_s)

    def _sample_once(self, last: bool = False) -> None:
        try:
            sample = self._take()
        except Exception as exc:  # noqa: BLE001  observing must never fail the run
            if self._stop.is_set() and not last:
                return   # the thread's sample after stop(): the last sample speaks for the end
            self.errors += 1
            if self.errors == 1:
                log.warning("observability: a cluster sample failed (%s: %s); training goes on, later samples "
                            "retry", type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            return
        if self._stop.is_set() and not last:
            return
        self.samples.append(self._since_start(sample))
        on_sample = self.on_sample  # read once: the recording may end (and set it to None) meanwhile
        if on_sample is not None and not last:
            on_sample(len(self.samples) - 1, sample)

    def _since_start(self, s: Sample) -> Sample:
        """Only this run's failures. The state API's count of failed tasks already is (those
        created since the start); its actor restarts are the job's, and Ray's metrics count the
        failed tasks of every job since the cluster started (one cluster or driver runs several
        workloads: a notebook, a test session), so those count from this run's first look on.
        Once the state API is gone, the metrics' increase since its last answer is added to it."""
        if s.restarted_actors is not None:
            if self._restarts_at_start is None:
                self._restarts_at_start = s.restarted_actors
            s.restarted_actors = max(0, s.restarted_actors - self._restarts_at_start)
        if s.failed_tasks is not None:
            self._failed_by_state_api, self._cluster_failed_mark = s.failed_tasks, s.failed_tasks_cluster
        elif s.failed_tasks_cluster is not None:
            if self._cluster_failed_mark is None:
                self._cluster_failed_mark = s.failed_tasks_cluster
            s.failed_tasks = self._failed_by_state_api + max(0, s.failed_tasks_cluster - self._cluster_failed_mark)
        return s

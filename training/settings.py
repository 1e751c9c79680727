"""The config sections every workload shares: cluster, tracking, promotion, observability.

Plain dataclasses (Hydra registers them as schemas in training/config.py) with the checks their
types cannot express; each check names the key and what would be accepted.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, List, Optional, Sequence

from training.errors import UserError


def changed_fields(config: Any, names: Sequence[str] = ()) -> List[str]:
    """The fields of a config dataclass (or just `names`) whose value is not the schema's default:
    the options a user set, where a mode that never reads them should say so."""
    out = []
    for f in dataclasses.fields(config):
        if names and f.name not in names:
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if getattr(config, f.name) != default:
            out.append(f.name)
    return out


def check_model_name(name: str) -> None:
    """MLflow's rules for a registered model's name, before training rather than when the trained
    model is registered."""
    if not name.strip():
        raise UserError("workload.registered_model_name is empty")
    if "/" in name or ":" in name or name.strip() in (".", ".."):
        raise UserError(f"workload.registered_model_name '{name}' is not a model name MLflow takes (no '/' or ':')")


# numpy's legacy seeding and Optuna's samplers take a seed in [0, 2**31); another value fails in
# a worker or a trial, after the cluster and the MLflow run have started.
SEED_LIMIT = 2**31


def check_seed(key: str, seed: int) -> None:
    if not 0 <= seed < SEED_LIMIT:
        raise UserError(f"{key} must be >= 0 and < {SEED_LIMIT} (2**31), got {seed}")


class ClusterMode(str, Enum):
    local = "local"
    address = "address"


class TrackingBackend(str, Enum):
    local = "local"
    server = "server"


@dataclass
class ClusterConfig:
    mode: ClusterMode = ClusterMode.local
    address: Optional[str] = None
    # Local mode only: CPUs/GPUs of the in-process Ray (null = this machine's).
    num_cpus: Optional[int] = None
    num_gpus: Optional[int] = None
    # Local mode: bytes of Ray's object store (ray.init(object_store_memory=...)); null = Ray's
    # default, 30% of the machine's memory. On Kubernetes the chart sets it per pod.
    object_store_memory: Optional[int] = None
    dashboard: bool = True
    # Ray Train workers per model (or per distributed Tune trial) and resources per worker:
    # the only place they are set.
    num_workers: int = 2
    cpus_per_worker: int = 1
    gpus_per_worker: int = 0
    storage_path: str = "ray_results"
    max_failures: int = 1
    # How long to wait for the cluster to grow (autoscaling) before an impossible
    # request fails; 0 = fail at once.
    resource_wait_s: float = 0.0
    # Local mode, one worker per model: a member also uses the CPUs that finished members left
    # idle. Models do not change with the thread count.
    borrow_idle_cpus: bool = True
    # Ray Train's controller polls workers this often, and every report waits for a poll
    # (Ray's default is 2 s).
    train_poll_interval_s: float = 0.1

    def check(self) -> None:
        for key, low in (("num_workers", 1), ("cpus_per_worker", 1), ("gpus_per_worker", 0), ("max_failures", 0)):
            if getattr(self, key) < low:
                raise UserError(f"cluster.{key} must be >= {low}, got {getattr(self, key)}")
        # The in-process Ray's size: 0 would read as null (all of the machine's) where it is used.
        for key, low in (("num_cpus", 1), ("num_gpus", 0)):
            if getattr(self, key) is not None and getattr(self, key) < low:
                raise UserError(f"cluster.{key} must be >= {low} or null (this machine's), got {getattr(self, key)}")
        if self.train_poll_interval_s <= 0:
            raise UserError(f"cluster.train_poll_interval_s must be > 0, got {self.train_poll_interval_s}")
        if self.object_store_memory is not None and self.object_store_memory < 75 * 2**20:
            raise UserError(f"cluster.object_store_memory must be >= 78643200 bytes (75 MiB, Ray's minimum) or "
                            f"null (30% of the machine's memory), got {self.object_store_memory}")
        if self.mode is ClusterMode.address and not self.address:
            raise UserError("cluster.address is required with cluster=address (use 'auto' inside a RayJob)")
        if self.mode is ClusterMode.local and self.address:
            raise UserError(f"cluster.address={self.address} does not apply to cluster=local (an in-process Ray); "
                            "add cluster=address to join that cluster")
        # Sizes of the in-process Ray: a joined cluster's are set where it runs (the chart's pods).
        local_only = changed_fields(self, ("num_cpus", "num_gpus", "object_store_memory", "dashboard"))
        if self.mode is ClusterMode.address and local_only:
            raise UserError(f"cluster.{local_only[0]} applies to cluster=local only: a joined cluster's size and "
                            "dashboard are set where it runs (on Kubernetes, the chart's values)")
        if self.mode is ClusterMode.address and changed_fields(self, ("borrow_idle_cpus",)):
            raise UserError("cluster.borrow_idle_cpus applies to cluster=local only: a joined cluster's free CPUs "
                            "are not one worker's to take")


@dataclass
class TrackingConfig:
    backend: TrackingBackend = TrackingBackend.local
    # Local: the SQLite store and artifacts live under this directory of the working dir.
    local_dir: str = "mlruns"
    # Server: explicit URI, else MLFLOW_TRACKING_URI.
    uri: Optional[str] = None
    experiment: str = "ray-training"

    def check(self) -> None:
        import os

        if self.backend is TrackingBackend.server and not (self.uri or os.environ.get("MLFLOW_TRACKING_URI")):
            raise UserError("tracking=server needs tracking.uri=... or MLFLOW_TRACKING_URI")
        if self.backend is TrackingBackend.server and changed_fields(self, ("local_dir",)):
            raise UserError(f"tracking.local_dir={self.local_dir} does not apply to tracking=server (the server "
                            "keeps runs and artifacts); drop it, or use tracking=local")
        if self.backend is TrackingBackend.local and self.uri:
            raise UserError(f"tracking.uri={self.uri} does not apply to tracking=local (runs go to the SQLite "
                            "store under tracking.local_dir); add tracking=server to log there")


# metric -> True when higher is better
PROMOTE_METRICS = {"rmse": False, "mae": False, "r2": True}


@dataclass
class PromoteConfig:
    """The champion/challenger gate (training/ops/promote.py), run after a registered model when enabled."""
    enabled: bool = False
    # The registry alias that serving reads (models:/<name>@champion).
    alias: str = "champion"
    # rmse or mae (lower is better) or r2 (higher is better), on the same held-out rows for both.
    metric: str = "rmse"
    # How much better the challenger must be: a fraction of the champion's score
    # (0.01 = 1% lower RMSE) with relative=true, in metric units otherwise.
    margin: float = 0.0
    relative: bool = True
    # Held-out rows: null = the validation split of `data` (the rows this run held out);
    # else a parquet/csv file or directory with the same columns, used whole.
    data_path: Optional[str] = None

    def check(self) -> None:
        if self.metric not in PROMOTE_METRICS:
            raise UserError(f"promote.metric must be one of {', '.join(PROMOTE_METRICS)}, got '{self.metric}'")
        if self.margin < 0:
            raise UserError(f"promote.margin must be >= 0, got {self.margin}")
        if not self.alias or not self.alias.replace("_", "").replace("-", "").isalnum():
            raise UserError(f"promote.alias must be letters, digits, '-' or '_', got '{self.alias}'")
        # MLflow keeps these for itself (models:/<name>@latest, @v3 name versions): its registry
        # refuses to set them, which the gate would meet only after training.
        if self.alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", self.alias):
            raise UserError(f"promote.alias '{self.alias}' is reserved by MLflow ('latest' and v<number> name "
                            "versions); pick another name")

    def check_runs_if_set(self) -> None:
        """For a training run (not the standalone gate, which reads these without `enabled`): the
        gate's options do nothing unless it runs."""
        changed = [name for name in changed_fields(self) if name != "enabled"]
        if not self.enabled and changed:
            raise UserError(f"promote.{changed[0]} is set but promote.enabled=false: the gate does not run after "
                            "this training run; add promote.enabled=true")


@dataclass
class PriceConfig:
    """What one unit of cluster capacity costs for an hour, to estimate a run's cost.

    Defaults: on-demand list prices of a general-purpose cloud VM split per vCPU and per GB
    (about $0.032 per vCPU-hour and $0.0043 per GB-hour) and a data-centre GPU ($2.50 per
    GPU-hour). Set your own: reserved, spot and negotiated prices differ a lot."""
    currency: str = "USD"
    cpu_hour: float = 0.032
    memory_gb_hour: float = 0.0043
    gpu_hour: float = 2.50
    # A flat price per node-hour on top (a managed cluster fee, a node's disk); 0 = none.
    node_hour: float = 0.0


@dataclass
class LogsConfig:
    """Ray driver and worker logs uploaded to the MLflow run before it ends (success or failure)."""
    enabled: bool = True
    # Each file keeps its last max_file_mb (the end of a log is where the error is).
    max_file_mb: float = 2.0
    # All files together; newest files first until the budget is spent.
    max_total_mb: float = 20.0


@dataclass
class ObservabilityConfig:
    """Cluster utilisation sampled during a run, resource hours and cost, logs kept in MLflow."""
    enabled: bool = True
    # Seconds between samples of the cluster's resources and utilisation.
    sample_interval_s: float = 5.0
    # Also write the samples to this CSV file (local path); null = MLflow only.
    csv_path: Optional[str] = None
    prices: PriceConfig = field(default_factory=PriceConfig)
    logs: LogsConfig = field(default_factory=LogsConfig)

    def check(self) -> None:
        from pathlib import Path

        if self.sample_interval_s <= 0:
            raise UserError(f"observability.sample_interval_s must be > 0, got {self.sample_interval_s}")
        # Written at the run's end: a path that cannot be a file is found now, not after training.
        if self.csv_path is not None and (not self.csv_path.strip() or Path(self.csv_path).is_dir()):
            raise UserError(f"observability.csv_path={self.csv_path!r} must be a file's path, not a folder")
        # Written with the local filesystem: s3://b/x.csv would land in a folder named ./s3:/b.
        if self.csv_path is not None and "://" in self.csv_path:
            raise UserError(f"observability.csv_path={self.csv_path!r} must be a local file's path, not a URI (the "
                            "samples are in the MLflow run too, observability/samples.csv)")
        for key in ("cpu_hour", "memory_gb_hour", "gpu_hour", "node_hour"):
            price = getattr(self.prices, key)
            if price < 0:
                raise UserError(f"observability.prices.{key} must be >= 0 (a price per hour), got {price}")
        for key in ("max_file_mb", "max_total_mb"):
            if getattr(self.logs, key) <= 0:
                raise UserError(f"observability.logs.{key} must be > 0, got {getattr(self.logs, key)}")
        changed = [name for name in changed_fields(self) if name != "enabled"]
        if not self.enabled and changed:
            raise UserError(f"observability.{changed[0]} is set but observability.enabled=false turns sampling, "
                            "cost and log upload off; drop one of them")

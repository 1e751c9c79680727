"""The shape of every Ray Train run, built in one place from the `cluster` section.

GBDT slots, Tune's distributed trials and BERT all train on `cluster.num_workers` workers of
`cluster.cpus_per_worker` CPUs and `cluster.gpus_per_worker` GPUs (on Kubernetes the chart sets
these from the worker group), and store checkpoints under `cluster.storage_path`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional
from urllib.parse import urlsplit, urlunsplit

from training.settings import ClusterConfig

def storage_path(cluster: ClusterConfig) -> str:
    """Where runs keep checkpoints: an object-store URI as given, a local path made absolute (the
    driver's working directory, not a worker's)."""
    return cluster.storage_path if "://" in cluster.storage_path else str(Path(cluster.storage_path).resolve())


def train_settings() -> Dict[str, str]:
    """The RAY_TRAIN_* settings of this process (cluster.connect sets some; a user may set more).
    Ray Train reads them in the process that builds a trainer; on a cluster this driver joined,
    a task's or an actor's environment comes from its raylet, so they are handed over."""
    return {k: v for k, v in os.environ.items() if k.startswith("RAY_TRAIN_")}


def storage_join(storage: str, *parts: str) -> str:
    """A place under `storage`, a path or a URI: on a URI the parts go before its options
    (`s3://bucket/runs?endpoint_override=...` + `x` is `s3://bucket/runs/x?endpoint_override=...`)."""
    if "://" not in storage:
        return str(Path(storage, *parts))
    u = urlsplit(storage)
    return urlunsplit((u.scheme, u.netloc, "/".join([u.path.rstrip("/"), *parts]), u.query, u.fragment))


def checkpoint_uri(checkpoint: Any, storage: str) -> str:
    """Where a Train checkpoint under `storage` is, as a path or URI that `Checkpoint(...)` opens
    anywhere: Ray's `Checkpoint.path` has the storage URI's scheme and options stripped
    (`bucket/runs/x/checkpoint_...`), which alone opens nothing."""
    import pyarrow.fs as pafs

    if "://" not in storage:
        return checkpoint.path
    root = pafs.FileSystem.from_uri(storage)[1].rstrip("/")
    if not checkpoint.path.startswith(root):
        raise ValueError(f"checkpoint {checkpoint.path} is not under the storage path {storage}")
    u = urlsplit(storage)
    return urlunsplit((u.scheme, u.netloc, u.path.rstrip("/") + checkpoint.path[len(root):], u.query, u.fragment))


def scaling_config(cluster: ClusterConfig, num_workers: Optional[int] = None):
    """`num_workers` (default cluster.num_workers) workers of the cluster's worker shape."""
    from ray.train import ScalingConfig

    resources = {"CPU": cluster.cpus_per_worker}
    if cluster.gpus_per_worker:
        resources["GPU"] = cluster.gpus_per_worker
    return ScalingConfig(num_workers=num_workers or cluster.num_workers, use_gpu=cluster.gpus_per_worker > 0,
                         resources_per_worker=resources)


def run_config(cluster: ClusterConfig, name: str, storage: Optional[str] = None, keep: int = 2,
               callbacks: Optional[List[Any]] = None, retries: Optional[int] = None):
    """Checkpoints, retries and logging of one Train run. The same name and storage path resume
    from the latest checkpoint there (a RayJob retry, a rerun with the same run_name).
    `retries`: restarts of the run's workers, cluster.max_failures unless given."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig

    retries = cluster.max_failures if retries is None else retries
    return RunConfig(name=name, storage_path=storage or storage_path(cluster),
                     # Worker errors and failed restarts (e.g. workers that cannot be placed after
                     # a node is lost) both get that many retries, then fail.
                     failure_config=FailureConfig(max_failures=retries, controller_failure_limit=retries),
                     checkpoint_config=CheckpointConfig(num_to_keep=keep), callbacks=callbacks or [],
                     # The workers print progress; Ray Train's per-report INFO lines are noise.
                     logging_config=LoggingConfig(log_level="WARNING"))


def quiet_worker_logs() -> None:
    """In a Train worker: our workers print progress lines; Ray Data's per-shard reads and Ray
    Train's per-report INFO lines (logged under the module's file name, not `ray.train`) would
    bury them."""
    import logging

    import ray.data

    logging.getLogger("ray.data").setLevel(logging.ERROR)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        from ray.train.v2._internal.execution import context
        logging.getLogger(context.__file__).setLevel(logging.WARNING)
    except ImportError:  # internal module moved: only the log volume changes
        pass

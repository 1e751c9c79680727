"""The two slow set-up steps every workload takes, overlapped.

MLflow's store (importing SQLAlchemy, checking the database schema: ~2 s of CPU) is set up
in a thread while Ray starts (~5 s, mostly waiting on the processes it launches). MLflow keeps
the tracking URI and the experiment in module globals, so a thread may set them.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from training import cluster, tracking
from training.config import ClusterConfig, TrackingConfig


def tracking_and_cluster(tracking_cfg: TrackingConfig, cluster_cfg: ClusterConfig) -> str:
    """Start or join Ray and point MLflow at its store; the tracking URI. A tracking error
    (e.g. the server is down) surfaces once Ray is up; the caller's shutdown stops it."""
    with ThreadPoolExecutor(1, thread_name_prefix="tracking-setup") as pool:
        uri = pool.submit(tracking.setup, tracking_cfg)
        cluster.connect(cluster_cfg)
        return uri.result()

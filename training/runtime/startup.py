"""The slow set-up steps every workload takes, overlapped.

Ray's start (mostly waiting on the processes it launches) runs in the main thread; a second
thread meanwhile imports MLflow, Ray Data, pandas and SciPy (the workload modules import them
only after this), sets up MLflow's store (SQLAlchemy, the database schema), then runs the
workload's `warm` (imports it needs only at its end, such as the model logging's). MLflow keeps
the tracking URI and the experiment in module globals, so a thread may set them.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from training.errors import UserError
from training.runtime import cluster
from training.settings import ClusterConfig, ClusterMode, TrackingConfig


def tracking_and_cluster(tracking_cfg: TrackingConfig, cluster_cfg: ClusterConfig,
                         warm: Callable[[], None] = lambda: None) -> str:
    """Start or join Ray and point MLflow at its store; the tracking URI. A tracking error
    (e.g. the server is down) surfaces once Ray is up; the caller's shutdown stops it. `warm`
    runs in the second thread after MLflow's set-up: Ray's start leaves a core idle meanwhile."""
    if cluster_cfg.mode is ClusterMode.address:
        cluster.probe_head(cluster_cfg.address)  # before anything else starts: seconds, not minutes
    with ThreadPoolExecutor(1, thread_name_prefix="tracking-setup") as pool:
        uri = pool.submit(_tracking, tracking_cfg, warm)
        try:
            cluster.connect(cluster_cfg)
        except BaseException:
            # Both failed (a loaded machine can time out Ray's start): the tracking error is the
            # user's to fix and says so in one line, so it is the one reported.
            if isinstance(uri.exception(), UserError):
                raise uri.exception() from None
            raise
        return uri.result()


def _tracking(cfg: TrackingConfig, warm: Callable[[], None]) -> str:
    # Imported here to overlap Ray's start; the workloads import them after it.
    import scipy.optimize  # noqa: F401  (the ensemble's weights)

    from training import observability  # noqa: F401
    from training.data import prepare  # noqa: F401  (Ray Data, pandas)
    from training.runtime import tracking

    uri = tracking.setup(cfg)
    warm()
    return uri

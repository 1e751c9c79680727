"""MLflow: where runs go (local SQLite store or a server), parent/child runs, plots, registration."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import mlflow
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from training.settings import TrackingBackend, TrackingConfig
from training.errors import UserError

log = logging.getLogger(__name__)


def tracking_uri(cfg: TrackingConfig) -> str:
    if cfg.backend is TrackingBackend.server:
        return cfg.uri or os.environ["MLFLOW_TRACKING_URI"]
    db = Path(cfg.local_dir).resolve() / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


def setup(cfg: TrackingConfig) -> str:
    """Point MLflow at the store and make sure the experiment exists; fails fast if the server is down."""
    uri = tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    # Local: artifacts next to the database, so one directory holds the whole store.
    artifacts = (Path(cfg.local_dir).resolve() / "artifacts").as_uri() if cfg.backend is TrackingBackend.local else None
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")  # fail in seconds, not minutes
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    # MLflow copies the logged model back to check that it loads and serves its input example;
    # a progress bar per copy would add seven lines to the run's output for a local copy.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        client = MlflowClient()
        exp = client.get_experiment_by_name(cfg.experiment)
        if exp is None:
            client.create_experiment(cfg.experiment, artifact_location=artifacts)
    except Exception as exc:  # network errors, bad URIs, auth: all mean "cannot track"
        raise UserError(f"cannot use MLflow tracking at {uri}: {str(exc).splitlines()[0][:200]}") from None
    mlflow.set_experiment(cfg.experiment)
    return uri


@contextmanager
def parent_run(run_name: str, tags: Dict[str, str]) -> Iterator[mlflow.ActiveRun]:
    """The run of one invocation; marked FAILED (and never registered) when the body raises."""
    with mlflow.start_run(run_name=run_name, tags=tags) as run:
        yield run


def log_params(params: Dict[str, object]) -> None:
    # MLflow caps a param value at 6000 characters and a batch at 100 params.
    items = [(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        mlflow.log_params(dict(items[i: i + 100]))


def log_child(run_name: str, params: Dict[str, object], curve_name: str, curve: List[float],
              metrics: Dict[str, float], tags: Optional[Dict[str, str]] = None) -> str:
    """A nested run for one model: its params, its validation curve (one point per round), final metrics."""
    with mlflow.start_run(run_name=run_name, nested=True, tags=tags or {}) as child:
        log_params(params)
        client = MlflowClient()
        points = [Metric(curve_name, float(v), 0, step) for step, v in enumerate(curve, start=1)]
        points += [Metric(k, float(v), 0, 0) for k, v in metrics.items()]
        for i in range(0, len(points), 1000):
            client.log_batch(child.info.run_id, metrics=points[i: i + 1000])
        return child.info.run_id


def register(model_uri: str, name: str) -> str:
    version = mlflow.register_model(model_uri, name)
    return version.version

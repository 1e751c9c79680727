"""MLflow: where runs go (local SQLite store or a server), parent/child runs, plots, registration."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from training.errors import UserError
from training.runtime.live import HTTP_LIMITS
from training.settings import TrackingBackend, TrackingConfig

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
    for key, value in HTTP_LIMITS.items():  # fail in seconds, not minutes
        os.environ.setdefault(key, value)
    # MLflow copies the logged model back to check that it loads and serves its input example;
    # a progress bar per copy would add seven lines to the run's output for a local copy.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow logs at INFO by default: its store migrations and input-example checks, dated lines
    # among the run's own. Its warnings stay; MLFLOW_LOGGING_LEVEL, when set, is the user's.
    if not os.environ.get("MLFLOW_LOGGING_LEVEL"):
        logging.getLogger("mlflow").setLevel(logging.WARNING)
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


def start_child(run_name: str, params: Dict[str, object], tags: Optional[Dict[str, str]] = None,
                experiment_id: Optional[str] = None, parent_run_id: Optional[str] = None) -> str:
    """A nested run for one model (under the active run unless a parent is given), left RUNNING:
    its workers log to it live (training/runtime/live.py) and `finish_child` ends it."""
    if parent_run_id is None:
        parent = mlflow.active_run()
        experiment_id, parent_run_id = parent.info.experiment_id, parent.info.run_id
    client = MlflowClient()
    child = client.create_run(experiment_id, run_name=run_name,
                              tags={MLFLOW_PARENT_RUN_ID: parent_run_id, **(tags or {})})
    items = [(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(child.info.run_id, params=[Param(k, v) for k, v in items[i: i + 100]])
    return child.info.run_id


def finish_child(run_id: str, curve_name: str, curve: List[float], metrics: Dict[str, float],
                 tags: Optional[Dict[str, str]] = None, status: str = "FINISHED") -> None:
    """End a child run: the curve's points not logged live (a member resumed by a new driver,
    live logging off), its final metrics and tags."""
    client = MlflowClient()
    log_missing(run_id, {curve_name: list(enumerate(curve, start=1))})
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                     tags=[RunTag(k, v) for k, v in (tags or {}).items()])
    client.set_terminated(run_id, status)


def log_missing(run_id: str, series: Dict[str, List[Tuple]]) -> None:
    """Each series' points the run does not hold yet (what was not logged live,
    training/runtime/live.py): (step, value), stamped now, or (step, value, epoch milliseconds)."""
    client = MlflowClient()
    now = int(time.time() * 1000)
    points = []
    for name, steps in series.items():
        logged = {m.step for m in client.get_metric_history(run_id, name)}
        points += [Metric(name, float(p[1]), p[2] if len(p) > 2 else now, p[0]) for p in steps if p[0] not in logged]
    for i in range(0, len(points), 1000):
        client.log_batch(run_id, metrics=points[i: i + 1000])


@contextmanager
def failing_children(run_ids: Iterable[str]) -> Iterator[None]:
    """Child runs still RUNNING when the body raises are marked FAILED, like their parent."""
    try:
        yield
    except BaseException:
        client = MlflowClient()
        for run_id in run_ids:
            with contextlib.suppress(Exception):  # the original error is the one to show
                if client.get_run(run_id).info.status == "RUNNING":
                    client.set_terminated(run_id, "FAILED")
        raise


def pinned(packages: Iterable[str]) -> List[str]:
    """A logged model's pip requirements: each package at its installed release. A local build's
    label is left out (`torch==2.13.0`, not `2.13.0+cpu`): no public index serves a local label,
    and `==2.13.0` accepts any build of that release (PEP 440), whichever the serving host's index
    or wheel folder has (a CUDA build on a GPU node)."""
    from importlib.metadata import version

    from packaging.version import Version

    return [f"{p}=={Version(version(p)).public}" for p in packages]


def register(model_uri: str, name: str) -> str:
    """A new version of `name` from `model_uri`. MLflow creates the registered model first and its
    version second: when the version fails, a registered model this call created is deleted
    again, so the registry shows no empty model a user would take for a registered one."""
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        client.get_registered_model(name)
        existed = True
    except MlflowException:
        existed = False
    try:
        return mlflow.register_model(model_uri, name).version
    except BaseException:
        if not existed:
            with contextlib.suppress(Exception):  # the original error is the one to show
                if not client.search_model_versions(f"name = '{name}'"):
                    client.delete_registered_model(name)
        raise

"""The skeleton every workload's run follows, so that each workload only fills in its own steps.

    run = Run(cfg)                          # the run's name, its clock
    run.start(check)                        # input checks (before any cluster or MLflow run), Ray + MLflow
    with run.observed():                    # utilisation sampling from the cluster's start
        with run.parent() as parent:        # the MLflow parent run: params, config, Ray logs, cost
            with run.phase("train_s"): ...  # timed phases, logged as metrics at the end
    run.finish(summary, model_uri, rows)    # the summary, then the champion/challenger gate
"""

from __future__ import annotations

import functools
import logging
import secrets
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterator, List, Optional

from training import config
from training.errors import UserError
from training.runtime import startup

log = logging.getLogger(__name__)


def make_run_name(workload: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{workload}-{stamp}-{secrets.token_hex(2)}"


class FinishedBefore(Exception):
    """Rerun of a finished run with the same config (a retry after it registered, a command run
    twice): its checkpoints hold every round already, so it would register the same model again."""

    def __init__(self, run_name: str, model_uri: str):
        super().__init__(f"run {run_name} finished before with this config and registered {model_uri}: nothing to "
                         "train (a new run_name trains again; a changed config, say more rounds, continues it)")
        self.model_uri = model_uri


# A rerun with the same run_name continues that run's checkpoints: the rows they were trained
# on and the models they are of must be this config's. How long it trains may grow (more
# rounds or epochs continue it), and how the data is read may change.
READING = ("materialize", "retried_io_errors", "read_retries")
MODEL = ("name", "kind", "members", "params", "space", "model", "max_seq_length")
LENGTH = ("num_boost_round", "early_stopping_rounds")
# What else a continued run of a workload keeps. BERT: its learning-rate schedule is laid out over
# the steps its epochs, batch, accumulation and worker count make, and a checkpoint resumes at
# its step of that schedule. Tune: a restored search keeps its first attempt's scheduler,
# searcher, sample count and trial shape (Tuner.restore), whatever the config says now.
FIXED = {"bert": ("epochs", "batch_size", "grad_accum_steps", "learning_rate", "warmup_fraction"),
         "tune": ("num_samples", "num_boost_round", "max_concurrent_trials", "checkpoint_every", "scheduler",
                  "search", "trial")}
FIXED_CLUSTER = {"bert": ("num_workers",), "tune": ("num_workers", "cpus_per_worker", "gpus_per_worker")}


def identity(settings: Dict[str, Any]) -> Dict[str, Any]:
    """What a run's checkpoints depend on, from its config as a dict."""
    name = settings["workload"].get("name")
    kept = (*MODEL, *FIXED.get(name, ()))
    workload = {k: v for k, v in settings["workload"].items() if k in kept}
    if "members" in workload:
        workload["members"] = [{k: v for k, v in m.items() if k not in LENGTH} for m in workload["members"]]
    out = {"seed": settings.get("seed"), "workload": workload,
           "data": {k: v for k, v in settings["data"].items() if k not in READING}}
    if FIXED_CLUSTER.get(name):
        out["cluster"] = {k: (settings.get("cluster") or {}).get(k) for k in FIXED_CLUSTER[name]}
    return out


def differences(before: Any, now: Any, key: str = "") -> List[str]:
    """The dotted keys whose values differ (lists compared whole)."""
    if isinstance(before, dict) and isinstance(now, dict):
        return [d for k in sorted(set(before) | set(now), key=str)
                for d in differences(before.get(k), now.get(k), f"{key}.{k}" if key else str(k))]
    return [] if before == now else [key]


def _earlier_parents(cfg: config.Config) -> list:
    """MLflow parent runs named `cfg.run_name` in this experiment, newest first; none for a name
    the run made up."""
    from mlflow.tracking import MlflowClient

    name = cfg.run_name
    if not name or "'" in name:
        return []
    client = MlflowClient()
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    runs = client.search_runs([experiment.experiment_id], filter_string=f"attributes.run_name = '{name}'",
                              order_by=["attributes.start_time DESC"], max_results=50)
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags]


def _logged_config(run) -> Optional[str]:
    return _config_at(run.info.artifact_uri)


@functools.lru_cache(maxsize=16)
def _config_at(artifact_uri: str) -> Optional[str]:
    """The config a run logged (read once: the continuation check and the finished-run check
    often ask for the same run's)."""
    import mlflow

    try:
        return mlflow.artifacts.load_text(f"{artifact_uri}/config.yaml")
    except Exception:  # a run without the file (another tool's run of that name)
        return None


def check_continues(cfg: config.Config, earlier: list) -> None:
    """A rerun's data and models are those of the run it continues, or it is another run."""
    import yaml

    logged = _logged_config(earlier[0]) if earlier else None
    if logged is None:
        return
    before, now = yaml.safe_load(logged), yaml.safe_load(config.to_yaml(cfg))
    changed = differences(identity(before), identity(now))
    if changed:
        raise UserError(f"run_name={cfg.run_name} was run before with another {', '.join(changed[:3])}: a rerun "
                        "continues that run's checkpoints, trained on its data and settings; give this config a new "
                        "run_name")
    shortened = _fewer_rounds(before, now) if earlier[0].info.status == "FINISHED" else []
    if shortened:
        raise UserError(f"run_name={cfg.run_name} finished with more rounds for {', '.join(shortened)}: its checkpoints "
                        "hold the longer models, which a rerun would register as they are; a rerun may add rounds, "
                        "not remove them: give this config a new run_name")


def _fewer_rounds(before: Dict[str, Any], now: Dict[str, Any]) -> List[str]:
    """Members given fewer boosting rounds than in the finished run this one continues."""
    old = {m.get("name"): m.get("num_boost_round") for m in before["workload"].get("members") or []}
    return [f"{m['name']} ({old[m['name']]}, now {m['num_boost_round']})"
            for m in now["workload"].get("members") or []
            if isinstance(old.get(m.get("name")), int) and m.get("num_boost_round", 0) < old[m["name"]]]


def registered_before(cfg: config.Config, earlier: list) -> Optional[str]:
    """models:/<name>/<version> registered by the latest finished run of this name, when that
    run's config is this one; else None."""
    from mlflow.tracking import MlflowClient

    latest = next((r for r in earlier if r.info.status == "FINISHED"), None)
    if latest is None or not cfg.workload.register:
        return None
    versions = MlflowClient().search_model_versions(f"run_id = '{latest.info.run_id}'")
    if not versions or _logged_config(latest) != config.to_yaml(cfg):
        return None
    newest = max(versions, key=lambda v: int(v.version))
    return f"models:/{newest.name}/{newest.version}"


class Run:
    def __init__(self, cfg: config.Config):
        self.cfg = cfg
        self.t0 = time.perf_counter()
        self.name = cfg.run_name or make_run_name(cfg.workload.name)
        self.timings: Dict[str, float] = {}
        self.tracking_uri = ""
        self.obs: Any = None
        self.earlier: list = []  # MLflow parent runs of this name before this one, newest first
        self.model_uri: Optional[str] = None      # models:/<name>/<version> once registered
        self._to_register: Optional[tuple] = None

    def start(self, check: Callable[[], None] = lambda: None, warm: Callable[[], None] = lambda: None) -> None:
        """The workload's checks of its inputs (bad data fails here, before a cluster or an MLflow
        run exists), then Ray and MLflow, started side by side; `warm` (imports the workload
        needs only at its end) runs beside Ray's start too. A run of this name and config that
        finished and registered its model before ends here (FinishedBefore)."""
        check()
        self.tracking_uri = startup.tracking_and_cluster(self.cfg.tracking, self.cfg.cluster, warm)
        self.timings["cluster_s"] = time.perf_counter() - self.t0
        self.earlier = earlier = _earlier_parents(self.cfg)
        check_continues(self.cfg, earlier)
        registered = registered_before(self.cfg, earlier)
        if registered:
            raise FinishedBefore(self.name, registered)

    @contextmanager
    def observed(self) -> Iterator[Any]:
        """Sampling starts with the cluster: its hours (and cost) start there too."""
        from training import observability

        with observability.observe(self.cfg.observability) as obs:
            self.obs = obs
            yield obs

    def register_when_finished(self, logged_uri: str, name: str) -> None:
        """Register the logged model as a new version of `name` once the parent run has ended
        FINISHED (`model_uri` then names it): a failure or an interrupt anywhere before, the
        uploads at the run's end included, leaves nothing registered, so no version comes from a
        failed run, and a rerun of that run registers the one version."""
        self._to_register = (logged_uri, name)

    @contextmanager
    def parent(self, resume_run_id: Optional[str] = None, metrics: Optional[Dict[str, float]] = None,
               params: Optional[Dict[str, Any]] = None) -> Iterator[Any]:
        """The run's MLflow parent run, marked FAILED (and nothing registered) when the body raises.
        Every log, sample and the cost land in it, also when training fails. A resumed run keeps
        the params and config it logged the first time."""
        import mlflow

        from training.runtime import tracking
        from training.runtime.interrupts import held_interrupt

        with mlflow.start_run(run_id=resume_run_id, run_name=None if resume_run_id else self.name,
                              tags={"workload": self.cfg.workload.name}) as parent, self.obs.recording():
            if resume_run_id is None:
                tracking.log_params({**config.flatten(self.cfg), **(params or {})})
                mlflow.log_text(config.to_yaml(self.cfg), "config.yaml")
                if metrics:
                    mlflow.log_metrics(metrics)
                self._close_abandoned(parent.info.run_id)
            yield parent
            self.timings["total_s"] = time.perf_counter() - self.t0
            mlflow.log_metrics(self.timings)
        if self._to_register is not None:
            logged, name = self._to_register
            with held_interrupt():  # a Ctrl-C now waits for the version: a finished run has its model
                self.model_uri = f"models:/{name}/{tracking.register(logged, name)}"

    def _close_abandoned(self, continued_by: str) -> None:
        """Earlier attempts of this run whose driver died (killed, a lost head pod) stay RUNNING
        in MLflow, with their members' runs: they end KILLED, naming the run that continues them."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient()
        for earlier in self.earlier:
            if earlier.info.status != "RUNNING":
                continue
            children = client.search_runs([earlier.info.experiment_id], max_results=1000, filter_string=(
                f"tags.mlflow.parentRunId = '{earlier.info.run_id}' and attributes.status = 'RUNNING'"))
            for run in [*children, earlier]:
                client.set_terminated(run.info.run_id, "KILLED")
            client.set_tag(earlier.info.run_id, "continued_by", continued_by)

    @contextmanager
    def phase(self, key: str) -> Iterator[None]:
        """Time a step of the run into `timings[key]` (seconds)."""
        t = time.perf_counter()
        yield
        self.timings[key] = time.perf_counter() - t

    def usage(self) -> str:
        """Resource hours and estimated cost (observability), or '' when sampling is off."""
        return self.obs.summary_line() if self.obs is not None else ""

    def finish(self, summary: str, model_uri: Optional[str] = None, holdout: Any = None) -> None:
        """Print the summary; then, when enabled, the champion/challenger gate on held-out rows."""
        print(summary)
        if self.cfg.promote.enabled:
            from training.ops import promote

            promote.after_run(self.cfg, model_uri, holdout)

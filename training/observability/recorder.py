"""One context manager every workload wraps its run in: sample, account, and log it all to MLflow.

    with observe(cfg.observability) as obs:          # after cluster.connect: the sampler starts
        ...                                           # data preparation (no MLflow run yet)
        with tracking.parent_run(...):
            with obs.recording():                    # on exit, success or failure: samples,
                ...                                   # hours, cost, plot, CSV, Ray logs -> the run

Nothing in here may fail the training run: every step catches its own errors and logs them.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import mlflow
import ray

from training.errors import TrainingError
from training.runtime.live import LiveMetrics
from training.settings import ObservabilityConfig
from training.observability import accounting, logs, plots
from training.observability.sampler import Sample, Sampler, state_api_responds

log = logging.getLogger(__name__)

# Ray's processes report task state changes to the GCS asynchronously, in batches: a task that
# failed a moment ago may not be listed yet. After a training failure the summary looks again
# for this long before it says none failed.
FAILED_TASK_WAIT_S = 3.0


class Observer:
    def __init__(self, cfg: ObservabilityConfig):
        self.cfg = cfg
        self.state_api = cfg.enabled and state_api_responds(timeout=5)
        self.sampler: Optional[Sampler] = (Sampler(cfg.sample_interval_s, self.state_api).start()
                                           if cfg.enabled else None)
        self.usage: Optional[accounting.Usage] = None
        self.cost: Optional[accounting.Cost] = None
        # A resumed MLflow run's earlier attempts (recording() reads them): where their samples end, their usage.
        self.first_step, self.earlier_usage = 0, None

    def stop(self) -> List[Sample]:
        return self.sampler.stop() if self.sampler else []

    @contextmanager
    def recording(self) -> Iterator["Observer"]:
        """Inside an active MLflow run: samples reach it as they are taken (a few at a time);
        on exit (also when the body raises) everything else is logged to it."""
        live = None
        if self.sampler is not None:
            run_id = mlflow.active_run().info.run_id
            self.first_step, self.earlier_usage = _earlier_attempts(run_id)
            live = LiveMetrics(mlflow.get_tracking_uri(), run_id, "observability")

            def push(step: int, sample: Sample) -> None:
                for name, value in sample.metrics().items():
                    live.add(name, self.first_step + step, value, int(sample.t * 1000))

            self.sampler.on_sample = push
        try:
            yield self
        finally:
            if self.sampler is not None:
                self.sampler.on_sample = None
                live.close()  # its writes done before the rest is logged: each step once
                self._log_to_run(training_failed=isinstance(sys.exc_info()[1], TrainingError))

    def summary_line(self) -> str:
        if self.usage is None or self.cost is None:
            return ""
        return accounting.summary_line(self.usage, self.cost)

    def _log_to_run(self, training_failed: bool) -> None:
        samples = self.stop()
        # The sampler's last look at the state API (with the dashboard off, cluster.dashboard=false,
        # or gone, after Ctrl-C, the logs and the summary use what this node has).
        self.state_api = self.state_api and self.sampler.state is not None
        end = self.sampler.stopped_at or time.time()
        steps = [
            ("samples", lambda: _log_samples(samples, self.first_step)),
            ("cost", lambda: self._log_usage(samples, end)),
            ("plot and CSV", lambda: _log_tables_and_plot(samples, self.cfg.csv_path)),
            ("Ray logs", lambda: self._log_ray_logs(training_failed)),
        ]
        for what, step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001  observing must never fail (or mask) the run's outcome
                log.warning("observability: could not log %s: %s: %s", what, type(exc).__name__,
                            str(exc).splitlines()[0] if str(exc) else "")

    def _log_usage(self, samples: List[Sample], end: float) -> None:
        self.usage = accounting.usage(samples, self.sampler.started_at, end)
        if self.earlier_usage is not None:  # a resumed run: its hours and cost are all its attempts'
            self.usage = accounting.added(self.earlier_usage, self.usage)
        self.cost = accounting.cost(self.usage, self.cfg.prices)
        mlflow.log_metrics({**self.usage.metrics(), "cost_estimate": self.cost.total,
                            **{f"cost_{k}": v for k, v in self.cost.parts.items()},
                            "observability_sample_errors": self.sampler.errors})
        mlflow.set_tags({"cost_estimate": self.cost.describe(), "cost_currency": self.cost.currency})

    def _log_ray_logs(self, training_failed: bool) -> None:
        if not self.cfg.logs.enabled:
            return
        with tempfile.TemporaryDirectory() as d:
            files = logs.collect(Path(d), self.cfg.logs.max_file_mb, self.cfg.logs.max_total_mb, self.state_api)
            Path(d, "INDEX.txt").write_text(logs.index(files))
            try:
                summary = cluster_summary(self, files, training_failed)
            except Exception as exc:  # noqa: BLE001  a GCS or dashboard in trouble: the logs go up all the same
                first = (str(exc).strip().splitlines() or [""])[0][:300]
                summary = {"error": f"the cluster summary could not be made: {type(exc).__name__}: {first}"}
            Path(d, "cluster_summary.json").write_text(
                logs.redact(json.dumps(summary, indent=1, default=str), logs.known_secrets()))
            mlflow.log_artifacts(d, "ray_logs")


@contextmanager
def observe(cfg: ObservabilityConfig) -> Iterator[Observer]:
    """Sample the connected cluster for the duration of the block (the thread stops on exit)."""
    obs = Observer(cfg)
    try:
        yield obs
    finally:
        obs.stop()


def _earlier_attempts(run_id: str) -> Tuple[int, Optional[accounting.Usage]]:
    """What a resumed run (a search continued by a rerun) holds of its earlier attempts: the step
    after their last sample, where this attempt's samples go on, and their usage; (0, None) for
    a new run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    steps = [m.step for m in client.get_metric_history(run_id, "cluster_nodes")]
    metrics = client.get_run(run_id).data.metrics
    keys = [f"usage_{f.name}" for f in dataclasses.fields(accounting.Usage)]
    usage = (accounting.Usage(*[metrics[k] for k in keys]) if all(k in metrics for k in keys) else None)
    return (max(steps) + 1 if steps else 0), usage


def _log_samples(samples: List[Sample], first_step: int = 0) -> None:
    """The samples not logged live: those before the MLflow run began, the last ones."""
    from training.runtime import tracking

    series: Dict[str, list] = {}
    for step, s in enumerate(samples, start=first_step):
        for k, v in s.metrics().items():
            series.setdefault(k, []).append((step, v, int(s.t * 1000)))
    tracking.log_missing(mlflow.active_run().info.run_id, series)


def rows(samples: List[Sample]) -> List[Dict[str, float]]:
    """One row per sample: time, seconds since the first sample, then every metric."""
    t0 = samples[0].t if samples else 0.0
    return [{"t": s.t, "elapsed_s": round(s.t - t0, 3), **s.metrics()} for s in samples]


def write_csv(samples: List[Sample], path: Path) -> Path:
    table = rows(samples)
    columns: List[str] = []
    for r in table:   # nodes may join mid-run: the union of columns, in first-seen order
        columns += [c for c in r if c not in columns]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(table)
    return path


def _log_tables_and_plot(samples: List[Sample], csv_path: Optional[str]) -> None:
    with tempfile.TemporaryDirectory() as d:
        mlflow.log_artifact(str(write_csv(samples, Path(d) / "samples.csv")), "observability")
        if len(samples) >= 2:
            title = f"cluster utilisation ({samples[-1].nodes} node(s))"
            mlflow.log_artifact(plots.utilisation_plot(samples, f"{d}/utilisation.png", title), "observability")
    if csv_path:
        write_csv(samples, Path(csv_path))
        log.info("observability: %d samples written to %s", len(samples), csv_path)


def cluster_summary(obs: Observer, files: List[logs.CollectedFile], training_failed: bool = False) -> Dict[str, object]:
    """Nodes, resources, failed tasks and restarted actors, hours and cost: the post-mortem's first page.
    `training_failed`: the run ended in a TrainingError, so some task failed; wait for it to be listed."""
    summary: Dict[str, object] = {
        "nodes": [{k: n.get(k) for k in ("NodeID", "NodeManagerAddress", "NodeManagerHostname", "Alive",
                                         "Resources", "DeathReasonMessage")} for n in ray.nodes()],
        "cluster_resources": ray.cluster_resources(),
        "available_resources": ray.available_resources(),
        "samples": len(obs.sampler.samples) if obs.sampler else 0,
        "sample_errors": obs.sampler.errors if obs.sampler else 0,
        "usage": obs.usage.__dict__ if obs.usage else None,
        "cost": obs.cost.__dict__ if obs.cost else None,
        "log_files": {"kept": sum(1 for f in files if f.kept), "skipped": sum(1 for f in files if not f.kept)},
    }
    if obs.state_api:
        summary.update(obs.sampler.state.failures(FAILED_TASK_WAIT_S if training_failed else 0.0))
    return summary

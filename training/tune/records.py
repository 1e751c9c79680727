"""One record per trial, its nested MLflow run, and the Tune callback that logs trials as they end.

A child run is keyed by the tag `trial_id`, so a resumed search (and the final sweep over
the result grid) never logs a trial twice.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from training.gbdt.checkpoint import STATE_FILE
from training.tune import space
from training.tune.trials import METRIC

log = logging.getLogger("training.tune")


@dataclass
class TrialRecord:
    trial_id: str
    sampled: Dict[str, Any]              # what the searcher drew
    rounds: int                          # rounds the trial was given
    rounds_done: int
    value: Optional[float]               # last reported validation RMSE
    seconds: float
    status: str                          # finished | stopped (by ASHA) | error
    checkpoint: Any = None               # ray.tune.Checkpoint with model + state.json, or None
    error: str = ""
    history: List[float] = field(default_factory=list)

    @property
    def stopped_early(self) -> bool:
        return self.status == "stopped"


def make_record(trial_id: str, sampled: Dict[str, Any], metrics: Dict[str, Any], checkpoint: Any,
                error: Optional[BaseException], fixed_rounds: int) -> TrialRecord:
    """From a trial's config, last metrics and checkpoint (Tune's own, or Train's `checkpoint_path`)."""
    from ray.tune import Checkpoint

    sampled = space.plain(dict(sampled))
    rounds = int(sampled.get(space.ROUNDS, fixed_rounds))
    done = int(metrics.get("round", 0))
    if checkpoint is None and metrics.get("checkpoint_path"):
        checkpoint = Checkpoint(metrics["checkpoint_path"])
    if error is not None:
        status, message = "error", (str(error).strip().splitlines() or [type(error).__name__])[-1][:500]
    else:
        status, message = ("finished" if done >= rounds else "stopped"), ""
    value = metrics.get(METRIC)
    return TrialRecord(trial_id, sampled, rounds, done, None if value is None else float(value),
                       float(metrics.get("time_total_s", 0.0)), status, checkpoint, message)


def read_state(checkpoint: Any) -> Optional[Dict[str, Any]]:
    """state.json of a checkpoint (rounds, per-round validation curve) without downloading the model."""
    if checkpoint is None:
        return None
    try:
        with checkpoint.filesystem.open_input_file(f"{checkpoint.path}/{STATE_FILE}") as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return None


def logged_trials(client: MlflowClient, experiment_id: str, parent_run_id: str) -> Dict[str, str]:
    """trial_id -> child run id, for the children already under the parent."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
                              max_results=5000)
    return {r.data.tags["trial_id"]: r.info.run_id for r in runs if "trial_id" in r.data.tags}


def log_trial(client: MlflowClient, experiment_id: str, parent_run_id: str, kind: str, rec: TrialRecord) -> str:
    """A nested run: sampled params, per-round validation curve, final metric, whether ASHA stopped it."""
    if not rec.history:
        state = read_state(rec.checkpoint)
        rec.history = list(state["history"]) if state else []
    tags = {"mlflow.parentRunId": parent_run_id, "mlflow.runName": rec.trial_id, "trial_id": rec.trial_id,
            "kind": kind, "status": rec.status, "stopped_early": str(rec.stopped_early).lower()}
    run = client.create_run(experiment_id, run_name=rec.trial_id, tags=tags)
    run_id = run.info.run_id
    params = [Param(k, str(v)[:6000]) for k, v in {"kind": kind, **rec.sampled, space.ROUNDS: rec.rounds}.items()]
    client.log_batch(run_id, params=params)
    points = [Metric(f"{METRIC}_curve", float(v), 0, step) for step, v in enumerate(rec.history, start=1)]
    final = {"rounds_done": rec.rounds_done, "train_seconds": rec.seconds}
    if rec.value is not None:
        final[METRIC] = rec.value
    points += [Metric(k, float(v), 0, 0) for k, v in final.items()]
    for i in range(0, len(points), 1000):
        client.log_batch(run_id, metrics=points[i: i + 1000])
    if rec.error:
        client.log_batch(run_id, tags=[RunTag("error", rec.error)])
    client.set_terminated(run_id, "FAILED" if rec.status == "error" else "FINISHED")
    return run_id


def describe(rec: TrialRecord) -> str:
    if rec.status == "error":
        return f"trial {rec.trial_id} failed: {rec.error}"
    how = "finished" if rec.status == "finished" else f"stopped by ASHA at round {rec.rounds_done}/{rec.rounds}"
    value = f"{rec.value:.4f}" if rec.value is not None else "n/a"
    return f"trial {rec.trial_id} {how}: valid rmse {value} ({rec.seconds:.1f}s)"


class TrialLogger(Callback):
    """Logs each trial's child run as soon as it ends. Pickled into the experiment (tuner.pkl),
    so it holds ids only; a resumed search reuses the same parent run, so they stay valid."""

    def __init__(self, experiment_id: str, parent_run_id: str, kind: str, fixed_rounds: int):
        self.experiment_id, self.parent_run_id = experiment_id, parent_run_id
        self.kind, self.fixed_rounds = kind, fixed_rounds

    def on_trial_start(self, iteration, trials, trial, **info):
        rounds = trial.config.get(space.ROUNDS, self.fixed_rounds)
        log.info("trial %s started: %d rounds, %s", trial.trial_id, rounds,
                 ", ".join(f"{k}={_short(v)}" for k, v in trial.config.items() if k != space.ROUNDS))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._log(trial, None)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._log(trial, trial.get_error() or RuntimeError("trial failed"))

    def _log(self, trial, error) -> None:
        rec = make_record(trial.trial_id, trial.config, trial.last_result or {}, trial.checkpoint, error,
                          self.fixed_rounds)
        log.info("%s", describe(rec))
        try:
            client = MlflowClient()
            if rec.trial_id not in logged_trials(client, self.experiment_id, self.parent_run_id):
                log_trial(client, self.experiment_id, self.parent_run_id, self.kind, rec)
        except Exception as exc:  # tracking must not end the search; the final sweep retries
            log.warning("could not log trial %s to MLflow yet: %s", rec.trial_id, str(exc).splitlines()[0])


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)

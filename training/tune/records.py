"""One record per trial, its nested MLflow run, and the Tune callback that logs trials as they end.

A child run is keyed by the tag `trial_id`, so a resumed search (and the final sweep over
the result grid) never logs a trial twice.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from mlflow.entities import Metric
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


def logged_trials(client: MlflowClient, experiment_id: str, parent_run_id: str) -> Dict[str, Any]:
    """trial_id -> child run (its info: run_id, status), for the children already under the parent."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
                              max_results=5000)
    return {r.data.tags["trial_id"]: r.info for r in runs if "trial_id" in r.data.tags}


def close_unfinished(client: MlflowClient, experiment_id: str, parent_run_id: str) -> None:
    """An interrupted search: its trials' runs still RUNNING end KILLED (Tune sends no trial
    callback for trials running at its shutdown); a resumed search opens them again."""
    for info in logged_trials(client, experiment_id, parent_run_id).values():
        if info.status == "RUNNING":
            client.set_terminated(info.run_id, "KILLED")


def open_trial(experiment_id: str, parent_run_id: str, kind: str, trial_id: str, sampled: Dict[str, Any],
               rounds: int) -> str:
    """A trial's nested run as it starts, RUNNING: its sampled params; results follow as reported."""
    from training.runtime import tracking

    params = {"kind": kind, **space.plain(dict(sampled)), space.ROUNDS: rounds}
    return tracking.start_child(trial_id, params, {"trial_id": trial_id, "kind": kind}, experiment_id, parent_run_id)


def log_trial(experiment_id: str, parent_run_id: str, kind: str, rec: TrialRecord,
              run_id: Optional[str] = None) -> str:
    """End a trial's nested run (created here when `run_id` is None): the per-round validation
    curve's points not logged yet, final metric, whether ASHA stopped it."""
    from training.runtime import tracking

    if not rec.history:
        state = read_state(rec.checkpoint)
        rec.history = list(state["history"]) if state else []
    if run_id is None:
        run_id = open_trial(experiment_id, parent_run_id, kind, rec.trial_id, rec.sampled, rec.rounds)
    final = {"rounds_done": rec.rounds_done, "train_seconds": rec.seconds}
    if rec.value is not None:
        final[METRIC] = rec.value
    tags = {"status": rec.status, "stopped_early": str(rec.stopped_early).lower(), **({"error": rec.error}
                                                                                       if rec.error else {})}
    tracking.finish_child(run_id, f"{METRIC}_curve", rec.history, final, tags,
                          "FAILED" if rec.status == "error" else "FINISHED")
    return run_id


def describe(rec: TrialRecord) -> str:
    if rec.status == "error":
        return f"trial {rec.trial_id} failed: {rec.error}"
    how = "finished" if rec.status == "finished" else f"stopped by ASHA at round {rec.rounds_done}/{rec.rounds}"
    value = f"{rec.value:.4f}" if rec.value is not None else "n/a"
    return f"trial {rec.trial_id} {how}: valid rmse {value} ({rec.seconds:.1f}s)"


class TrialLogger(Callback):
    """Each trial's nested run, live: opened as the trial starts, a curve point per report, ended
    as the trial ends. Pickled into the experiment (tuner.pkl), so it holds ids only; a resumed
    search reuses the same parent run, so they stay valid."""

    def __init__(self, experiment_id: str, parent_run_id: str, kind: str, fixed_rounds: int):
        self.experiment_id, self.parent_run_id = experiment_id, parent_run_id
        self.kind, self.fixed_rounds = kind, fixed_rounds
        self.runs: Dict[str, str] = {}      # trial_id -> its child run

    def on_trial_start(self, iteration, trials, trial, **info):
        rounds = trial.config.get(space.ROUNDS, self.fixed_rounds)
        log.info("trial %s started: %d rounds, %s", trial.trial_id, rounds,
                 ", ".join(f"{k}={_short(v)}" for k, v in trial.config.items() if k != space.ROUNDS))
        self._tracked(lambda client: self._run_of(client, trial.trial_id, trial.config, rounds, reopen=True))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        run_id = self.runs.get(trial.trial_id)
        if run_id and METRIC in result and "round" in result:
            point = Metric(f"{METRIC}_curve", float(result[METRIC]), int(time.time() * 1000), int(result["round"]))
            self._tracked(lambda client: client.log_batch(run_id, metrics=[point]))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial, None)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, trial.get_error() or RuntimeError("trial failed"))

    def _run_of(self, client: MlflowClient, trial_id: str, sampled: Dict[str, Any], rounds: int,
                reopen: bool = False) -> str:
        """The trial's child run: this search's earlier one (a resumed search), or a new one. As
        the trial starts again (`reopen`: an interrupted or failed trial of a resumed search), its
        earlier run is RUNNING again, without the error it ended with, so that its end is logged."""
        if trial_id not in self.runs:
            earlier = logged_trials(client, self.experiment_id, self.parent_run_id).get(trial_id)
            if earlier and reopen and earlier.status != "RUNNING":
                client.update_run(earlier.run_id, "RUNNING")
                if "error" in client.get_run(earlier.run_id).data.tags:
                    client.delete_tag(earlier.run_id, "error")
            self.runs[trial_id] = earlier.run_id if earlier else open_trial(
                self.experiment_id, self.parent_run_id, self.kind, trial_id, sampled, rounds)
        return self.runs[trial_id]

    def _end(self, trial, error) -> None:
        rec = make_record(trial.trial_id, trial.config, trial.last_result or {}, trial.checkpoint, error,
                          self.fixed_rounds)
        log.info("%s", describe(rec))

        def end(client: MlflowClient) -> None:
            run_id = self._run_of(client, rec.trial_id, rec.sampled, rec.rounds)
            if client.get_run(run_id).info.status == "RUNNING":
                log_trial(self.experiment_id, self.parent_run_id, self.kind, rec, run_id)

        self._tracked(end)

    @staticmethod
    def _tracked(action) -> None:
        try:
            action(MlflowClient())
        except Exception as exc:  # tracking must not end the search; the final sweep retries
            log.warning("could not log a trial to MLflow yet: %s", (str(exc).splitlines() or [""])[0])


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)

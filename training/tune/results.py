"""What a search leaves behind: trial records, the best model, the ensemble override, the summary."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import mlflow

from training import config
from training.config import Config
from training.gbdt import checkpoint
from training.gbdt.config import GBDTWorkloadConfig, MemberConfig
from training.gbdt.slots import TrainedMember, train_all
from training.runtime import report
from training.tune import records, space
from training.tune.config import TrialMode, TuneWorkloadConfig
from training.tune.records import TrialRecord

if TYPE_CHECKING:
    from training.data.prepare import PreparedData

log = logging.getLogger("training.tune")


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C / SIGINT during the search: Tune saved its state; the same run_name resumes it."""


@dataclass
class TuneResult:
    run_id: str
    run_name: str
    tracking_uri: str
    experiment_path: str                  # Tune's storage path for this search (resume from here)
    trials: List[TrialRecord]             # best first; errored trials last
    best: TrialRecord
    best_params: Dict[str, Any]           # fixed + sampled booster params of the best trial
    best_rounds: int
    metrics: Dict[str, float]             # the registered model on the validation split
    mode: str                             # local | distributed
    concurrency: int
    resumed: bool
    model_uri: Optional[str] = None
    ensemble_override: str = ""
    timings: Dict[str, float] = field(default_factory=dict)


def records_of(grid, w: TuneWorkloadConfig) -> List[TrialRecord]:
    """Every trial of the result grid, best first (errored and unscored last)."""
    recs = []
    for result in grid:
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or Path(result.path).name
        recs.append(records.make_record(trial_id, result.config or {}, metrics, result.checkpoint, result.error,
                                        w.num_boost_round))
    return sorted(recs, key=lambda r: (r.status == "error", r.value is None, r.value or 0.0))


def check_complete(grid, recs: List[TrialRecord], w: TuneWorkloadConfig, run_name: str) -> None:
    ended = grid.num_terminated + grid.num_errors
    if ended < w.num_samples:
        raise SearchInterrupted(f"search {run_name} stopped after {ended}/{w.num_samples} trials; rerun with "
                                f"run_name={run_name} to resume it")


def log_missing_children(client, experiment_id: str, parent_id: str, kind: str, recs: List[TrialRecord]) -> None:
    """Trials the live callback did not log or did not end (an MLflow hiccup, an earlier
    interrupted attempt whose trials were left RUNNING)."""
    logged = records.logged_trials(client, experiment_id, parent_id)
    for rec in recs:
        run = logged.get(rec.trial_id)
        if run is None or run.status == "RUNNING":
            records.log_trial(experiment_id, parent_id, kind, rec, run.run_id if run else None)


def best_member(best: TrialRecord, w: TuneWorkloadConfig, cfg: Config, data: PreparedData, mode: TrialMode,
                 run_name: str) -> TrainedMember:
    """The best trial's model from its checkpoint; retrained on its config if there is none."""
    name = f"tuned_{w.kind}"
    rounds, params = space.split(w.kind, best.sampled, w.params, w.num_boost_round)
    if best.checkpoint is not None:
        try:
            with best.checkpoint.as_directory() as d:
                state = json.loads(Path(d, checkpoint.STATE_FILE).read_text())
                model = Path(d, checkpoint.model_file(w.kind)).read_bytes()
            return TrainedMember(name, w.kind, state["rounds"], best.seconds, model, state["history"], params)
        except (OSError, KeyError, ValueError) as exc:
            log.warning("best trial %s: checkpoint unreadable (%s); retraining its config", best.trial_id, exc)
    # The best trial's own length: what it reached (ASHA may have stopped it), not what it was given.
    rounds = best.rounds_done or rounds
    log.info("best trial %s has no checkpoint: retraining %d rounds on its config", best.trial_id, rounds)
    workers = cfg.cluster.num_workers if mode is TrialMode.distributed else 1
    member = MemberConfig(name=name, kind=w.kind, num_boost_round=rounds, params=params)
    workload = GBDTWorkloadConfig(name=w.name, members=[member], checkpoint_every=w.checkpoint_every)
    c = dataclasses.replace(cfg.cluster, num_workers=workers)
    return train_all(workload, c, data, f"{run_name}-best", 1, cfg.seed)[0]


def ensemble_override(kind: str, rounds: int, params: Dict[str, Any], conf: Optional[List[str]] = None) -> str:
    """`workload.members=[...]`: the ensemble's members plus the tuned one, as one Hydra override."""
    ensemble = config.load(["workload=ensemble", *(conf or [])]).workload
    items = [_member_yaml(m.name, m.kind, m.num_boost_round, m.params) for m in ensemble.members]
    items.append(_member_yaml(f"tuned_{kind}", kind, rounds, params))
    return f"workload.members=[{', '.join(items)}]"


def _member_yaml(name: str, kind: str, rounds: int, params: Dict[str, Any]) -> str:
    body = ", ".join(f"{k}: {_value(v)}" for k, v in params.items())
    return f"{{name: {name}, kind: {kind}, num_boost_round: {rounds}, params: {{{body}}}}}"


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(float(f"{v:.6g}"))
    if isinstance(v, int):
        return str(v)
    return "'" + str(v).replace("'", "") + "'"


def write_override(exp_path: str, override: str) -> None:
    """Next to Tune's state: `python -m training workload=ensemble "$(cat <path>)"`."""
    import pyarrow.fs

    try:
        fs, path = pyarrow.fs.FileSystem.from_uri(exp_path) if "://" in exp_path else (pyarrow.fs.LocalFileSystem(),
                                                                                        exp_path)
        with fs.open_output_stream(f"{path}/ensemble_override.txt") as f:
            f.write((override + "\n").encode())
    except Exception as exc:  # the override is also an MLflow artifact; a storage hiccup is not fatal
        log.warning("could not write %s/ensemble_override.txt: %s", exp_path, exc)


def log_search(recs: List[TrialRecord], best: TrialRecord, best_metrics: Dict[str, float],
                timings: Dict[str, float], override: str, exp_path: str, w: TuneWorkloadConfig) -> None:
    counts = {s: sum(r.status == s for r in recs) for s in ("finished", "stopped", "error")}
    mlflow.log_metrics({"trials": len(recs), "trials_finished": counts["finished"],
                        "trials_stopped_early": counts["stopped"], "trials_failed": counts["error"],
                        "best_valid_rmse": best.value, **{f"best_{k}": v for k, v in best_metrics.items()},
                        "trials_per_hour": len(recs) / max(timings["tune_s"], 1e-9) * 3600})
    mlflow.set_tags({"best_trial_id": best.trial_id, "tune_experiment_path": exp_path})
    mlflow.log_dict({"trial_id": best.trial_id, "valid_rmse": best.value, "num_boost_round": best.rounds,
                     "sampled": best.sampled, "fixed_params": dict(w.params)}, "best/best_trial.json")
    mlflow.log_text(override + "\n", "best/ensemble_override.txt")


def summary(cfg: Config, result: TuneResult) -> str:
    w = cfg.workload
    names = [k for k in w.space if k != space.ROUNDS]
    rows = []
    for r in result.trials[: w.top]:
        status = {"finished": "finished", "stopped": "ASHA stop", "error": "error"}[r.status]
        rows.append([r.trial_id, f"{r.rounds_done}/{r.rounds}", *[_cell(r.sampled.get(n)) for n in names],
                     "" if r.value is None else r.value, status, f"{r.seconds:.1f}"])
    counts = {s: sum(t.status == s for t in result.trials) for s in ("finished", "stopped", "error")}
    t = result.timings
    rate = len(result.trials) / max(t["tune_s"], 1e-9) * 3600
    attempts = int(t.get("search_attempts", 1))
    over = f" over {attempts} attempts" if attempts > 1 else ""
    out = ["", f"Search {result.run_name}{' (resumed)' if result.resumed else ''}: {len(result.trials)} trials "
               f"({counts['finished']} finished, {counts['stopped']} stopped early by ASHA, {counts['error']} failed), "
               f"{result.concurrency} at a time, {result.mode} trials; search {t['tune_s']:.1f}s{over} "
               f"({rate:.0f} trials/hour), total {t['total_s']:.1f}s",
           f"Top {min(w.top, len(result.trials))} trials by validation RMSE:",
           report.table(["trial", "rounds", *names, "valid RMSE", "status", "seconds"], rows), "",
           f"Best trial:    {result.best.trial_id}: {result.best_rounds} rounds, "
           + ", ".join(f"{k}={_cell(v)}" for k, v in result.best_params.items()),
           f"Best model:    validation RMSE {result.metrics['rmse']:.4f}, MAE {result.metrics['mae']:.4f}, "
           f"R2 {result.metrics['r2']:.4f}",
           f"MLflow run:    {result.run_id} (experiment '{cfg.tracking.experiment}' at {result.tracking_uri})",
           f"Model version: {result.model_uri}" if result.model_uri else
           "Model version: not registered (workload.register=false)",
           f"Resume:        rerun with run_name={result.run_name} (Tune state in {result.experiment_path})",
           f"Ensemble:      python -m training workload=ensemble \"$(cat {result.experiment_path}/ensemble_override.txt)\""]
    return "\n".join(out)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)

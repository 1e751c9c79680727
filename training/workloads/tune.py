"""The tune workload: a hyperparameter search over one GBDT model with Ray Tune.

config -> tracking store -> Ray (fail fast: can the cluster hold the trials?) -> data +
features -> Tuner (Optuna TPE or random, ASHA or FIFO; new, or restored from the storage
path when the run name was used before) -> a nested MLflow run per trial -> the best
trial's model (its checkpoint, or retrained on its config) evaluated and registered like
any GBDT workload's -> summary table and the override that adds it to the ensemble.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import mlflow
import numpy as np
from mlflow.tracking import MlflowClient

from training import cluster, config, observability, report, startup, tracking
from training.config import ClusterConfig, Config, GBDTWorkloadConfig, MemberConfig, TrialMode, TuneWorkloadConfig
from training.data import sources
from training.data.prepare import PreparedData, prepare
from training.errors import UserError
from training.models import gbdt as gbdt_model
from training.tuning import records, space, trials
from training.tuning.records import TrialRecord
from training.workloads import gbdt, members

log = logging.getLogger(__name__)


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


def run(cfg: Config, callbacks: Sequence[Any] = ()) -> TuneResult:
    """`callbacks`: extra Tune callbacks (tests use one to interrupt a search)."""
    w: TuneWorkloadConfig = cfg.workload
    t0 = time.perf_counter()
    run_name = cfg.run_name or gbdt.make_run_name(w.name)
    domains = space.validate_space(w.kind.value, w.space)
    sources.check(cfg.data)
    uri = startup.tracking_and_cluster(cfg.tracking, cfg.cluster)
    # Fail before reading data: `auto` can only become distributed (more workers), so the
    # single-process shape is the least a search needs.
    _concurrency(w, cfg.cluster, TrialMode.local if w.trial.mode is TrialMode.auto else w.trial.mode)
    data = prepare(cfg.data)
    mode = _resolve_mode(w, data.train_rows)
    limit = _concurrency(w, cfg.cluster, mode)
    storage = members.storage_path(cfg.cluster)
    exp_path = f"{storage.rstrip('/')}/{run_name}"
    timings = {"data_s": data.seconds}
    log.info("run %s: tuning %s, %d trials, %d at a time, %s trials (%s), scheduler %s, search %s",
             run_name, w.kind.value, w.num_samples, limit, mode.value, _shape(w, cfg.cluster, mode),
             w.scheduler.type.value, w.search.algorithm.value)

    from ray import tune

    # Tune warns on every forced state snapshot; with a checkpoint per report that is every few seconds.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    resumed = tune.Tuner.can_restore(exp_path)
    client = MlflowClient()
    experiment_id = mlflow.get_experiment_by_name(cfg.tracking.experiment).experiment_id
    parent_id = _parent_run_id(client, experiment_id, run_name) if resumed else None
    # Samples, hours, cost and Ray logs go to the parent run, also when the search fails.
    with observability.observe(cfg.observability) as obs, \
            mlflow.start_run(run_id=parent_id, run_name=None if parent_id else run_name,
                             tags={"workload": w.name}) as parent, obs.recording():
        if parent_id is None:
            tracking.log_params(config.flatten(cfg))
            mlflow.log_text(config.to_yaml(cfg), "config.yaml")
            mlflow.log_metrics({"train_rows": data.train_rows, "valid_rows": data.valid_rows})
        else:
            log.info("resuming search %s from %s (MLflow run %s)", run_name, exp_path, parent_id)
        t_tune = time.perf_counter()
        trainable = _trainable(w, cfg, data, mode, storage, run_name)
        logger = records.TrialLogger(experiment_id, parent.info.run_id, w.kind.value, w.num_boost_round)
        if resumed:
            tuner = tune.Tuner.restore(exp_path, trainable=trainable, resume_unfinished=True, resume_errored=True)
        else:
            tuner = tune.Tuner(trainable, param_space=space.to_tune(domains),
                               tune_config=_tune_config(w, cfg.seed, limit, domains),
                               run_config=tune.RunConfig(
                                   name=run_name, storage_path=storage, verbose=0,
                                   callbacks=[logger, *callbacks],
                                   failure_config=tune.FailureConfig(max_failures=cfg.cluster.max_failures),
                                   checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))
        grid = tuner.fit()
        timings["tune_s"] = time.perf_counter() - t_tune
        recs = _records(grid, w)
        _check_complete(grid, recs, w, run_name)
        _log_missing_children(client, experiment_id, parent.info.run_id, w.kind.value, recs)
        ok = [r for r in recs if r.status != "error" and r.value is not None]
        if not ok:
            raise RuntimeError(f"all {len(recs)} trials failed; first error: {recs[0].error}")
        best = ok[0]
        t_best = time.perf_counter()
        trained = _best_member(best, w, cfg, data, mode, run_name)
        model, metrics = gbdt.evaluate(data, [trained])
        rounds, params = space.split(w.kind.value, best.sampled, w.params, w.num_boost_round)
        override = ensemble_override(w.kind.value, rounds, params)
        _log_search(recs, best, metrics[trained.name], timings, override, exp_path, w)
        model_uri = gbdt._log_model(cfg, model, data, parent.info.run_id, [trained])
        timings["best_model_s"] = time.perf_counter() - t_best
        timings["total_s"] = time.perf_counter() - t0
        mlflow.log_metrics(timings)
    _write_override(exp_path, override)
    result = TuneResult(parent.info.run_id, run_name, uri, exp_path, recs, best, params, rounds,
                        metrics[trained.name], mode.value, limit, resumed, model_uri, override, timings)
    print(summary(cfg, result))
    if obs.summary_line():
        print(obs.summary_line())
    if cfg.promote.enabled:  # the same champion/challenger gate as the GBDT workloads
        from training import promote

        promote.after_run(cfg, model_uri, data.valid_raw)
    return result


def _resolve_mode(w: TuneWorkloadConfig, train_rows: int) -> TrialMode:
    if w.trial.mode is not TrialMode.auto:
        return w.trial.mode
    # A single process avoids a Train run's worker start and per-report round trips; split
    # the data only when one worker's share would be large.
    if train_rows <= w.trial.local_max_rows or w.trial.workers == 1:
        return TrialMode.local
    return TrialMode.distributed


def _shape(w: TuneWorkloadConfig, c: ClusterConfig, mode: TrialMode) -> str:
    workers = w.trial.workers if mode is TrialMode.distributed else 1
    gpu = f" + {c.gpus_per_worker} GPU" if c.gpus_per_worker else ""
    return f"{workers} worker(s) x ({c.cpus_per_worker} CPU{gpu})"


def _concurrency(w: TuneWorkloadConfig, c: ClusterConfig, mode: TrialMode) -> int:
    """How many trials run at once; a one-line error when the cluster can never hold what is asked."""
    workers = w.trial.workers if mode is TrialMode.distributed else 1
    deadline = time.monotonic() + c.resource_wait_s
    while True:
        cap = cluster.capacity()
        fit = cluster.workers_that_fit(cap, c.cpus_per_worker, c.gpus_per_worker) // workers
        if fit >= 1 or time.monotonic() >= deadline:
            break
        time.sleep(5)
    if fit < 1:
        raise UserError(f"one {mode.value} trial needs {_shape(w, c, mode)} but the cluster ({cap.describe()}) "
                        f"cannot hold it: lower workload.trial.workers or cluster.cpus_per_worker/gpus_per_worker")
    asked = w.max_concurrent_trials
    if asked and asked > fit and c.resource_wait_s <= 0:
        raise UserError(f"workload.max_concurrent_trials={asked} but the cluster ({cap.describe()}) holds at most "
                        f"{fit} trial(s) of {_shape(w, c, mode)} at once; lower it (or null = {fit}), or on an "
                        f"autoscaling cluster set cluster.resource_wait_s > 0")
    return max(1, min(asked or fit, w.num_samples))


def _tune_config(w: TuneWorkloadConfig, seed: int, limit: int, domains) -> Any:
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    s = w.search
    search_seed = s.seed if s.seed is not None else seed
    if s.algorithm.value == "tpe":
        # constant_liar: concurrent trials do not all get proposed the same point.
        sampler = optuna.samplers.TPESampler(seed=search_seed, n_startup_trials=s.startup_trials,
                                             constant_liar=True)
    else:
        sampler = optuna.samplers.RandomSampler(seed=search_seed)
    if w.scheduler.type.value == "asha":
        max_t = w.scheduler.max_t or space.max_rounds(domains, w.num_boost_round)
        # time_attr=round: rungs, grace period and max_t are boosting rounds, not report counts.
        scheduler = ASHAScheduler(time_attr="round", max_t=max_t, grace_period=min(w.scheduler.grace_period, max_t),
                                  reduction_factor=w.scheduler.reduction_factor)
    else:
        scheduler = FIFOScheduler()
    # metric/mode are set here only: setting them on the searcher or scheduler too is an error.
    return tune.TuneConfig(metric=trials.METRIC, mode="min", search_alg=OptunaSearch(sampler=sampler),
                           scheduler=scheduler, num_samples=w.num_samples, max_concurrent_trials=limit,
                           # A new trial reuses a finished trial's process: no Python start + imports.
                           reuse_actors=True)


def _trainable(w: TuneWorkloadConfig, cfg: Config, data: PreparedData, mode: TrialMode, storage: str,
               run_name: str):
    from ray import tune

    c = cfg.cluster
    # The GBDT workloads' per-worker loop config, for a one-member workload shaped like a trial.
    template = MemberConfig(name="trial", kind=w.kind, num_boost_round=w.num_boost_round, params={})
    shape = GBDTWorkloadConfig(name=w.name, members=[template], checkpoint_every=w.checkpoint_every)
    setup = {"kind": w.kind.value, "fixed_params": dict(w.params), "fixed_rounds": w.num_boost_round,
             "loop": members.member_loop_config(template, shape, c, data, cfg.seed), "cpus": c.cpus_per_worker,
             "gpus": c.gpus_per_worker, "workers": w.trial.workers, "max_failures": c.max_failures,
             "train_storage": f"{storage.rstrip('/')}/{run_name}-train"}
    if mode is TrialMode.local:
        fn = tune.with_parameters(trials.local_trial, setup=setup, data=_arrays(data))
        resources = {"CPU": c.cpus_per_worker, "GPU": c.gpus_per_worker}
    else:
        if data.materialized:
            shards = {"train": data.train.split(w.trial.workers, equal=True),
                      "valid": data.valid.split(w.trial.workers, equal=True)}
            datasets: Dict[str, Any] = {}
        else:
            shards, datasets = None, {"train": data.train, "valid": data.valid}
        fn = tune.with_parameters(trials.distributed_trial, setup=setup, shards=shards, datasets=datasets)
        # The trial only drives its Train run and the workers hold the CPUs: a CPU for the driver
        # would leave a fully packed node one short. Tune needs some resource, so it asks for
        # memory; max_concurrent_trials keeps the number of drivers to what the workers can use.
        resources = {"memory": 256 * 1024 ** 2}
    return tune.with_resources(fn, resources)


def _arrays(data: PreparedData) -> Dict[str, np.ndarray]:
    """Both splits as float32 matrices, shipped to the object store once for every local trial."""
    features, label = list(data.pipeline.output_features), data.pipeline.target
    out = {}
    for name, ds in (("train", data.train), ("valid", data.valid)):
        df = ds.to_pandas()
        out[f"x_{name}"] = df[features].to_numpy(np.float32)
        out[f"y_{name}"] = df[label].to_numpy(np.float32)
    return out


def _parent_run_id(client: MlflowClient, experiment_id: str, run_name: str) -> Optional[str]:
    """The parent run of an earlier attempt of this search, if this store has one."""
    runs = client.search_runs([experiment_id], filter_string=f"attributes.run_name = '{run_name}' "
                                                             f"and tags.workload = 'tune'",
                              order_by=["attributes.start_time DESC"])
    runs = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return runs[0].info.run_id if runs else None


def _records(grid, w: TuneWorkloadConfig) -> List[TrialRecord]:
    """Every trial of the result grid, best first (errored and unscored last)."""
    recs = []
    for result in grid:
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or Path(result.path).name
        recs.append(records.make_record(trial_id, result.config or {}, metrics, result.checkpoint, result.error,
                                        w.num_boost_round))
    return sorted(recs, key=lambda r: (r.status == "error", r.value is None, r.value or 0.0))


def _check_complete(grid, recs: List[TrialRecord], w: TuneWorkloadConfig, run_name: str) -> None:
    ended = grid.num_terminated + grid.num_errors
    if ended < w.num_samples:
        log.warning("search %s interrupted after %d of %d trials; rerun with run_name=%s to resume it",
                    run_name, ended, w.num_samples, run_name)
        raise SearchInterrupted(f"search {run_name} interrupted after {ended}/{w.num_samples} trials")


def _log_missing_children(client, experiment_id: str, parent_id: str, kind: str, recs: List[TrialRecord]) -> None:
    """Trials the live callback did not log (an MLflow hiccup, an earlier interrupted attempt)."""
    done = records.logged_trials(client, experiment_id, parent_id)
    for rec in recs:
        if rec.trial_id not in done:
            records.log_trial(client, experiment_id, parent_id, kind, rec)


def _best_member(best: TrialRecord, w: TuneWorkloadConfig, cfg: Config, data: PreparedData, mode: TrialMode,
                 run_name: str) -> members.TrainedMember:
    """The best trial's model from its checkpoint; retrained on its config if there is none."""
    name = f"tuned_{w.kind.value}"
    rounds, params = space.split(w.kind.value, best.sampled, w.params, w.num_boost_round)
    if best.checkpoint is not None:
        try:
            with best.checkpoint.as_directory() as d:
                import json
                state = json.loads(Path(d, gbdt_model.STATE_FILE).read_text())
                model = Path(d, gbdt_model.MODEL_FILES[w.kind.value]).read_bytes()
            return members.TrainedMember(name, w.kind.value, state["rounds"], best.seconds, model,
                                         state["history"], params)
        except (OSError, KeyError, ValueError) as exc:
            log.warning("best trial %s: checkpoint unreadable (%s); retraining its config", best.trial_id, exc)
    # The best trial's own length: what it reached (ASHA may have stopped it), not what it was given.
    rounds = best.rounds_done or rounds
    log.info("best trial %s has no checkpoint: retraining %d rounds on its config", best.trial_id, rounds)
    workers = w.trial.workers if mode is TrialMode.distributed else 1
    member = MemberConfig(name=name, kind=w.kind, num_boost_round=rounds, params=params)
    workload = GBDTWorkloadConfig(name=w.name, members=[member], checkpoint_every=w.checkpoint_every)
    c = dataclasses.replace(cfg.cluster, num_workers=workers)
    return members.train_all(workload, c, data, f"{run_name}-best", 1, cfg.seed)[0]


def ensemble_override(kind: str, rounds: int, params: Dict[str, Any], conf: Optional[List[str]] = None) -> str:
    """`workload.members=[...]`: the ensemble's members plus the tuned one, as one Hydra override."""
    ensemble = config.load(["workload=ensemble", *(conf or [])]).workload
    items = [_member_yaml(m.name, m.kind.value, m.num_boost_round, m.params) for m in ensemble.members]
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


def _write_override(exp_path: str, override: str) -> None:
    """Next to Tune's state: `python -m training workload=ensemble "$(cat <path>)"`."""
    import pyarrow.fs

    try:
        fs, path = pyarrow.fs.FileSystem.from_uri(exp_path) if "://" in exp_path else (pyarrow.fs.LocalFileSystem(),
                                                                                        exp_path)
        with fs.open_output_stream(f"{path}/ensemble_override.txt") as f:
            f.write((override + "\n").encode())
    except Exception as exc:  # the override is also an MLflow artifact; a storage hiccup is not fatal
        log.warning("could not write %s/ensemble_override.txt: %s", exp_path, exc)


def _log_search(recs: List[TrialRecord], best: TrialRecord, best_metrics: Dict[str, float],
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
    out = ["", f"Search {result.run_name}{' (resumed)' if result.resumed else ''}: {len(result.trials)} trials "
               f"({counts['finished']} finished, {counts['stopped']} stopped early by ASHA, {counts['error']} failed), "
               f"{result.concurrency} at a time, {result.mode} trials; search {t['tune_s']:.1f}s "
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

"""The tune workload: a hyperparameter search over one GBDT library with Ray Tune.

config -> Ray and MLflow (fail fast: can the cluster hold a trial?) -> data + features -> Tuner
(Optuna TPE or random, ASHA or FIFO; new, or restored from the storage path when the run name
was used before) -> a nested MLflow run per trial -> the best trial's model (its checkpoint, or
retrained on its config) evaluated and registered like any GBDT workload's -> summary and the
override that adds it to the ensemble (training/tune/results.py).

Trials take their shape from `cluster` like every workload: a local trial is one process with
`cluster.cpus_per_worker` threads, a distributed one a Ray Train run on `cluster.num_workers`
workers of that shape.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from typing import Any, Dict, Optional, Sequence

import mlflow
from mlflow.tracking import MlflowClient

from training.config import Config
from training.data import sources
from training.data.prepare import PreparedData, prepare
from training.errors import TrainingError, UserError
from training.gbdt import artifact, scoring, shard, slots
from training.gbdt.shard import Shard
from training.gbdt.config import GBDTWorkloadConfig, MemberConfig
from training.runtime import cluster, workers
from training.ops.held_out import check_held_out
from training.runtime.run import Run
from training.settings import ClusterConfig
from training.tune import records, results, space, trials
from training.tune.config import TrialMode, TuneWorkloadConfig

log = logging.getLogger(__name__)

SEARCH_ATTEMPT = "search_attempt_s"  # the parent's metric: one point per attempt of the search


def fit_keeping_ctrl_c(tuner):
    """`tuner.fit()`, with the program's own Ctrl-C handler back once the search ends. Ray Tune
    installs its own for the search (the first Ctrl-C ends the search with its state saved) and
    leaves it installed: the first Ctrl-C afterwards, while the best model is retrained and
    registered, would only log "ending Ray Tune run" and stop nothing."""
    if threading.current_thread() is not threading.main_thread():  # Tune installs none there
        return tuner.fit()
    before = signal.getsignal(signal.SIGINT)
    try:
        return tuner.fit()
    finally:
        signal.signal(signal.SIGINT, before)


def run(cfg: Config, callbacks: Sequence[Any] = ()) -> results.TuneResult:
    """`callbacks`: extra Tune callbacks (tests use one to interrupt a search)."""
    w: TuneWorkloadConfig = cfg.workload
    run = Run(cfg)
    domains = space.validate_space(w.kind, w.space)
    def check() -> None:  # bad data fails here, before a cluster or a run exists
        sources.check(cfg.data)
        check_held_out(cfg)

    run.start(check, artifact.warm_imports)
    # Fail before reading data: `auto` can only become distributed (more workers), so the
    # single-process shape is the least a search needs.
    _concurrency(w, cfg.cluster, TrialMode.local if w.trial.mode is TrialMode.auto else w.trial.mode,
                 not cfg.data.materialize)
    with run.observed():
        data = prepare(cfg.data)
        run.timings["data_s"] = data.seconds
        mode = _resolve_mode(w, cfg.cluster, data.train_rows)
        limit = _concurrency(w, cfg.cluster, mode, not cfg.data.materialize)
        storage = workers.storage_path(cfg.cluster)
        exp_path = workers.storage_join(storage, run.name)
        log.info("run %s: tuning %s, %d trials, %d at a time, %s trials (%s), scheduler %s, search %s",
                 run.name, w.kind, w.num_samples, limit, mode.value, _shape(cfg.cluster, mode),
                 w.scheduler.type.value, w.search.algorithm.value)

        from ray import tune

        # Tune warns on every forced state snapshot; with a checkpoint per report that is every few seconds.
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
        resumed = tune.Tuner.can_restore(exp_path)
        client = MlflowClient()
        experiment_id = mlflow.get_experiment_by_name(cfg.tracking.experiment).experiment_id
        parent_id = _parent_run_id(client, experiment_id, run.name) if resumed else None
        if parent_id:
            log.info("resuming search %s from %s (MLflow run %s)", run.name, exp_path, parent_id)
        with run.parent(resume_run_id=parent_id, metrics={"train_rows": data.train_rows,
                                                          "valid_rows": data.valid_rows}) as parent:
            # A resumed search's time is that of all its attempts: each logs its own to the parent.
            attempts = [m.value for m in client.get_metric_history(parent.info.run_id, SEARCH_ATTEMPT)]
            started = time.perf_counter()
            try:
                trainable = _trainable(w, cfg, data, mode, storage, run.name)
                logger = records.TrialLogger(experiment_id, parent.info.run_id, w.kind, w.num_boost_round)
                if resumed:
                    tuner = tune.Tuner.restore(exp_path, trainable=trainable, resume_unfinished=True,
                                               resume_errored=True)
                else:
                    tuner = tune.Tuner(trainable, param_space=space.to_tune(domains),
                                       tune_config=_tune_config(w, cfg.seed, limit, domains, mode),
                                       run_config=tune.RunConfig(
                                           name=run.name, storage_path=storage, verbose=0,
                                           callbacks=[logger, *callbacks],
                                           failure_config=tune.FailureConfig(max_failures=cfg.cluster.max_failures),
                                           checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))
                grid = fit_keeping_ctrl_c(tuner)
            finally:
                this_attempt = time.perf_counter() - started
                with contextlib.suppress(Exception):  # an unreachable store is reported where it matters
                    client.log_metric(parent.info.run_id, SEARCH_ATTEMPT, this_attempt, step=len(attempts))
            run.timings.update(tune_s=sum(attempts) + this_attempt, search_attempts=len(attempts) + 1)
            recs = results.records_of(grid, w)
            try:
                results.check_complete(grid, recs, w, run.name)
            except results.SearchInterrupted:
                with contextlib.suppress(Exception):  # an unreachable store: the interruption is what matters
                    records.close_unfinished(client, experiment_id, parent.info.run_id)
                raise
            results.log_missing_children(client, experiment_id, parent.info.run_id, w.kind, recs)
            ok = [r for r in recs if r.status != "error" and r.value is not None]
            if not ok:
                raise TrainingError(f"all {len(recs)} trials failed; first error: {recs[0].error}")
            best = ok[0]
            with run.phase("best_model_s"):
                trained = results.best_member(best, w, cfg, data, mode, run.name)
                model, metrics = scoring.evaluate(data, [trained])
                rounds, params = space.split(w.kind, best.sampled, w.params, w.num_boost_round)
                override = results.ensemble_override(w.kind, rounds, params)
                results.log_search(recs, best, metrics[trained.name], run.timings, override, exp_path, w)
                logged = artifact.log_model(model, data, [trained], w.name)
                if w.register:
                    run.register_when_finished(logged, w.registered_model_name)
    results.write_override(exp_path, override)
    result = results.TuneResult(parent.info.run_id, run.name, run.tracking_uri, exp_path, recs, best, params,
                                rounds, metrics[trained.name], mode.value, limit, resumed, run.model_uri, override,
                                run.timings)
    summary = results.summary(cfg, result)
    run.finish(summary + (f"\n{run.usage()}" if run.usage() else ""), run.model_uri, data.valid_raw)
    return result


def _resolve_mode(w: TuneWorkloadConfig, c: ClusterConfig, train_rows: int) -> TrialMode:
    if w.trial.mode is not TrialMode.auto:
        return w.trial.mode
    # A single process avoids a Train run's worker start and per-report round trips; split
    # the data only when one worker's share would be large.
    if train_rows <= w.trial.local_max_rows or c.num_workers == 1:
        return TrialMode.local
    return TrialMode.distributed


def _shape(c: ClusterConfig, mode: TrialMode) -> str:
    workers = c.num_workers if mode is TrialMode.distributed else 1
    gpu = f" + {c.gpus_per_worker} GPU" if c.gpus_per_worker else ""
    return f"{workers} worker(s) x ({c.cpus_per_worker} CPU{gpu})"


def _concurrency(w: TuneWorkloadConfig, c: ClusterConfig, mode: TrialMode, streaming: bool) -> int:
    """How many trials run at once; a one-line error when the cluster can never hold what is asked.
    `streaming`: distributed trials read unmaterialized data while they train (one CPU kept for it)."""
    workers = c.num_workers if mode is TrialMode.distributed else 1
    streaming = streaming and mode is TrialMode.distributed
    deadline = time.monotonic() + c.resource_wait_s
    while True:
        cap = cluster.capacity()
        usable = cluster.less_one_cpu(cap) if streaming else cap
        fit = cluster.workers_that_fit(usable, c.cpus_per_worker, c.gpus_per_worker) // workers
        if fit >= 1 or time.monotonic() >= deadline:
            break
        time.sleep(5)
    if fit < 1:
        raise UserError(f"one {mode.value} trial needs {_shape(c, mode)} but the cluster ({cap.describe()}) "
                        f"cannot hold it{' (' + cluster.STREAMING_NOTE + ')' if streaming else ''}: lower "
                        "cluster.num_workers or cluster.cpus_per_worker/gpus_per_worker"
                        + (" or set data.materialize=true" if streaming else ""))
    asked = w.max_concurrent_trials
    if asked and asked > fit and c.resource_wait_s <= 0:
        raise UserError(f"workload.max_concurrent_trials={asked} but the cluster ({cap.describe()}) holds at most "
                        f"{fit} trial(s) of {_shape(c, mode)} at once; lower it (or null = {fit}), or on an "
                        f"autoscaling cluster set cluster.resource_wait_s > 0")
    return max(1, min(asked or fit, w.num_samples))


def _tune_config(w: TuneWorkloadConfig, seed: int, limit: int, domains, mode: TrialMode) -> Any:
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
                           # A new local trial reuses a finished trial's process: no Python start + imports.
                           # A distributed trial that ASHA stops is still in its Train run's fit(), so its
                           # process cannot be reused: the next trial placed there would fail, and the search hang.
                           reuse_actors=mode is TrialMode.local)


def _trainable(w: TuneWorkloadConfig, cfg: Config, data: PreparedData, mode: TrialMode, storage: str,
               run_name: str):
    from ray import tune

    c = cfg.cluster
    # The GBDT workloads' per-worker loop config, for a one-member workload shaped like a trial.
    template = MemberConfig(name="trial", kind=w.kind, num_boost_round=w.num_boost_round, params={})
    shape = GBDTWorkloadConfig(name=w.name, members=[template], checkpoint_every=w.checkpoint_every)
    setup = {"kind": w.kind, "fixed_params": dict(w.params), "fixed_rounds": w.num_boost_round,
             "loop": slots.member_loop_config(template, shape, c, data, cfg.seed), "cluster": c,
             "train_storage": workers.storage_join(storage, f"{run_name}-train"),
             "train_settings": workers.train_settings()}
    if mode is TrialMode.local:
        fn = tune.with_parameters(trials.local_trial, setup=setup, data=_shards(data))
        resources = {"CPU": c.cpus_per_worker, "GPU": c.gpus_per_worker}
    else:
        if data.materialized:
            shards = {"train": data.train.split(c.num_workers, equal=True),
                      "valid": data.valid.split(c.num_workers, equal=True)}
            datasets: Dict[str, Any] = {}
        else:
            shards, datasets = None, {"train": data.train, "valid": data.valid}
        fn = tune.with_parameters(trials.distributed_trial, setup=setup, shards=shards, datasets=datasets)
        # The trial only drives its Train run and the workers hold the CPUs: a CPU for the driver
        # would leave a fully packed node one short. Tune needs some resource, so it asks for
        # memory; max_concurrent_trials keeps the number of drivers to what the workers can use.
        resources = {"memory": 256 * 1024 ** 2}
    return tune.with_resources(fn, resources)


def _shards(data: PreparedData) -> Dict[str, Shard]:
    """Both splits whole, as Arrow columns: shipped to the object store once, every local trial
    reads them from there without a copy."""
    features, label = list(data.pipeline.output_features), data.pipeline.target
    return {name: shard.read(ds, features, label) for name, ds in (("train", data.train), ("valid", data.valid))}


def _parent_run_id(client: MlflowClient, experiment_id: str, run_name: str) -> Optional[str]:
    """The parent run of an earlier attempt of this search, if this store has one."""
    runs = client.search_runs([experiment_id], filter_string=f"attributes.run_name = '{run_name}' "
                                                             f"and tags.workload = 'tune'",
                              order_by=["attributes.start_time DESC"])
    runs = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return runs[0].info.run_id if runs else None

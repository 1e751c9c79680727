"""Train GBDT members with Ray Train, several at once when the cluster has room for more than one.

`fit()` blocks, so each member's trainer runs from its own zero-CPU Ray task; the driver keeps
at most `concurrent` of them in flight. The task returns the final booster bytes and the
validation curve read from the last checkpoint, so the driver never needs the storage path.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import ray

from training.config import ClusterConfig, ClusterMode, GBDTWorkloadConfig, MemberConfig
from training.data.prepare import PreparedData
from training.models import gbdt

log = logging.getLogger(__name__)
METRIC = "rmse"


@dataclass
class TrainedMember:
    name: str
    kind: str
    rounds: int
    seconds: float
    model_bytes: bytes
    history: List[float]
    params: Dict[str, Any] = field(default_factory=dict)
    started_at: float = 0.0      # wall-clock epoch seconds, to show which members overlapped
    finished_at: float = 0.0

    def booster(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, gbdt.MODEL_FILES[self.kind])
            Path(path).write_bytes(self.model_bytes)
            if self.kind == "xgboost":
                import xgboost as xgb
                b = xgb.Booster()
                b.load_model(path)
                return b
            import lightgbm as lgb
            return lgb.Booster(model_file=path)


class MemberTrainingError(RuntimeError):
    """A member failed after Ray Train's retries; the message names the member and the cause."""


def storage_path(cluster: ClusterConfig) -> str:
    return cluster.storage_path if "://" in cluster.storage_path else str(Path(cluster.storage_path).resolve())


def loop_config(member: MemberConfig, workload: GBDTWorkloadConfig, cluster: ClusterConfig,
                data: PreparedData, seed: int) -> Dict[str, Any]:
    return {"member": member.name, "kind": member.kind.value, "params": dict(member.params),
            "num_boost_round": member.num_boost_round, "checkpoint_every": workload.checkpoint_every,
            "features": list(data.pipeline.output_features), "categorical": data.pipeline.categorical_features,
            "label": data.pipeline.target, "threads": cluster.cpus_per_worker,
            "use_gpu": cluster.gpus_per_worker > 0, "seed": seed, "metric": METRIC,
            "kill_worker_at_round": workload.kill_worker_at_round}


@ray.remote(num_cpus=0, max_retries=0)
def _fit(kind: str, train_loop_config: Dict[str, Any], cluster: ClusterConfig, run_name: str, storage: str,
         datasets: Dict[str, ray.data.Dataset]):
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig

    if kind == "xgboost":
        from ray.train.xgboost import XGBoostTrainer as Trainer
    else:
        from ray.train.lightgbm import LightGBMTrainer as Trainer
    resources = {"CPU": cluster.cpus_per_worker}
    if cluster.gpus_per_worker:
        resources["GPU"] = cluster.gpus_per_worker
    trainer = Trainer(
        gbdt.train_fn, train_loop_config=train_loop_config, datasets=datasets,
        scaling_config=ScalingConfig(num_workers=cluster.num_workers, use_gpu=cluster.gpus_per_worker > 0,
                                     resources_per_worker=resources),
        # Same name + storage path = resume from the latest checkpoint (a RayJob retry, a rerun).
        run_config=RunConfig(name=run_name, storage_path=storage,
                             # Worker errors and failed restarts (e.g. workers that cannot be placed
                             # after a node is lost) both get max_failures retries, then fail.
                             failure_config=FailureConfig(max_failures=cluster.max_failures,
                                                          controller_failure_limit=cluster.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             # Our workers print progress; Ray Train's per-report INFO lines are noise.
                             logging_config=LoggingConfig(log_level="WARNING")))
    started_at, t0 = time.time(), time.perf_counter()
    try:
        result = trainer.fit()
    except Exception as exc:  # TrainingFailedError wraps the worker's exception
        cause = exc.__cause__ or exc
        raise MemberTrainingError(f"member '{train_loop_config['member']}' failed after "
                                  f"{cluster.max_failures} retries: {type(cause).__name__}: "
                                  f"{str(cause).strip().splitlines()[-1] if str(cause).strip() else ''}") from None
    seconds = time.perf_counter() - t0
    with result.checkpoint.as_directory() as d:
        import json
        state = json.loads(Path(d, gbdt.STATE_FILE).read_text())
        model = Path(d, gbdt.MODEL_FILES[kind]).read_bytes()
    return state, model, seconds, started_at, time.time()


def train_all(workload: GBDTWorkloadConfig, cluster: ClusterConfig, data: PreparedData, run_name: str,
              concurrent: int, seed: int) -> List[TrainedMember]:
    """Train every member, at most `concurrent` at a time; results in config order."""
    members = list(workload.members)
    limit = max(1, min(concurrent, workload.max_concurrent_members or concurrent, len(members)))
    log.info("training %d member(s), %d at a time, each on %d worker(s) x %d CPU%s", len(members), limit,
             cluster.num_workers, cluster.cpus_per_worker,
             f" + {cluster.gpus_per_worker} GPU" if cluster.gpus_per_worker else "")
    if data.materialized:
        # Pre-split once: workers read their blocks directly, with no per-trainer split
        # coordinator actors (their start-up cost ~3 s per dataset per member here).
        shards = {"train": data.train.split(cluster.num_workers, equal=True),
                  "valid": data.valid.split(cluster.num_workers, equal=True)}
        datasets = {}
    else:
        shards, datasets = None, {"train": data.train, "valid": data.valid}
    pending = list(enumerate(members))
    running: Dict[Any, int] = {}
    done: Dict[int, TrainedMember] = {}
    while pending or running:
        while pending and len(running) < limit:
            i, m = pending.pop(0)
            cfg = dict(loop_config(m, workload, cluster, data, seed), shards=shards, run_name=run_name)
            # The storage path is resolved here: a relative path means the driver's working dir.
            ref = _fit.options(scheduling_strategy=_on_driver_node(), runtime_env=_train_env(cluster)).remote(
                m.kind.value, cfg, cluster, f"{run_name}-{m.name}", storage_path(cluster), datasets)
            running[ref] = i
            log.info("member %s (%s, %d rounds) started", m.name, m.kind.value, m.num_boost_round)
        ready, _ = ray.wait(list(running), num_returns=1)
        i = running.pop(ready[0])
        m = members[i]
        try:
            state, model, seconds, started_at, finished_at = ray.get(ready[0])
        except ray.exceptions.RayTaskError as exc:
            _cancel(running)
            cause = getattr(exc, "cause", None)
            if isinstance(cause, MemberTrainingError):
                raise MemberTrainingError(str(cause.args[0])) from None
            raise MemberTrainingError(f"member '{m.name}' failed: {str(exc).strip().splitlines()[-1]}") from None
        done[i] = TrainedMember(m.name, m.kind.value, state["rounds"], seconds, model, state["history"],
                                dict(m.params), started_at, finished_at)
        log.info("member %s finished: %d rounds in %.1fs, validation %s %.4f", m.name, state["rounds"],
                 seconds, METRIC, state["history"][-1])
    return [done[i] for i in range(len(members))]


def _train_env(cluster: ClusterConfig) -> Optional[Dict[str, Any]]:
    """Ray Train reads its RAY_TRAIN_* settings in the process that builds the trainer and passes
    them on to the controller; that process is our `_fit` task. On a cluster we joined, its
    environment comes from the raylet (a `ray start` in a pod), not from this driver: hand the
    settings over explicitly. An in-process Ray inherited them from this driver already, and a
    runtime env there would only cost fresh worker processes (measured ~10 s per member)."""
    if cluster.mode is ClusterMode.local:
        return None
    env = {k: v for k, v in os.environ.items() if k.startswith("RAY_TRAIN_")}
    return {"env_vars": env} if env else None


def _on_driver_node():
    """Keep the zero-CPU task that drives a member's fit() beside the driver (the head pod in a
    RayJob): on a worker node, losing that node would kill the fit instead of letting Ray Train
    restart its workers elsewhere."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=True)


def _cancel(running: Dict[Any, int]) -> None:
    for ref in running:
        ray.cancel(ref, force=True)

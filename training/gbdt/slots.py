"""Train GBDT members with Ray Train, several at once when the cluster has room for more than one.

The members are dealt into at most `concurrent` slots (longest first, each to the least loaded
slot); each slot is one Ray Train run whose worker group trains its members one after another.
A fit's start-up (Train controller, worker and synchronisation actors, each a Python process
importing Ray and the GBDT libraries; the slot's trainer, gbdt/trainer.py, leaves out the
helpers it does not use) is several seconds, so a slot pays it once, not once per member.
`fit()` blocks, so each slot's trainer runs from its own zero-CPU Ray task. The task returns each member's booster bytes and validation curve, read
from the last checkpoint, so the driver never needs the storage path.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

import ray

from training.errors import TrainingError, UserError
from training.gbdt import checkpoint, worker
from training.gbdt.config import GBDTWorkloadConfig, MemberConfig
from training.runtime import workers
from training.settings import ClusterConfig, ClusterMode

if TYPE_CHECKING:
    from training.data.prepare import PreparedData

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
    boosted: int = 0             # rounds boosted; more than `rounds` when early stopping kept an earlier one
    # The final model's metrics on the validation split, scored by its workers (empty where none did).
    validation: Dict[str, float] = field(default_factory=dict)

    def booster(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, checkpoint.model_file(self.kind))
            Path(path).write_bytes(self.model_bytes)
            return checkpoint.load_booster(self.kind, path)


class MemberTrainingError(TrainingError):
    """A member failed after Ray Train's retries; the message names the member and the cause."""


def member_config(member: MemberConfig) -> Dict[str, Any]:
    return {"member": member.name, "kind": member.kind, "params": dict(member.params),
            "num_boost_round": member.num_boost_round, "early_stopping_rounds": member.early_stopping_rounds}


def loop_config(members: List[MemberConfig], workload: GBDTWorkloadConfig, cluster: ClusterConfig,
                data: PreparedData, seed: int) -> Dict[str, Any]:
    """`train_fn`'s config for a worker group that trains `members` in turn."""
    return {"members": [member_config(m) for m in members], "checkpoint_every": workload.checkpoint_every,
            "features": list(data.pipeline.output_features), "categorical": data.pipeline.categorical_features,
            "label": data.pipeline.target, "threads": cluster.cpus_per_worker,
            "use_gpu": cluster.gpus_per_worker > 0, "seed": seed, "metric": METRIC,
            "kill_worker_at_round": workload.kill_worker_at_round,
            "memory_budget_mb": workload.shard_memory_budget_mb,
            # Only where Ray's free CPUs are this worker's machine's, and no one else's to take.
            "borrow_idle_cpus": cluster.borrow_idle_cpus and cluster.mode is ClusterMode.local
            and cluster.num_workers == 1 and cluster.gpus_per_worker == 0}


def member_loop_config(member: MemberConfig, workload: GBDTWorkloadConfig, cluster: ClusterConfig,
                       data: PreparedData, seed: int) -> Dict[str, Any]:
    """`train_fn`'s config for a worker group that trains this one member (Tune's trials)."""
    cfg = loop_config([member], workload, cluster, data, seed)
    # Tune starts the next trial on the CPUs a finished one frees: none are idle to borrow.
    return {**{k: v for k, v in cfg.items() if k != "members"}, **cfg["members"][0], "borrow_idle_cpus": False}


def slots(members: List[MemberConfig], n: int) -> List[List[int]]:
    """Member indices dealt into at most n slots: the longest first (boosting rounds as the
    estimate), each to the slot with the fewest rounds so far; config order within a slot."""
    load = [0] * max(1, min(n, len(members)))
    dealt: List[List[int]] = [[] for _ in load]
    for i in sorted(range(len(members)), key=lambda i: -members[i].num_boost_round):
        s = load.index(min(load))
        dealt[s].append(i)
        load[s] += members[i].num_boost_round
    return [sorted(d) for d in dealt if d]


@ray.remote(num_cpus=0, max_retries=0)
def _fit(train_loop_config: Dict[str, Any], cluster: ClusterConfig, run_name: str, storage: str,
         datasets: Dict[str, ray.data.Dataset]):
    from training.gbdt.trainer import SlotTrainer

    members = train_loop_config["members"]
    trainer = SlotTrainer(
        worker.train_fn, train_loop_config=train_loop_config, datasets=datasets,
        # The driver owns an in-process Ray and stops slots through the trainer's abort: no
        # cleaner actor is needed there (see runtime/lean_trainer.py).
        placement_group_cleaner=cluster.mode is not ClusterMode.local,
        scaling_config=workers.scaling_config(cluster), run_config=workers.run_config(cluster, run_name, storage))
    started_at = time.time()
    try:
        result = trainer.fit()
    except Exception as exc:  # TrainingFailedError wraps the worker's exception
        cause = exc.__cause__ or exc
        failed = _failed_member(storage, run_name, members)
        raise MemberTrainingError(f"member '{failed}' failed after "
                                  f"{cluster.max_failures} retries: {type(cause).__name__}: "
                                  f"{str(cause).strip().splitlines()[-1] if str(cause).strip() else ''}") from None
    out = []
    with result.checkpoint.as_directory() as d:
        for m in members:
            state = checkpoint.read_state(d, m["member"])
            model = Path(d, m["member"], checkpoint.model_file(m["kind"])).read_bytes()
            out.append((state, model))
    return out, started_at, time.time()


def _failed_member(storage: str, run_name: str, members: List[Dict[str, Any]]) -> str:
    """The member a failed slot was training: the first one its latest checkpoint has not finished
    (the slot's first member when the checkpoints are in an object store)."""
    # checkpoint_<timestamp> directories (beside them: checkpoint_manager_snapshot.json)
    checkpoints = sorted(p for p in Path(storage, run_name).glob("checkpoint_*") if p.is_dir()) \
        if "://" not in storage else []
    if checkpoints:
        for m in members:
            if not checkpoint.finished(checkpoint.read_state(str(checkpoints[-1]), m["member"]), m):
                return m["member"]
    return members[0]["member"]


def check_rows(data: PreparedData, num_workers: int) -> None:
    """Before any MLflow run: each worker boosts and scores on rows of its own."""
    for split, rows in (("training", data.train_rows), ("validation", data.valid_rows)):
        if rows < num_workers:
            raise UserError(f"the {split} split has {rows} row(s), fewer than cluster.num_workers={num_workers}: "
                            "add rows or train on fewer workers")


def train_all(workload: GBDTWorkloadConfig, cluster: ClusterConfig, data: PreparedData, run_name: str,
              concurrent: int, seed: int,
              on_finished: Optional[Callable[[TrainedMember], None]] = None,
              live: Optional[Tuple[str, Dict[str, str]]] = None) -> List[TrainedMember]:
    """Train every member, at most `concurrent` at a time; results in config order.
    `on_finished` sees each member as its slot ends, while the other slots still train.
    `live`: (tracking URI, member name -> MLflow run id) that workers log validation curves to."""
    members = list(workload.members)
    limit = max(1, min(concurrent, workload.max_concurrent_members or concurrent, len(members)))
    groups = slots(members, limit)
    log.info("training %d member(s) in %d slot(s) (%s), each slot on %d worker(s) x %d CPU%s", len(members),
             len(groups), "; ".join(", ".join(members[i].name for i in g) for g in groups),
             cluster.num_workers, cluster.cpus_per_worker,
             f" + {cluster.gpus_per_worker} GPU" if cluster.gpus_per_worker else "")
    if data.materialized:
        # Pre-split once: workers read their blocks directly, with no per-trainer split
        # coordinator actors, one per dataset per member otherwise. Equal shards: Ray Data
        # leaves out up to num_workers - 1 rows of each split to make them so.
        shards = {"train": data.train.split(cluster.num_workers, equal=True),
                  "valid": data.valid.split(cluster.num_workers, equal=True)}
        datasets = {}
    else:
        shards, datasets = None, {"train": data.train, "valid": data.valid}
    running: Dict[Any, List[int]] = {}
    for group in groups:
        slot_members = [members[i] for i in group]
        cfg = dict(loop_config(slot_members, workload, cluster, data, seed), shards=shards)
        if live:
            cfg["tracking_uri"] = live[0]
            for m in cfg["members"]:
                m["mlflow_run_id"] = live[1].get(m["member"])
        name = f"{run_name}-{'+'.join(m.name for m in slot_members)}"
        # The storage path is resolved here: a relative path means the driver's working dir.
        ref = _fit.options(scheduling_strategy=_on_driver_node(), runtime_env=_train_env(cluster)).remote(
            cfg, cluster, name, workers.storage_path(cluster), datasets)
        running[ref] = group
        log.info("slot started: %s", ", ".join(f"{m.name} ({m.kind}, {m.num_boost_round} rounds)"
                                             for m in slot_members))
    done: Dict[int, TrainedMember] = {}
    try:
        _collect(running, members, done, on_finished)
    except BaseException:  # a failed slot, a failing hook, Ctrl-C: stop the slots still training
        _cancel(running)
        raise
    return [done[i] for i in range(len(members))]


def _collect(running: Dict[Any, List[int]], members: List[MemberConfig], done: Dict[int, TrainedMember],
             on_finished: Optional[Callable[[TrainedMember], None]]) -> None:
    while running:
        ready, _ = ray.wait(list(running), num_returns=1)
        group = running.pop(ready[0])
        try:
            results, slot_started, slot_finished = ray.get(ready[0])
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, MemberTrainingError):
                raise MemberTrainingError(str(cause.args[0])) from None
            raise MemberTrainingError(f"member '{members[group[0]].name}' failed: "
                                      f"{str(exc).strip().splitlines()[-1]}") from None
        for k, (i, (state, model)) in enumerate(zip(group, results)):
            m = members[i]
            # The slot's first member also carries the worker group's start-up, unless it had
            # finished before this slot started (a rerun that carried it over).
            carried = state.get("finished_at", slot_finished) < slot_started
            started = slot_started if k == 0 and not carried else state.get("started_at", slot_started)
            finished = state.get("finished_at", slot_finished)
            done[i] = TrainedMember(m.name, m.kind, state["rounds"], finished - started, model,
                                    state["history"], dict(m.params), started, finished,
                                    state.get("boosted", state["rounds"]), state.get("validation", {}))
            stopped = f" (the best of {done[i].boosted})" if done[i].boosted > done[i].rounds else ""
            log.info("member %s finished: %d rounds%s in %.1fs, validation %s %.4f", m.name, state["rounds"],
                     stopped, finished - started, METRIC, state["history"][state["rounds"] - 1])
            if on_finished is not None:
                on_finished(done[i])


def _train_env(cluster: ClusterConfig) -> Optional[Dict[str, Any]]:
    """Ray Train reads its RAY_TRAIN_* settings in the process that builds the trainer and passes
    them on to the controller; that process is our `_fit` task. On a cluster we joined, its
    environment comes from the raylet (a `ray start` in a pod), not from this driver: hand the
    settings over explicitly. An in-process Ray inherited them from this driver already, and a
    runtime env there would only cost fresh worker processes for every member."""
    if cluster.mode is ClusterMode.local:
        return None
    env = workers.train_settings()
    return {"env_vars": env} if env else None


def _on_driver_node():
    """Keep the zero-CPU task that drives a member's fit() beside the driver (the head pod in a
    RayJob): on a worker node, losing that node would kill the fit instead of letting Ray Train
    restart its workers elsewhere."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=True)


# How long a cancelled slot gets to abort its run before its task is killed.
ABORT_TIMEOUT_S = 30.0


def _cancel(running: Dict[Any, List[int]]) -> None:
    """Stop the slots still training. A plain cancel interrupts the slot's task, and Ray Train's
    interrupt handler in `fit()` aborts the run: the controller stops its workers and removes
    their placement group, so the CPUs are free again for whatever this driver runs next (a
    notebook, a test session). A slot still running after ABORT_TIMEOUT_S is killed; its
    controller dies with it (on a joined cluster, Ray's cleaner actor then frees the placement
    group; on an in-process Ray, the end of the driver does)."""
    refs = list(running)
    for ref in refs:
        ray.cancel(ref)
    _, left = ray.wait(refs, num_returns=len(refs), timeout=ABORT_TIMEOUT_S)
    for ref in left:
        ray.cancel(ref, force=True)

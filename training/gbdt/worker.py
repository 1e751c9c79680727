"""The Ray Train worker loop of the GBDT workloads: shards in, boosters and checkpoints out.

Runs in every Ray Train worker: reads its shard of the preprocessed splits, boosts each of its
members through the member's kind (training/gbdt/kinds/), and reports metrics plus a checkpoint
every `checkpoint_every` rounds (training/gbdt/reporting.py). After a failure it resumes from
the latest checkpoint and boosts only the remaining rounds.

One worker group can train several members in sequence (`cfg["members"]`): the data is loaded
once and the group's start-up is paid once. Each member's files are then a subdirectory of the
checkpoint, and a finished member's files ride along in every later checkpoint.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from training.gbdt import checkpoint, kinds, shard
from training.gbdt.reporting import SparseReporter, read_files
from training.gbdt.shard import Shard
from training.runtime.memory import training_allocator
from training.runtime.workers import quiet_worker_logs


def read_shard(cfg: Dict[str, Any], name: str) -> Shard:
    """This worker's shard of a dataset, as Arrow columns (training/gbdt/shard.py).

    With pre-split shards (materialized data) the worker reads its blocks straight from the
    object store; otherwise it streams its part through Ray Train's dataset sharding.
    """
    import ray.train

    if cfg.get("shards"):
        source = cfg["shards"][name][ray.train.get_context().get_world_rank()]
    else:
        source = ray.train.get_dataset_shard(name)
    return shard.read(source, cfg["features"], cfg["label"])


def restore(kind: str, subdir: Optional[str] = None):
    """(rounds done, model to continue from or None, validation history) from Ray Train's checkpoint."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return 0, None, []
    with ckpt.as_directory() as root:
        state = checkpoint.read_state(root, subdir)
        if state is None:  # this member had not started yet
            return 0, None, []
        model = checkpoint.load_booster(kind, os.path.join(root, subdir or "", checkpoint.model_file(kind)))
    print(f"[{state['member']}] resuming from checkpoint at round {state['rounds']}", flush=True)
    return state["rounds"], model, state["history"]


def finished_members(members: List[Dict[str, Any]]) -> Dict[str, Dict[str, bytes]]:
    """Files of the members a resumed worker group had already finished, from its checkpoint."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return {}
    done = {}
    with ckpt.as_directory() as root:
        for m in members:
            if checkpoint.finished(checkpoint.read_state(root, m["member"]), m):
                done[m["member"]] = read_files(os.path.join(root, m["member"]))
    return done


def train_fn(cfg: Dict[str, Any]) -> None:
    """Ray Train worker loop, `cfg` built by the driver from the member config: one GBDT member,
    or each of `cfg["members"]` in turn (member-specific keys there, the data's keys in `cfg`)."""
    import ray.train

    quiet_worker_logs()
    training_allocator()
    members = cfg.get("members")
    # Before anything else imports them (and before a live-metrics thread imports MLflow).
    kinds.import_libraries({m["kind"] for m in members} if members else {cfg["kind"]})
    ctx = ray.train.get_context()
    names = ", ".join(m["member"] for m in members) if members else cfg["member"]
    t0 = time.perf_counter()
    shards = read_shard(cfg, "train"), read_shard(cfg, "valid")
    load_s = time.perf_counter() - t0
    if ctx.get_world_rank() == 0:
        print(f"[{names}] worker 0/{ctx.get_world_size()}: {shards[0].rows:,} train and "
              f"{shards[1].rows:,} validation rows loaded in {load_s:.1f}s", flush=True)
    if not members:
        _train_member(cfg, shards, load_s, ctx)
        return
    finished = finished_members(members)
    shared = {k: v for k, v in cfg.items() if k != "members"}
    for m in members:
        if m["member"] not in finished:
            _train_member({**shared, **m}, shards, load_s, ctx, subdir=m["member"], finished=finished)
            load_s = 0.0  # loaded once, for the first member


def job_for(cfg: Dict[str, Any], shards: Tuple[Shard, Shard], start: int, init_model, rounds: int) -> kinds.TrainJob:
    """A kind's training job from a worker loop config and this worker's (train, valid) shards."""
    return kinds.TrainJob(*shards, features=cfg["features"], categorical=cfg["categorical"], params=cfg["params"],
                          seed=cfg["seed"], metric=cfg["metric"], rounds=rounds, start=start,
                          init_model=init_model, use_gpu=cfg["use_gpu"],
                          memory_budget_mb=cfg.get("memory_budget_mb"))


def _train_member(cfg, shards, load_s: float, ctx, subdir: Optional[str] = None,
                  finished: Optional[Dict[str, Dict[str, bytes]]] = None) -> None:
    kind = kinds.get(cfg["kind"])
    t_start = time.perf_counter()
    start, init_model, history = restore(kind.name, subdir)
    if len(history) > start:  # a model that kept its best round (state "kept_best"): finished
        return
    reporter = SparseReporter(cfg, start, history, subdir, finished,
                              valid_labels=shards[1].labels().to_numpy().astype(np.float32, copy=False))
    reporter.phases["load_s"] = load_s
    remaining = cfg["num_boost_round"] - start
    if remaining <= 0:
        return
    job = job_for(cfg, shards, start, init_model, remaining)
    if ctx.get_world_size() > 1:
        job.distributed = kind.distributed_params(ctx)
    kind.train(job, reporter)
    if ctx.get_world_rank() == 0:
        reports = f"{reporter.reports} report" + ("" if reporter.reports == 1 else "s")
        print(f"[{cfg['member']}] worker 0: build + boost {time.perf_counter() - t_start:.1f}s "
              f"({len(reporter.history) - start} rounds, {reports})", flush=True)

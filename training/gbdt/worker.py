"""The Ray Train worker loop of the GBDT workloads: shards in, boosters and checkpoints out.

Runs in every Ray Train worker: reads its shard of the preprocessed splits, boosts each of its
members through the member's kind (training/gbdt/kinds/), and reports metrics plus a checkpoint
every `checkpoint_every` rounds (each report is a synchronous round trip through the Train
controller, so it reports every N rounds, never every round). After a failure it resumes from
the latest checkpoint and boosts only the remaining rounds.

One worker group can train several members in sequence (`cfg["members"]`): the data is loaded
once and the group's start-up is paid once. Each member's files are then a subdirectory of the
checkpoint, and a finished member's files ride along in every later checkpoint.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

from training.gbdt import checkpoint, kinds, shard, stopping
from training.gbdt.shard import Shard
from training.gbdt.stopping import EarlyStopping
from training.runtime import drill, report
from training.runtime.live import LiveMetrics
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


class ThreadBudget:
    """Threads for one member: its worker's CPUs, plus, with `borrow_idle_cpus` (one machine, one
    worker per slot), the CPUs Ray holds free because other slots have finished. Without it the
    last member of the longest slot boosts on one core of an otherwise idle machine. Checked
    when the member starts and every CHECK_EVERY rounds; both libraries take a new thread count
    between rounds, and their models do not depend on it (XGBoost's hist, LightGBM's
    deterministic=True: tests/test_gbdt_train_fn.py compares predictions with 1 and 2 threads)."""

    CHECK_EVERY = 50

    def __init__(self, cfg: Dict[str, Any]):
        self.own = cfg["threads"]
        self.borrow = bool(cfg.get("borrow_idle_cpus"))
        self.member = cfg["member"]
        self.current = self.own
        self.most = self.own

    def now(self) -> int:
        if self.borrow:
            import ray

            free = int(ray.available_resources().get("CPU", 0))
            total = int(ray.cluster_resources().get("CPU", self.own))
            threads = max(self.own, min(total, self.own + free))
            if threads != self.current:
                print(f"[{self.member}] {threads} threads ({threads - self.own} idle CPU(s) borrowed)"
                      if threads > self.own else f"[{self.member}] back to {threads} thread(s)", flush=True)
            self.current = threads
        self.most = max(self.most, self.current)
        return self.current

    def changed(self, done: int) -> Optional[int]:
        """The new thread count at a check round, when it changed."""
        if not self.borrow or done % self.CHECK_EVERY:
            return None
        before = self.current
        threads = self.now()
        return threads if threads != before else None


class SparseReporter:
    """The round hooks of a member under Ray Train: report every `every` rounds and at the last
    one, rank 0 with a checkpoint, and the thread budget checked between rounds.

    `subdir` puts this member's files in a subdirectory of the checkpoint, beside the files of
    the members trained before it in the same worker group (`finished`: subdir -> file -> bytes);
    at the last round this member's own files are added to `finished`."""

    def __init__(self, cfg: Dict[str, Any], start_round: int, history: List[float],
                 subdir: Optional[str] = None, finished: Optional[Dict[str, Dict[str, bytes]]] = None,
                 valid_rows: int = 0):
        import ray.train

        self.subdir, self.finished = subdir, finished if finished is not None else {}
        self.kind, self.member = cfg["kind"], cfg["member"]
        self.every, self.total = cfg["checkpoint_every"], cfg["num_boost_round"]
        self.metric = cfg["metric"]
        self.start, self.history = start_round, history
        self.budget = ThreadBudget(cfg)
        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.early, self.stopping = EarlyStopping(cfg.get("early_stopping_rounds"), history), False
        # Rank 0 logs the validation curve to the member's MLflow run as it goes.
        self.live = LiveMetrics(cfg.get("tracking_uri"), cfg.get("mlflow_run_id") if self.rank == 0 else None,
                                self.member)
        # Several workers of a library that scores each validation shard alone: agree on one value.
        self.valid_rows = valid_rows if ctx.get_world_size() > 1 and kinds.get(self.kind).local_validation else None
        self.t0 = time.perf_counter()
        self.reports = 0
        self.started_at = time.time()
        # Seconds per phase (load_s, build_s, boost_s), added to the last report's metrics so
        # that benchmarks read them from `Result.metrics` rather than from worker logs.
        self.phases: Dict[str, float] = {}
        self.kill_at = cfg.get("kill_worker_at_round") if self.rank == ctx.get_world_size() - 1 else None
        self.last_report: Optional[Dict[str, Any]] = None  # the drill kills once this is registered

    def threads(self) -> int:
        return self.budget.now()

    def built(self, seconds: float) -> None:
        self.phases["build_s"] = seconds
        self.t0 = time.perf_counter()

    def stop(self) -> bool:
        return self.stopping

    def after_round(self, done: int, valid_value: float, booster) -> Optional[int]:
        if done == self.kill_at:
            drill.kill_once(self.member, f"[{self.member}] fault drill: killing worker {self.rank} "
                            f"(pid {os.getpid()}) at round {done}", self.last_report)
        if self.valid_rows is not None:
            valid_value = stopping.combined(valid_value, self.valid_rows, self.metric)
        self.history.append(float(valid_value))
        self.live.add(f"valid_{self.metric}_curve", done, valid_value)
        self.early.update(done, valid_value)
        self.stopping = self.early.due(done, self.total)
        last = done == self.total or self.stopping
        if done % self.every == 0 or last:
            self._report(done, valid_value, booster, last)
        return None if last else self.budget.changed(done)  # no thread count for rounds never boosted

    def _report(self, done: int, valid_value: float, booster, last: bool) -> None:
        import ray.train

        self.reports += 1
        metrics = {"round": done, f"valid_{self.metric}": float(valid_value)}
        self.last_report = dict(metrics)
        if last:
            metrics.update(self.phases, max_threads=self.budget.most, boost_s=time.perf_counter() - self.t0,
                           peak_rss_mb=_peak_rss_mb())
        if self.rank != 0:
            ray.train.report(metrics)  # every worker must report the same number of times
            return
        if last:
            self.live.close()  # the whole curve written before the member counts as finished
        else:
            self.live.flush()
        rate = (done - self.start) / max(time.perf_counter() - self.t0, 1e-9)
        left = f", {report.eta((self.total - done) / max(rate, 1e-9))}" if not last else ""
        print(f"[{self.member}] round {done}/{self.total} valid-{self.metric}={valid_value:.4f} "
              f"({rate:.0f} rounds/s{left})", flush=True)
        state = {"member": self.member, "rounds": done, "history": self.history, "metric": self.metric,
                 "started_at": self.started_at, "finished_at": time.time()}
        if last:
            # The final model keeps the best round's trees when early stopping is on.
            kept = self.early.kept_rounds(done)
            state.update(rounds=kept, boosted=done)
            if kept < done:  # the rounds after `kept` are gone: this member cannot be resumed
                state["kept_best"] = True
                booster = kinds.get(self.kind).first_rounds(booster, kept)
                print(f"[{self.member}] {'early stop at round ' + str(done) if self.stopping else 'last round'}: "
                      f"keeping the best round, {kept} (valid-{self.metric}={self.early.best_value:.4f})", flush=True)
        with tempfile.TemporaryDirectory() as root:
            for name, files in self.finished.items():
                _write_files(os.path.join(root, name), files)
            d = os.path.join(root, self.subdir) if self.subdir else root
            checkpoint.write(d, self.kind, booster.save_model, state)
            if self.subdir and last:
                self.finished[self.subdir] = _read_files(d)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(root))


def _write_files(d: str, files: Dict[str, bytes]) -> None:
    os.makedirs(d, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


def _read_files(d: str) -> Dict[str, bytes]:
    out = {}
    for name in os.listdir(d):
        with open(os.path.join(d, name), "rb") as f:
            out[name] = f.read()
    return out


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
                done[m["member"]] = _read_files(os.path.join(root, m["member"]))
    return done


def _peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
    reporter = SparseReporter(cfg, start, history, subdir, finished, valid_rows=shards[1].rows)
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

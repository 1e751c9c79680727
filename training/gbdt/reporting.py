"""The round hooks of a GBDT member in a Ray Train worker: reports, checkpoints, the thread budget.

Every `checkpoint_every` rounds and at the last one, every worker reports (each report is a
synchronous round trip through the Train controller, so never every round), rank 0 with a
checkpoint of the model so far; the last report also scores the final model on the
validation split, each worker its own shard, the sums added up across workers.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any, Dict, List, Optional

import numpy as np

from training.gbdt import checkpoint, kinds, metrics as gbdt_metrics, stopping
from training.gbdt.stopping import EarlyStopping
from training.runtime import drill, report
from training.runtime.live import LiveMetrics


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
                 valid_labels: Optional[np.ndarray] = None):
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
                                self.member, once_per_step=True)
        self.valid_labels = valid_labels if valid_labels is not None else np.empty(0, np.float32)
        self.workers = ctx.get_world_size()
        # Several workers of a library that scores each validation shard alone: agree on one value.
        self.valid_rows = len(self.valid_labels) if self.workers > 1 and kinds.get(self.kind).local_validation else None
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

    def after_round(self, done: int, valid_value: float, booster, valid_predictions) -> Optional[int]:
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
            self._report(done, valid_value, booster, valid_predictions if last else None)
        return None if last else self.budget.changed(done)  # no thread count for rounds never boosted

    def _report(self, done: int, valid_value: float, booster, valid_predictions=None) -> None:
        """A report of the round just done; the last one (`valid_predictions` given) also scores the
        final model on the validation split."""
        import ray.train

        last = valid_predictions is not None
        self.reports += 1
        metrics = {"round": done, f"valid_{self.metric}": float(valid_value)}
        self.last_report = dict(metrics)
        if last:
            metrics.update(self.phases, max_threads=self.budget.most, boost_s=time.perf_counter() - self.t0,
                           peak_rss_mb=_peak_rss_mb())
            validation = self._final_validation(valid_predictions(self.early.kept_rounds(done)))
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
            state.update(rounds=kept, boosted=done, validation=validation)
            if kept < done:  # the rounds after `kept` are gone: this member cannot be resumed
                state["kept_best"] = True
                booster = kinds.get(self.kind).first_rounds(booster, kept)
                print(f"[{self.member}] {'early stop at round ' + str(done) if self.stopping else 'last round'}: "
                      f"keeping the best round, {kept} (valid-{self.metric}={self.early.best_value:.4f})", flush=True)
        with tempfile.TemporaryDirectory() as root:
            for name, files in self.finished.items():
                write_files(os.path.join(root, name), files)
            d = os.path.join(root, self.subdir) if self.subdir else root
            checkpoint.write(d, self.kind, booster.save_model, state)
            if self.subdir and last:
                self.finished[self.subdir] = read_files(d)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(root))


    def _final_validation(self, predictions: np.ndarray) -> Dict[str, float]:
        """The final model's metrics on the whole validation split, from every worker's shard:
        the driver need not score the split again (training/gbdt/scoring.py)."""
        part = gbdt_metrics.sums(self.valid_labels, predictions)
        return gbdt_metrics.from_sums(stopping.summed_over_workers(part) if self.workers > 1 else part)


def write_files(d: str, files: Dict[str, bytes]) -> None:
    os.makedirs(d, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


def read_files(d: str) -> Dict[str, bytes]:
    out = {}
    for name in os.listdir(d):
        with open(os.path.join(d, name), "rb") as f:
            out[name] = f.read()
    return out


def _peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

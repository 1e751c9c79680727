"""What one Tune trial runs: a single-process booster, or a Ray Train run driven from the trial.

Both report `round` and `valid_rmse` every `checkpoint_every` rounds with a checkpoint in the
GBDT workloads' layout (training/gbdt/checkpoint.py), so ASHA decides on rounds and every
stopped trial still has a model. A restored trial resumes from its latest checkpoint and boosts
only the remaining rounds.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from typing import Any, Dict, List, Optional

from ray.train import UserCallback

from training.gbdt import checkpoint, kinds, worker
from training.runtime import memory, workers
from training.tune import space

METRIC = "valid_rmse"


def trial_loop_config(setup: Dict[str, Any], config: Dict[str, Any], member: str) -> Dict[str, Any]:
    """The GBDT worker loop's config for this trial's sampled `config`."""
    rounds, params = space.split(setup["kind"], config, setup["fixed_params"], setup["fixed_rounds"])
    return dict(setup["loop"], member=member, params=params, num_boost_round=rounds)


class TuneReporter:
    """The round hooks of a single-process trial: report to Ray Tune (no thread borrowing: Tune
    starts the next trial on the CPUs a finished one frees)."""

    def __init__(self, cfg: Dict[str, Any], start: int, history: List[float]):
        self.kind, self.member, self.metric = cfg["kind"], cfg["member"], cfg["metric"]
        self.every, self.total, self.own = cfg["checkpoint_every"], cfg["num_boost_round"], cfg["threads"]
        self.start, self.history = start, history

    def threads(self) -> int:
        return self.own

    def built(self, seconds: float) -> None:
        """Phase timings feed Ray Train's final report (benchmarks); a trial reports only rounds."""

    def stop(self) -> bool:
        return False  # the search's scheduler (ASHA) stops trials

    def after_round(self, done: int, valid_value: float, booster, valid_predictions) -> Optional[int]:
        from ray import tune

        self.history.append(float(valid_value))
        if done % self.every and done != self.total:
            return None
        with tempfile.TemporaryDirectory() as d:
            checkpoint.write(d, self.kind, booster.save_model, {"member": self.member, "rounds": done,
                                                        "history": self.history, "metric": self.metric})
            tune.report({"round": done, METRIC: float(valid_value)}, checkpoint=tune.Checkpoint.from_directory(d))
        return None


def _restore(kind: str):
    """(rounds done, booster to continue, validation history) from the trial's checkpoint, if any."""
    from ray import tune

    ckpt = tune.get_checkpoint()
    if ckpt is None:
        return 0, None, []
    with ckpt.as_directory() as d:
        state = checkpoint.read_state(d)
        booster = checkpoint.load_booster(kind, f"{d}/{checkpoint.model_file(kind)}")
    return state["rounds"], booster, state["history"]


def local_trial(config: Dict[str, Any], setup: Dict[str, Any], data: Dict[str, Any]) -> None:
    """One booster in this process, `threads` threads; data arrives once per trial via the object store."""
    from ray import tune

    # Every checkpoint would otherwise log an INFO line per report to the driver's console.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    memory.training_allocator()
    cfg = trial_loop_config(setup, config, tune.get_context().get_trial_id())
    start, booster, history = _restore(cfg["kind"])
    remaining = cfg["num_boost_round"] - start
    if remaining <= 0:
        return
    shards = (data["train"], data["valid"])
    kinds.get(cfg["kind"]).train(worker.job_for(cfg, shards, start, booster, remaining),
                                 TuneReporter(cfg, start, history))


class ReportRelay(UserCallback):
    """A Ray Train callback (it runs on the Train controller) that queues each report for the
    trial: rank 0's metrics, with the registered checkpoint's path as `checkpoint_path`.

    Ray's `TuneReportCallback` puts reports on the trial session's own queue instead, and the
    session can see the trial end before the last of them: between looks at that queue it waits
    up to 0.2 s for other results, and the Train run ends one poll interval
    (`cluster.train_poll_interval_s`) after its last report. A finished trial would then be
    recorded at its last-but-one report, "stopped" short of its rounds. The trial reports what
    this queue holds itself (`distributed_trial`), each report before it ends.
    """

    def __init__(self, queue, storage: str):
        self.queue, self.storage = queue, storage

    def after_report(self, run_context, metrics: List[Dict[str, Any]], checkpoint) -> None:
        where = {"checkpoint_path": workers.checkpoint_uri(checkpoint, self.storage)} if checkpoint else {}
        self.queue.put({**metrics[0], **where})


def _pass_to_tune(reports) -> None:
    """Report each queued Train report to Tune, up to the end mark (None)."""
    from ray import tune

    for report in iter(reports.get, None):
        tune.report(report)  # Tune stopping the trial (ASHA) ends this thread here


def distributed_trial(config: Dict[str, Any], setup: Dict[str, Any], shards: Optional[Dict[str, Any]],
                      datasets: Dict[str, Any]) -> None:
    """A Ray Train run per trial on the cluster's worker shape; a thread of the trial passes its
    reports on to Tune (ReportRelay), and the trial ends after the last of them.

    The Train run is named after the trial, so a restored trial's run resumes from its own
    latest checkpoint. Train checkpoints are not copied into Tune: each report carries its
    checkpoint's path as `checkpoint_path`. A trial that Tune stops is still in `fit()`: Tune
    then ends its process, and the Train run with it.
    """
    from ray import tune
    from ray.util.queue import Queue

    from training.gbdt.trainer import SlotTrainer

    trial_id = tune.get_context().get_trial_id()
    # Ray Train reads its settings here, where the trainer is built: the driver's, not the raylet's.
    os.environ.update(setup.get("train_settings") or {})
    cfg = dict(trial_loop_config(setup, config, trial_id), shards=shards)
    cluster = setup["cluster"]
    reports = Queue(actor_options={"num_cpus": 0})
    # No restarts inside the trial: Tune's own retries (tune.FailureConfig) restart a failed
    # trial, whose Train run resumes from its checkpoint. When Tune ends a trial (ASHA), the
    # trial's process takes the Train run with it, and its workers can die a moment before its
    # controller: a controller allowed to restart would place a new worker group there, whose
    # placement group nothing removes (its CPUs stay taken until the job ends).
    trainer = SlotTrainer(worker.train_fn, train_loop_config=cfg, datasets=datasets,
                          scaling_config=workers.scaling_config(cluster),
                          run_config=workers.run_config(cluster, trial_id, setup["train_storage"], keep=1,
                                                        callbacks=[ReportRelay(reports, setup["train_storage"])], retries=0))
    relay = threading.Thread(target=_pass_to_tune, args=(reports,), name=f"reports-{trial_id}", daemon=True)
    relay.start()
    try:
        trainer.fit()
    finally:
        reports.put(None)  # fit() returns after the controller queued every report: the mark follows them
        relay.join()

"""What one Tune trial runs: a single-process booster, or a Ray Train run driven from the trial.

Both report `round` and `valid_rmse` every `checkpoint_every` rounds with a checkpoint
(model + state.json with the per-round validation curve), the same layout the GBDT
workloads write, so ASHA decides on rounds and every stopped trial still has a model.
A restored trial resumes from its latest checkpoint and boosts only the remaining rounds.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Any, Dict, List, Optional

from training.models import gbdt
from training.tuning import space

METRIC = "valid_rmse"


def trial_loop_config(setup: Dict[str, Any], config: Dict[str, Any], member: str) -> Dict[str, Any]:
    """The per-worker loop config of gbdt.train_fn for this trial's sampled `config`."""
    rounds, params = space.split(setup["kind"], config, setup["fixed_params"], setup["fixed_rounds"])
    return dict(setup["loop"], member=member, params=params, num_boost_round=rounds)


class TuneReporter:
    """gbdt's reporter interface (start, metric, after_round), reporting to Ray Tune instead of Ray Train."""

    def __init__(self, cfg: Dict[str, Any], start: int, history: List[float]):
        self.kind, self.member, self.metric = cfg["kind"], cfg["member"], cfg["metric"]
        self.every, self.total = cfg["checkpoint_every"], cfg["num_boost_round"]
        self.start, self.history = start, history

    def built(self, seconds: float) -> None:
        """Phase timings feed Ray Train's final report (benchmarks); a trial reports only rounds."""

    def threads_used(self, threads: int) -> None:
        """Likewise: a trial never borrows CPUs, and does not report its threads."""

    def after_round(self, done: int, valid_value: float, save_model) -> None:
        from ray import tune

        self.history.append(float(valid_value))
        if done % self.every and done != self.total:
            return
        with tempfile.TemporaryDirectory() as d:
            save_model(os.path.join(d, gbdt.MODEL_FILES[self.kind]))
            state = {"member": self.member, "rounds": done, "history": self.history, "metric": self.metric}
            with open(os.path.join(d, gbdt.STATE_FILE), "w") as f:
                json.dump(state, f)
            tune.report({"round": done, METRIC: float(valid_value)}, checkpoint=tune.Checkpoint.from_directory(d))


class _OneProcess:
    world_size = 1

    def get_world_size(self) -> int:
        return 1


def _restore(kind: str):
    """(rounds done, booster to continue, validation history) from the trial's checkpoint, if any."""
    from ray import tune

    ckpt = tune.get_checkpoint()
    if ckpt is None:
        return 0, None, []
    with ckpt.as_directory() as d:
        state = gbdt.read_state(d)
        booster = gbdt.load_booster(kind, os.path.join(d, gbdt.MODEL_FILES[kind]))
    return state["rounds"], booster, state["history"]


def local_trial(config: Dict[str, Any], setup: Dict[str, Any], data: Dict[str, Any]) -> None:
    """One booster in this process, `threads` threads; data arrives once per trial via the object store."""
    from ray import tune

    # Every checkpoint would otherwise log an INFO line per report to the driver's console.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    cfg = trial_loop_config(setup, config, tune.get_context().get_trial_id())
    start, booster, history = _restore(cfg["kind"])
    reporter = TuneReporter(cfg, start, history)
    remaining = cfg["num_boost_round"] - start
    if remaining <= 0:
        return
    args = (cfg, data["x_train"], data["y_train"], data["x_valid"], data["y_valid"], booster, remaining, reporter)
    if cfg["kind"] == "xgboost":
        gbdt._train_xgboost(*args)
    else:
        gbdt._train_lightgbm(*args, _OneProcess())


def distributed_trial(config: Dict[str, Any], setup: Dict[str, Any], shards: Optional[Dict[str, Any]],
                      datasets: Dict[str, Any]) -> None:
    """A Ray Train run per trial; its reports reach Tune through TuneReportCallback.

    The Train run is named after the trial, so a restored trial's run resumes from its own
    latest checkpoint. Train checkpoints are not copied into Tune: the callback adds their
    path to the metrics as `checkpoint_path`.
    """
    from ray import tune
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.tune.integration.ray_train import TuneReportCallback

    if setup["kind"] == "xgboost":
        from ray.train.xgboost import XGBoostTrainer as Trainer
    else:
        from ray.train.lightgbm import LightGBMTrainer as Trainer
    trial_id = tune.get_context().get_trial_id()
    cfg = dict(trial_loop_config(setup, config, trial_id), shards=shards)
    resources = {"CPU": setup["cpus"], **({"GPU": setup["gpus"]} if setup["gpus"] else {})}
    trainer = Trainer(
        gbdt.train_fn, train_loop_config=cfg, datasets=datasets,
        scaling_config=ScalingConfig(num_workers=setup["workers"], use_gpu=setup["gpus"] > 0,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=trial_id, storage_path=setup["train_storage"],
                             failure_config=FailureConfig(max_failures=setup["max_failures"]),
                             checkpoint_config=CheckpointConfig(num_to_keep=1),
                             callbacks=[TuneReportCallback()],
                             logging_config=LoggingConfig(log_level="WARNING")))
    trainer.fit()

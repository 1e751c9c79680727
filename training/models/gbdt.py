"""The per-worker training function for XGBoost and LightGBM under Ray Train.

Runs in every Ray Train worker: reads its shard of the preprocessed splits, builds the
native data structure, boosts, and reports metrics plus a checkpoint every
`checkpoint_every` rounds (each report is a synchronous round trip through the Train
controller, so per-round reporting is what makes stock callbacks slow). On restart after a
failure it resumes from the latest checkpoint and boosts only the remaining rounds.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any, Dict, List, Tuple

import numpy as np

MODEL_FILES = {"xgboost": "model.ubj", "lightgbm": "model.txt"}
STATE_FILE = "state.json"


def _shard_arrays(cfg: Dict[str, Any], name: str) -> Tuple[np.ndarray, np.ndarray]:
    """This worker's shard of a dataset as a float32 matrix and a label vector.

    With pre-split shards (materialized data) the worker reads its blocks straight from the
    object store; otherwise it streams its part through Ray Train's dataset sharding.
    """
    import ray.train

    features, label = cfg["features"], cfg["label"]
    if cfg.get("shards"):
        source = cfg["shards"][name][ray.train.get_context().get_world_rank()]
    else:
        source = ray.train.get_dataset_shard(name)
    cols: Dict[str, List[np.ndarray]] = {c: [] for c in features + [label]}
    for batch in source.iter_batches(batch_size=None, batch_format="numpy"):
        for c in cols:
            cols[c].append(batch[c])
    if not cols[label]:
        return np.empty((0, len(features)), np.float32), np.empty(0, np.float32)
    x = np.column_stack([np.concatenate(cols[c]).astype(np.float32, copy=False) for c in features])
    return x, np.concatenate(cols[label]).astype(np.float32, copy=False)


def _restore(kind: str):
    """(rounds done, model to continue from or None, validation history) from Ray Train's checkpoint."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return 0, None, []
    with ckpt.as_directory() as d:
        state = json.loads(open(os.path.join(d, STATE_FILE)).read())
        path = os.path.join(d, MODEL_FILES[kind])
        if kind == "xgboost":
            import xgboost as xgb
            model = xgb.Booster()
            model.load_model(path)
        else:
            import lightgbm as lgb
            model = lgb.Booster(model_file=path)
    print(f"[{state['member']}] resuming from checkpoint at round {state['rounds']}", flush=True)
    return state["rounds"], model, state["history"]


class SparseReporter:
    """Report to Ray Train every `every` rounds and at the last one; rank 0 attaches a checkpoint."""

    def __init__(self, cfg: Dict[str, Any], start_round: int, history: List[float]):
        import ray.train

        self.kind, self.member = cfg["kind"], cfg["member"]
        self.every, self.total = cfg["checkpoint_every"], cfg["num_boost_round"]
        self.metric = cfg["metric"]
        self.start, self.history = start_round, history
        self.rank = ray.train.get_context().get_world_rank()
        self.t0 = time.perf_counter()
        self.reports = 0
        # Seconds per phase (load_s, build_s, boost_s), added to the last report's metrics so
        # that benchmarks read them from `Result.metrics` rather than from worker logs.
        self.phases: Dict[str, float] = {}
        ctx = ray.train.get_context()
        self.kill_at = cfg.get("kill_worker_at_round") if self.rank == ctx.get_world_size() - 1 else None
        self.marker = os.path.join(tempfile.gettempdir(), f"training-drill-{cfg.get('run_name', '')}-{self.member}")

    def _kill_once(self, done: int) -> None:
        """The fault drill: die like a preempted pod would (no cleanup), once per run and member."""
        import signal

        if os.path.exists(self.marker):
            return
        open(self.marker, "w").close()
        print(f"[{self.member}] fault drill: killing worker {self.rank} (pid {os.getpid()}) at round {done}",
              flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    def built(self, seconds: float) -> None:
        """The native datasets are ready: boosting (and the rate shown in progress lines) starts now."""
        self.phases["build_s"] = seconds
        self.t0 = time.perf_counter()

    def after_round(self, done: int, valid_value: float, save_model) -> None:
        """`done` counts rounds from the very start (resumed runs included)."""
        import ray.train

        if done == self.kill_at:
            self._kill_once(done)
        self.history.append(float(valid_value))
        if done % self.every and done != self.total:
            return
        self.reports += 1
        metrics = {"round": done, f"valid_{self.metric}": float(valid_value)}
        if done == self.total:
            metrics.update(self.phases, boost_s=time.perf_counter() - self.t0, peak_rss_mb=_peak_rss_mb())
        if self.rank != 0:
            ray.train.report(metrics)  # every worker must report the same number of times
            return
        rate = (done - self.start) / max(time.perf_counter() - self.t0, 1e-9)
        print(f"[{self.member}] round {done}/{self.total} valid-{self.metric}={valid_value:.4f} "
              f"({rate:.0f} rounds/s)", flush=True)
        with tempfile.TemporaryDirectory() as d:
            save_model(os.path.join(d, MODEL_FILES[self.kind]))
            state = {"member": self.member, "rounds": done, "history": self.history, "metric": self.metric}
            with open(os.path.join(d, STATE_FILE), "w") as f:
                json.dump(state, f)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def _peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def quiet_worker_logs() -> None:
    """Our workers print progress lines; Ray Data's per-shard reads and Ray Train's per-report
    INFO lines (logged under the module's file name, not `ray.train`) would bury them."""
    import logging

    import ray.data

    logging.getLogger("ray.data").setLevel(logging.ERROR)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        from ray.train.v2._internal.execution import context
        logging.getLogger(context.__file__).setLevel(logging.WARNING)
    except ImportError:  # internal module moved: only the log volume changes
        pass


def train_fn(cfg: Dict[str, Any]) -> None:
    """Ray Train worker loop for one GBDT member; `cfg` is built by the workload from the member config."""
    import ray.train

    quiet_worker_logs()
    ctx = ray.train.get_context()
    kind = cfg["kind"]
    t_start = t0 = time.perf_counter()
    x_train, y_train = _shard_arrays(cfg, "train")
    x_valid, y_valid = _shard_arrays(cfg, "valid")
    load_s = time.perf_counter() - t0
    if ctx.get_world_rank() == 0:
        print(f"[{cfg['member']}] worker 0/{ctx.get_world_size()}: {len(y_train):,} train and "
              f"{len(y_valid):,} validation rows loaded in {load_s:.1f}s", flush=True)
    start, init_model, history = _restore(kind)
    reporter = SparseReporter(cfg, start, history)
    reporter.phases["load_s"] = load_s
    remaining = cfg["num_boost_round"] - start
    if remaining <= 0:
        return
    if kind == "xgboost":
        _train_xgboost(cfg, x_train, y_train, x_valid, y_valid, init_model, remaining, reporter)
    else:
        _train_lightgbm(cfg, x_train, y_train, x_valid, y_valid, init_model, remaining, reporter, ctx)
    if ctx.get_world_rank() == 0:
        total = time.perf_counter() - t_start
        print(f"[{cfg['member']}] worker 0: load {load_s:.1f}s, build + boost {total - load_s:.1f}s "
              f"({remaining} rounds, {reporter.reports} reports)", flush=True)


def _train_xgboost(cfg, x_train, y_train, x_valid, y_valid, init_model, rounds, reporter) -> None:
    import xgboost as xgb

    types = ["c" if f in cfg["categorical"] else "q" for f in cfg["features"]]
    kw = dict(feature_names=cfg["features"], feature_types=types, enable_categorical=True, nthread=cfg["threads"])
    t0 = time.perf_counter()
    dtrain = xgb.DMatrix(x_train, y_train, **kw)
    dvalid = xgb.DMatrix(x_valid, y_valid, **kw)
    reporter.built(time.perf_counter() - t0)
    params = {"objective": "reg:squarederror", "eval_metric": reporter.metric, "tree_method": "hist",
              "nthread": cfg["threads"], "seed": cfg["seed"], **cfg["params"]}
    if cfg["use_gpu"]:
        params["device"] = "cuda"

    class Callback(xgb.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log):
            value = evals_log["valid"][reporter.metric][-1]
            # With xgb_model=..., epoch restarts at 0: rounds done = resumed + this call's.
            reporter.after_round(reporter.start + epoch + 1, value, model.save_model)
            return False

    xgb.train(params, dtrain, num_boost_round=rounds, evals=[(dvalid, "valid")], xgb_model=init_model,
              callbacks=[Callback()], verbose_eval=False)


def _train_lightgbm(cfg, x_train, y_train, x_valid, y_valid, init_model, rounds, reporter, ctx) -> None:
    import lightgbm as lgb

    params = {"objective": "regression", "metric": reporter.metric, "num_threads": cfg["threads"],
              "seed": cfg["seed"], "verbosity": -1, "deterministic": True, **cfg["params"]}
    if ctx.get_world_size() > 1:
        from ray.train.lightgbm import get_network_params
        # Each worker holds a disjoint shard already: no LightGBM-side re-partitioning.
        params.update(get_network_params(), tree_learner="data_parallel", pre_partition=True)
    if cfg["use_gpu"]:
        params["device_type"] = "cuda"
    cats = [f for f in cfg["features"] if f in cfg["categorical"]]
    dtrain = lgb.Dataset(x_train, y_train, feature_name=cfg["features"], categorical_feature=cats,
                         free_raw_data=False)
    dvalid = lgb.Dataset(x_valid, y_valid, reference=dtrain)
    t0 = time.perf_counter()

    def mark_built(env):
        # lgb.train constructs the Datasets (after the network is up: bin boundaries are
        # agreed across workers), then boosts: the first iteration's start ends the build.
        if env.iteration == env.begin_iteration:
            reporter.built(time.perf_counter() - t0)

    mark_built.before_iteration = True

    def callback(env):
        value = next(r[2] for r in env.evaluation_result_list if r[0] == "valid")
        reporter.after_round(reporter.start + env.iteration - env.begin_iteration + 1, value,
                             env.model.save_model)

    lgb.train(params, dtrain, num_boost_round=rounds, valid_sets=[dvalid], valid_names=["valid"],
              init_model=init_model, callbacks=[mark_built, callback])

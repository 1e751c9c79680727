"""XGBoost behind the GBDTKind interface (`tree_method=hist`; `device=cuda` on GPU workers)."""

from __future__ import annotations

import contextlib
import gc
import os
import re
import tempfile
import time
import warnings
from typing import TYPE_CHECKING, Any, Dict, Optional

import numpy as np

from training.gbdt.kinds.base import GBDTKind, RoundHooks, TrainJob

if TYPE_CHECKING:
    import pandas as pd

    from training.gbdt.shard import Shard


class XGBoost(GBDTKind):
    name = "xgboost"
    model_file = "model.ubj"
    requirement = "xgboost"
    owned_params = {"eval_metric": "metric"}  # xgb.train takes its rounds as an argument, not a parameter
    module = "xgboost"
    searchable = frozenset({
        "num_boost_round", "eta", "learning_rate", "max_depth", "min_child_weight", "subsample",
        "colsample_bytree", "colsample_bylevel", "colsample_bynode", "gamma", "min_split_loss", "lambda",
        "reg_lambda", "alpha", "reg_alpha", "max_delta_step", "max_leaves", "max_bin", "grow_policy",
        "num_parallel_tree", "max_cat_to_onehot", "max_cat_threshold", "sampling_method", "scale_pos_weight",
    })

    def load(self, path: str) -> Any:
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(path)
        return booster

    def predict(self, booster: Any, x: pd.DataFrame) -> np.ndarray:
        import xgboost as xgb

        types = ["c" if t == "c" else "q" for t in booster.feature_types]
        return booster.predict(xgb.DMatrix(x.to_numpy(np.float32), feature_names=list(x.columns),
                                           feature_types=types, enable_categorical=True))

    def gain(self, booster: Any) -> Dict[str, float]:
        return booster.get_score(importance_type="total_gain")

    def check_params(self, params: Dict[str, Any]) -> Optional[str]:
        import xgboost as xgb

        x, y = self.tiny_data()
        try:
            # XGBoost ignores a name it does not know, with a warning: a misspelt max_depth
            # would train at the default depth without a word in the run's output.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                xgb.train({"nthread": 1, **params}, xgb.DMatrix(x, y), num_boost_round=1)
        except xgb.core.XGBoostError as exc:
            return _reason(str(exc))
        unused = [name for w in caught for listed in re.findall(r"Parameters: \{(.*?)\} are not used", str(w.message), re.S)
                  for name in re.findall(r'"([^"]+)"', listed)]
        unused = list(dict.fromkeys(unused))  # said once per place that reads the parameters
        return f"unknown parameter(s) {', '.join(unused)} (XGBoost would ignore them)" if unused else None

    def distributed_params(self, context: Any) -> Dict[str, Any]:
        return {}  # the slot's backend runs XGBoost's collective around the training function

    def first_rounds(self, booster: Any, rounds: int) -> Any:
        return booster[:rounds]

    def train(self, job: TrainJob, hooks: RoundHooks) -> Any:
        import xgboost as xgb

        threads = hooks.threads()
        params = {"objective": "reg:squarederror", "eval_metric": job.metric, "tree_method": "hist",
                  "nthread": threads, "seed": job.seed, **job.params}
        if job.use_gpu:
            params["device"] = "cuda"
        t0 = time.perf_counter()
        with _matrices(job, threads, int(params.get("max_bin", 256))) as (dtrain, dvalid):
            hooks.built(time.perf_counter() - t0)

            class Rounds(xgb.callback.TrainingCallback):
                def after_iteration(self, model, epoch, evals_log):
                    # With xgb_model=..., epoch restarts at 0: rounds done = resumed + this call's.
                    done = job.start + epoch + 1

                    def valid_predictions(rounds: int) -> np.ndarray:
                        # The whole model's predictions of the evaluated matrix come from its cache.
                        return model.predict(dvalid, iteration_range=(0, 0 if rounds == done else rounds))

                    more = hooks.after_round(done, evals_log["valid"][job.metric][-1], model, valid_predictions)
                    if more:
                        model.set_param({"nthread": more})
                    return hooks.stop()

            booster = xgb.train(params, dtrain, num_boost_round=job.rounds, evals=[(dvalid, "valid")],
                                xgb_model=job.init_model, callbacks=[Rounds()], verbose_eval=False)
            # A booster holds on to the matrices it trained on: its copy does not, so the
            # matrices (and an external-memory cache) are freed as this block ends.
            model = booster.copy()
            del booster, dtrain, dvalid
            return model


@contextlib.contextmanager
def _matrices(job: TrainJob, threads: int, max_bin: int):
    """The training and validation matrices, built batch by batch from the shards.

    The training matrix is binned (`QuantileDMatrix`). The validation matrix keeps its raw
    values (`DMatrix`): it is scored after every round, and scoring a binned matrix turns every
    bin of every row back into a value each time, which costs more than the rest of the
    evaluation; the raw one takes 8 bytes a value instead of 1. Under a memory budget it is
    binned too, with the training bins. A training shard over the budget goes to external
    memory (its pages in files under `spill_dir`, removed afterwards)."""
    import xgboost as xgb

    kw = dict(max_bin=max_bin, nthread=threads, enable_categorical=True)
    types = ["c" if f in job.categorical else "q" for f in job.features]
    budget = job.memory_budget_mb
    if budget is None or job.train.nbytes_float32 <= budget * 2**20:
        dtrain = xgb.QuantileDMatrix(_batches(job.train, types), **kw)
        yield dtrain, (xgb.DMatrix(_batches(job.valid, types), nthread=threads, enable_categorical=True)
                       if budget is None else xgb.QuantileDMatrix(_batches(job.valid, types), ref=dtrain, **kw))
        return
    os.makedirs(job.spill_dir or tempfile.gettempdir(), exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="xgb-extmem-", dir=job.spill_dir) as cache:
        print(f"training shard of {job.train.rows:,} rows is over the {job.memory_budget_mb:g} MB budget: "
              f"binned to external memory in {cache}", flush=True)
        dtrain = xgb.ExtMemQuantileDMatrix(_batches(job.train, types, os.path.join(cache, "train")), **kw)
        dvalid = xgb.QuantileDMatrix(_batches(job.valid, types), ref=dtrain, **kw)
        try:
            yield dtrain, dvalid
        finally:
            del dtrain, dvalid  # the cache files belong to the matrix: free it before its directory goes
            gc.collect()


def _batches(shard: Shard, types, cache_prefix: Optional[str] = None):
    """An XGBoost DataIter over a shard's float32 batches (one batch held at a time)."""
    import xgboost as xgb

    class Batches(xgb.DataIter):
        def __init__(self):
            super().__init__(cache_prefix=cache_prefix, release_data=True)
            self._it = None

        def reset(self) -> None:
            self._it = None

        def next(self, input_data) -> bool:
            if self._it is None:
                self._it = shard.batches()
            batch = next(self._it, None)
            if batch is None:
                return False
            input_data(data=batch[0], label=batch[1], feature_names=shard.features, feature_types=types)
            return True

    return Batches()


def _reason(message: str) -> str:
    """XGBoost's errors carry a C++ location and a stack trace after the reason."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip() and not ln.strip().startswith("Stack trace")]
    reason = next((ln.split(": ", 1)[1] if ln.startswith("[") and ": " in ln else ln for ln in lines), message)
    return reason.split(" at ")[0].strip() if reason else message.strip()


KIND = XGBoost()

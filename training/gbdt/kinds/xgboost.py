"""XGBoost behind the GBDTKind interface (`tree_method=hist`; `device=cuda` on GPU workers)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Dict, Optional

import numpy as np

from training.gbdt.kinds.base import GBDTKind, RoundHooks, TrainJob

if TYPE_CHECKING:
    import pandas as pd


class XGBoost(GBDTKind):
    name = "xgboost"
    model_file = "model.ubj"
    requirement = "xgboost"
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
            xgb.train({"nthread": 1, **params}, xgb.DMatrix(x, y), num_boost_round=1)
        except xgb.core.XGBoostError as exc:
            return _reason(str(exc))
        return None

    def distributed_params(self, context: Any) -> Dict[str, Any]:
        return {}  # the slot's backend runs XGBoost's collective around the training function

    def train(self, job: TrainJob, hooks: RoundHooks) -> Any:
        import xgboost as xgb

        types = ["c" if f in job.categorical else "q" for f in job.features]
        threads = hooks.threads()
        kw = dict(feature_names=job.features, feature_types=types, enable_categorical=True, nthread=threads)
        t0 = time.perf_counter()
        dtrain = xgb.DMatrix(job.x_train, job.y_train, **kw)
        dvalid = xgb.DMatrix(job.x_valid, job.y_valid, **kw)
        hooks.built(time.perf_counter() - t0)
        params = {"objective": "reg:squarederror", "eval_metric": job.metric, "tree_method": "hist",
                  "nthread": threads, "seed": job.seed, **job.params}
        if job.use_gpu:
            params["device"] = "cuda"

        class Rounds(xgb.callback.TrainingCallback):
            def after_iteration(self, model, epoch, evals_log):
                # With xgb_model=..., epoch restarts at 0: rounds done = resumed + this call's.
                more = hooks.after_round(job.start + epoch + 1, evals_log["valid"][job.metric][-1],
                                         model.save_model)
                if more:
                    model.set_param({"nthread": more})
                return False

        return xgb.train(params, dtrain, num_boost_round=job.rounds, evals=[(dvalid, "valid")],
                         xgb_model=job.init_model, callbacks=[Rounds()], verbose_eval=False)


def _reason(message: str) -> str:
    """XGBoost's errors carry a C++ location and a stack trace after the reason."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip() and not ln.strip().startswith("Stack trace")]
    reason = next((ln.split(": ", 1)[1] if ln.startswith("[") and ": " in ln else ln for ln in lines), message)
    return reason.split(" at ")[0].strip() if reason else message.strip()


KIND = XGBoost()

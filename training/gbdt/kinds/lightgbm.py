"""LightGBM behind the GBDTKind interface (deterministic; data-parallel over Ray Train workers)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import socket
import sys
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import numpy as np

from training.gbdt.kinds.base import GBDTKind, RoundHooks, TrainJob

if TYPE_CHECKING:
    import pandas as pd


class LightGBM(GBDTKind):
    name = "lightgbm"
    model_file = "model.txt"
    requirement = "lightgbm"
    # LightGBM's aliases (its config_auto.cpp): any of them in params overrides lgb.train's own.
    owned_params = {**dict.fromkeys(("num_iterations", "num_iteration", "n_iter", "num_tree", "num_trees", "num_round",
                                     "num_rounds", "nrounds", "num_boost_round", "n_estimators", "max_iter"), "rounds"),
                    **dict.fromkeys(("metric", "metrics", "metric_types"), "metric")}
    module = "lightgbm"
    searchable = frozenset({
        "num_boost_round", "learning_rate", "eta", "shrinkage_rate", "num_leaves", "max_leaves", "max_depth",
        "min_data_in_leaf", "min_child_samples", "min_sum_hessian_in_leaf", "min_child_weight",
        "bagging_fraction", "subsample", "bagging_freq", "subsample_freq", "feature_fraction",
        "colsample_bytree", "feature_fraction_bynode", "colsample_bynode", "lambda_l1", "reg_alpha",
        "lambda_l2", "reg_lambda", "min_gain_to_split", "min_split_gain", "max_bin", "extra_trees",
        "path_smooth", "cat_smooth", "cat_l2", "max_cat_threshold", "min_data_per_group",
    })
    # LightGBM ignores bagging_fraction (alias subsample) unless bagging_freq > 0.
    search_defaults = {"bagging_freq": 1}
    # Data-parallel LightGBM evaluates each worker's validation shard on its own.
    local_validation = True

    def __init__(self) -> None:
        # Whether this worker process has opened a LightGBM network already (a Train worker is
        # a dedicated actor process, so this lives exactly as long as the worker group).
        self.network_used = False

    def load(self, path: str) -> Any:
        import lightgbm as lgb

        return lgb.Booster(model_file=path)

    def predict(self, booster: Any, x: pd.DataFrame) -> np.ndarray:
        return booster.predict(x.to_numpy(np.float32))

    def gain(self, booster: Any) -> Dict[str, float]:
        return dict(zip(booster.feature_name(), booster.feature_importance("gain")))

    def check_params(self, params: Dict[str, Any]) -> Optional[str]:
        import lightgbm as lgb

        x, y = self.tiny_data()
        said = io.StringIO()
        try:
            # LightGBM's C++ side also prints fatal errors to the process's output: keep them off the
            # console. Its warnings reach Python's stdout (its log callback prints them): a name it
            # does not know is one ("Unknown parameter"), and it would train without it.
            with _native_output_silenced(), contextlib.redirect_stdout(said):
                lgb.train({"num_threads": 1, **params, "verbosity": 0}, lgb.Dataset(x, y), num_boost_round=1)
        except (lgb.basic.LightGBMError, ValueError, TypeError) as exc:
            return str(exc).strip().splitlines()[0].split(" at /")[0].strip()
        unknown = re.findall(r"Unknown parameter: (\S+)", said.getvalue())
        unknown = list(dict.fromkeys(unknown))  # said once per place that reads the parameters
        return f"unknown parameter(s) {', '.join(unknown)} (LightGBM would ignore them)" if unknown else None

    def distributed_params(self, context: Any) -> Dict[str, Any]:
        """LightGBM's network for this member. The first LightGBM member of a worker group takes the
        ports Ray Train chose; a later one (a slot training members in turn) picks fresh ones,
        because the sockets the previous member closed linger in TIME_WAIT and LightGBM binds
        without SO_REUSEADDR ("Binding port ... failed"). The new ports are exchanged over
        XGBoost's collective, which the slot's backend keeps up for the whole run."""
        from ray.train.lightgbm import get_network_params

        params = get_network_params()
        if self.network_used:
            params["local_listen_port"] = port = _free_port()
            params["machines"] = swap_ports(params["machines"], _allgather_port(context, port))
        self.network_used = True
        # Each worker holds a disjoint shard already: no LightGBM-side re-partitioning.
        return {**params, "tree_learner": "data_parallel", "pre_partition": True}

    def first_rounds(self, booster: Any, rounds: int) -> Any:
        import lightgbm as lgb

        return lgb.Booster(model_str=booster.model_to_string(num_iteration=rounds))

    def train(self, job: TrainJob, hooks: RoundHooks) -> Any:
        import lightgbm as lgb

        params = {"objective": "regression", "metric": job.metric, "num_threads": hooks.threads(),
                  "seed": job.seed, "verbosity": -1, "deterministic": True, **job.params, **job.distributed}
        if job.use_gpu:
            params["device_type"] = "cuda"
        if "machines" in params:
            # LightGBM's log level is per thread, set when params are parsed; lgb.train opens the
            # network before it parses them, so each worker would print its connections at Info
            # level. Parsing the member's verbosity here first (a one-row Dataset) keeps them quiet.
            lgb.Dataset(*self.tiny_data(), params={"verbosity": params["verbosity"]}).construct()
        cats = [f for f in job.features if f in job.categorical]
        # Built from the shards' Arrow columns (no float matrix of the whole shard in Python).
        dtrain = lgb.Dataset(job.train.feature_table(), job.train.labels(), categorical_feature=cats,
                             free_raw_data=False)
        dvalid = lgb.Dataset(job.valid.feature_table(), job.valid.labels(), reference=dtrain)
        t0 = time.perf_counter()

        def mark_built(env):
            # lgb.train constructs the Datasets (after the network is up: bin boundaries are
            # agreed across workers), then boosts: the first iteration's start ends the build.
            if env.iteration == env.begin_iteration:
                hooks.built(time.perf_counter() - t0)

        mark_built.before_iteration = True

        def after_round(env):
            value = next(r[2] for r in env.evaluation_result_list if r[0] == "valid")
            done = job.start + env.iteration - env.begin_iteration + 1

            def valid_predictions(rounds: int) -> np.ndarray:
                if rounds < done:
                    return env.model.predict(job.valid.feature_table(), num_iteration=rounds)
                # LightGBM's running scores of the validation set, handed to a custom metric:
                # what its own metric read this round, at no cost.
                scores = []
                env.model.eval_valid(feval=lambda predictions, _: scores.append(predictions.copy()) or ("", 0.0, False))
                return scores[0]

            more = hooks.after_round(done, value, env.model, valid_predictions)
            if more:
                env.model.reset_parameter({"num_threads": more})
            if hooks.stop():  # lgb.train ends boosting on this exception and returns the booster
                raise lgb.callback.EarlyStopException(env.iteration, env.evaluation_result_list)

        booster = lgb.train(params, dtrain, num_boost_round=job.rounds, valid_sets=[dvalid], valid_names=["valid"],
                            init_model=job.init_model, callbacks=[mark_built, after_round])
        if "machines" in params:
            booster.free_network()  # closes the sockets; the next member listens on fresh ports
        return booster


@contextlib.contextmanager
def _native_output_silenced():
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _allgather_port(context: Any, port: int) -> List[int]:
    import xgboost.collective as collective

    slots = np.zeros(context.get_world_size(), dtype=np.int64)
    slots[context.get_world_rank()] = port
    return [int(p) for p in collective.allreduce(slots, collective.Op.SUM)]


def swap_ports(machines: str, ports: List[int]) -> str:
    """"ip0:p0,ip1:p1" with each rank's port replaced (IPv6 hosts keep their brackets)."""
    hosts = [m.rsplit(":", 1)[0] for m in machines.split(",")]
    return ",".join(f"{h}:{p}" for h, p in zip(hosts, ports))


KIND = LightGBM()

"""Workers hand their shard to the libraries in batches and Arrow columns (training/gbdt/shard.py):
the models must be the ones the libraries build from the whole matrix in memory."""

import os

import numpy as np
import pandas as pd
import pyarrow as pa
from training.gbdt import kinds
from training.gbdt.kinds import lightgbm as lightgbm_kind
from training.gbdt.kinds.base import TrainJob
from training.gbdt.shard import Shard

FEATURES = ["a", "b", "c"]


def _data(n, seed):
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.normal(size=n), rng.exponential(size=n), rng.integers(0, 5, n)]).astype(np.float32)
    x[rng.random(n) < 0.05, 0] = np.nan  # missing values take the libraries' missing branch
    y = (2 * np.nan_to_num(x[:, 0]) + np.log1p(x[:, 1]) + x[:, 2] + rng.normal(0, 0.1, n)).astype(np.float32)
    return x, y


class Hooks:
    def __init__(self):
        self.values = []

    def threads(self):
        return 1

    def built(self, seconds):
        pass

    def after_round(self, done, value, booster, valid_predictions):
        self.values.append(value)

    def stop(self):
        return False


def _job(batch_rows, **kw):
    (x, y), (xv, yv) = _data(4000, 0), _data(800, 1)
    train = Shard.from_arrays(x, y, FEATURES, "y", batch_rows=batch_rows)
    valid = Shard.from_arrays(xv, yv, FEATURES, "y", batch_rows=batch_rows)
    return TrainJob(train, valid, FEATURES, ["c"], {"max_depth": 4}, seed=0, metric="rmse", rounds=15, **kw)


def _frame(n=300):
    return pd.DataFrame(_data(n, 2)[0], columns=FEATURES)


def test_xgboost_binned_batch_by_batch_is_the_model_of_the_whole_matrix():
    import xgboost as xgb

    hooks = Hooks()
    booster = kinds.get("xgboost").train(_job(batch_rows=512), hooks)  # 4000 rows: 8 batches
    (x, y), (xv, yv) = _data(4000, 0), _data(800, 1)
    kw = dict(feature_names=FEATURES, feature_types=["q", "q", "c"], enable_categorical=True)
    whole = xgb.QuantileDMatrix(x, y, **kw)
    evals = {}
    reference = xgb.train({"objective": "reg:squarederror", "eval_metric": "rmse", "tree_method": "hist",
                           "nthread": 1, "seed": 0, "max_depth": 4}, whole, 15,
                          evals=[(xgb.QuantileDMatrix(xv, yv, ref=whole, **kw), "valid")], evals_result=evals)
    frame = _frame()
    np.testing.assert_allclose(kinds.get("xgboost").predict(booster, frame),
                               kinds.get("xgboost").predict(reference, frame), rtol=1e-6)
    np.testing.assert_allclose(hooks.values, evals["valid"]["rmse"], rtol=1e-6)


def test_lightgbm_from_arrow_columns_is_the_model_of_the_numpy_matrix():
    import lightgbm as lgb

    booster = kinds.get("lightgbm").train(_job(batch_rows=512), Hooks())
    (x, y), _ = _data(4000, 0), None
    reference = lgb.train({"objective": "regression", "metric": "rmse", "num_threads": 1, "seed": 0,
                           "verbosity": -1, "deterministic": True, "max_depth": 4},
                          lgb.Dataset(x, y, feature_name=FEATURES, categorical_feature=["c"]), 15)
    frame = _frame()
    np.testing.assert_allclose(kinds.get("lightgbm").predict(booster, frame), reference.predict(frame.to_numpy()),
                               rtol=1e-9)


def test_a_shard_over_the_memory_budget_trains_from_external_memory_and_cleans_up(tmp_path, capsys):
    in_memory = kinds.get("xgboost").train(_job(batch_rows=512), Hooks())
    spill = tmp_path / "spill"
    hooks = Hooks()
    spilled = kinds.get("xgboost").train(_job(batch_rows=512, memory_budget_mb=0.01, spill_dir=str(spill)), hooks)
    assert "over the 0.01 MB budget: binned to external memory" in capsys.readouterr().out
    assert len(hooks.values) == 15 and hooks.values[-1] < hooks.values[0]
    # The same bins, read page by page: the same trees.
    frame = _frame()
    np.testing.assert_allclose(kinds.get("xgboost").predict(spilled, frame),
                               kinds.get("xgboost").predict(in_memory, frame), rtol=1e-6)
    assert os.listdir(spill) == []  # the cache pages went with the matrix


def test_under_the_budget_nothing_is_spilled(tmp_path, capsys):
    kinds.get("xgboost").train(_job(batch_rows=512, memory_budget_mb=100, spill_dir=str(tmp_path / "s")), Hooks())
    assert "external memory" not in capsys.readouterr().out
    assert not (tmp_path / "s").exists()


def test_batches_are_float32_views_of_every_row_with_nulls_as_missing():
    table = pa.table({"a": pa.array([1.0, None, 3.0, 4.0, 5.0], pa.float64()),
                      "c": pa.array([1, 2, None, 4, 5], pa.int64()), "y": pa.array([1.0, 2, 3, 4, 5])})
    shard = Shard(pa.concat_tables([table.slice(0, 2), table.slice(2)]), ["a", "c"], "y", batch_rows=2)
    parts = list(shard.batches())
    assert [len(y) for _, y in parts] == [2, 2, 1]  # blocks of 2 and 3 rows: a batch never straddles two
    x = np.concatenate([x for x, _ in parts])
    assert x.dtype == np.float32 and x.shape == (5, 2)
    assert np.isnan(x[1, 0]) and np.isnan(x[2, 1]) and x[4].tolist() == [5.0, 5.0]
    assert shard.nbytes_float32 == 5 * 3 * 4


def test_an_empty_shard_is_one_empty_batch():
    empty = Shard.from_arrays(np.empty((0, 3), np.float32), np.empty(0, np.float32), FEATURES, "y")
    assert [x.shape for x, _ in empty.batches()] == [(0, 3)]


def test_a_later_lightgbm_member_keeps_each_ranks_host_and_takes_the_new_ports():
    assert lightgbm_kind.swap_ports("10.0.0.1:5000,10.0.0.2:5001", [6000, 6001]) == "10.0.0.1:6000,10.0.0.2:6001"
    assert lightgbm_kind.swap_ports("[::1]:5000,[::1]:5001", [7, 8]) == "[::1]:7,[::1]:8"

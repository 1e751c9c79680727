"""Ensemble weights, metrics and the saved artifact (no Ray needed)."""

import numpy as np
import pandas as pd
import pytest

from training.gbdt.ensemble import fit_weights
from training.gbdt.metrics import regression_metrics


def test_weights_are_non_negative_and_never_worse_than_the_best_member():
    rng = np.random.default_rng(0)
    y = rng.normal(0, 1, 2000)
    good = y + rng.normal(0, 0.3, 2000)
    other = y + rng.normal(0, 0.5, 2000)
    anti = -y  # a harmful member must get weight zero, not a negative one
    preds = np.column_stack([good, other, anti])
    w = fit_weights(preds, y)
    assert (w >= 0).all() and w[2] == pytest.approx(0.0, abs=1e-9)
    ens = regression_metrics(y, preds @ w)["rmse"]
    assert ens <= min(regression_metrics(y, preds[:, i])["rmse"] for i in range(3)) + 1e-12


def test_single_member_weight_is_one():
    assert fit_weights(np.ones((5, 1)), np.ones(5)).tolist() == [1.0]


def test_metrics_match_their_definitions():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.5, 2.0, 2.5, 5.0])
    m = regression_metrics(y, p)
    assert m["rmse"] == pytest.approx(np.sqrt((0.25 + 0 + 0.25 + 1) / 4))
    assert m["mae"] == pytest.approx(0.5)
    assert m["r2"] == pytest.approx(1 - 1.5 / 5.0)
    assert regression_metrics(np.full(3, 7.0), np.array([6.0, 7.0, 8.0]))["r2"] == 0.0  # constant target


def test_metrics_from_the_sums_of_shards_equal_those_of_the_whole():
    """How a member's workers score their validation shards and the driver adds them up."""
    from training.gbdt.metrics import from_sums, sums

    rng = np.random.default_rng(0)
    y = rng.normal(50, 20, 10_001)
    p = y + rng.normal(0, 3, y.size)
    shards = np.array_split(np.arange(y.size), 3)
    combined = from_sums(sum(sums(y[i], p[i]) for i in shards))
    whole = regression_metrics(y, p)
    assert combined == pytest.approx(whole, rel=1e-12)
    err = p - y
    assert whole["r2"] == pytest.approx(1 - np.sum(err ** 2) / np.sum((y - y.mean()) ** 2), rel=1e-12)


def test_saved_ensemble_predicts_the_same_from_raw_rows(tmp_path, ray_session):
    import lightgbm as lgb
    import pyarrow as pa
    import ray.data
    import xgboost as xgb

    from training.data.schema import DataConfig
    from training.data.columns import resolve_columns
    from training.data.features import FeaturePipeline
    from training.gbdt.ensemble import EnsembleModel, Member

    rng = np.random.default_rng(1)
    raw = pd.DataFrame({"a": rng.normal(size=400), "b": rng.choice(["x", "y"], 400)})
    raw["y"] = 3 * raw.a + (raw.b == "x") + rng.normal(0, 0.1, 400)
    c = DataConfig(path="unused", target="y")
    pipe = FeaturePipeline.fit(ray.data.from_pandas(raw), c, resolve_columns(c, pa.Schema.from_pandas(raw)))
    feats = pipe.transform(raw)
    x, y = feats[pipe.output_features], feats["y"]
    dm = xgb.DMatrix(x.to_numpy(np.float32), y, feature_names=list(x.columns), feature_types=["q", "c"],
                     enable_categorical=True)
    members = [Member("x", "xgboost", xgb.train({"max_depth": 3}, dm, 20)),
               Member("l", "lightgbm", lgb.train({"verbosity": -1}, lgb.Dataset(x.to_numpy(np.float32), y, feature_name=["a", "b"],
                                                                                 categorical_feature=[1]), 20))]
    model = EnsembleModel(pipe, members, np.array([0.6, 0.4]))
    before = model.predict(raw.drop(columns="y"))
    after = EnsembleModel.load(model.save(tmp_path / "m")).predict(raw.drop(columns="y"))
    np.testing.assert_allclose(before, after, rtol=1e-6)
    assert regression_metrics(y.to_numpy(), before)["r2"] > 0.9
    assert set(model.importance()) == {"a", "b"}


def test_members_are_dealt_into_slots_longest_first_to_the_least_loaded():
    from training.gbdt.config import MemberConfig
    from training.gbdt.slots import slots

    seed = [MemberConfig(name=n, kind="xgboost", num_boost_round=r, params={})
            for n, r in (("xgb_deep", 500), ("xgb_shallow", 800), ("lgbm", 600))]
    assert slots(seed, 2) == [[1], [0, 2]]      # 800 | 600 + 500
    assert slots(seed, 1) == [[0, 1, 2]]        # one group, config order
    assert slots(seed, 8) == [[1], [2], [0]]    # never more slots than members


def test_the_logged_model_takes_rows_as_callers_send_them(tmp_path, ray_session):
    """The registered pyfunc (artifact.log_pyfunc) loaded back through MLflow: an integer column
    with a missing value, a category sent as 7, 7.0 or "7" (blocks of an integer column with and
    without nulls train on the same key), a slice of a frame keeps its index, and a value that is
    no number, or an infinite one (training refuses those), is one clear error, not a silent
    missing value or a failure of the library."""
    import lightgbm as lgb
    import mlflow
    import pyarrow as pa
    import ray.data
    from mlflow.exceptions import MlflowException

    from training.data.schema import DataConfig
    from training.data.columns import resolve_columns
    from training.data.features import FeaturePipeline
    from training.gbdt import artifact
    from training.gbdt.ensemble import EnsembleModel, Member

    rng = np.random.default_rng(2)
    raw = pd.DataFrame({"qty": rng.integers(1, 9, 600), "store": rng.choice([7, 8, 9], 600)})
    raw["y"] = 2.0 * raw.qty + 5.0 * (raw.store == 7) + rng.normal(0, 0.1, 600)
    with_nulls = raw.iloc[300:].astype({"store": "float64"})
    with_nulls.loc[with_nulls.index[:5], "store"] = np.nan            # this block reads the stores as 7.0
    c = DataConfig(path="unused", target="y", categorical=["store"])
    pipe = FeaturePipeline.fit(ray.data.from_pandas([raw.iloc[:300], with_nulls]), c,
                               resolve_columns(c, pa.Schema.from_pandas(raw, preserve_index=False)))
    assert sorted(pipe.categories["store"]) == ["7", "8", "9"]
    feats = pipe.transform(raw)
    booster = lgb.train({"verbosity": -1, "min_data_in_leaf": 5}, lgb.Dataset(
        feats[pipe.output_features].to_numpy(np.float32), feats["y"], feature_name=pipe.output_features,
        categorical_feature=[pipe.output_features.index("store")]), 30)
    model = EnsembleModel(pipe, [Member("l", "lightgbm", booster)], np.array([1.0]))

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        with mlflow.start_run(experiment_id=mlflow.create_experiment("pyfunc")):  # not an earlier test's
            info = artifact.log_pyfunc(model, raw[["qty", "store"]].head(5), ["lightgbm"])
        served = mlflow.pyfunc.load_model(info.model_uri)
        rows = pd.DataFrame({"qty": [3.0, np.nan, 3.0, 3.0], "store": [7, 7.0, "7", None]}, index=[10, 11, 12, 13])
        pred = served.predict(rows)
        assert list(pred.index) == [10, 11, 12, 13]
        assert pred[10] == pytest.approx(pred[12]) and pred[10] > pred[13] + 2  # "7" and 7 are one store
        np.testing.assert_allclose(pred.to_numpy(), model.predict(rows.reset_index(drop=True)), rtol=1e-6)
        with pytest.raises(MlflowException, match="feature 'qty' takes numbers; got 'three'"):
            served.predict(pd.DataFrame({"qty": ["three"], "store": [7]}))
        with pytest.raises(MlflowException, match="feature 'qty' takes finite numbers or missing values; got inf"):
            served.predict(pd.DataFrame({"qty": [2.0, float("inf")], "store": [7, 8]}))
    finally:
        mlflow.set_tracking_uri(None)

"""The synthetic retail generator: shape, determinism, and a target a model can actually learn."""

import numpy as np
import pandas as pd
import pytest

from training.data.schema import SyntheticConfig
from training.data import synthetic


def _read(path):
    return pd.read_parquet(path)


def test_schema_and_size(tmp_path):
    out = synthetic.generate(SyntheticConfig(rows=1001, partitions=4, users=300), tmp_path / "d")
    files = sorted(p.name for p in out.glob("*.parquet"))
    assert files == [f"part-{i:05d}.parquet" for i in range(4)]
    df = _read(out)
    assert len(df) == 1001
    assert df["transaction_id"].is_unique
    for col in ("store", "region"):
        assert df[col].dtype == object or str(df[col].dtype) in ("str", "string")
    assert pd.api.types.is_datetime64_any_dtype(df["timestamp"])
    assert df["promo"].dtype == bool
    assert df["days_since_last_purchase"].isna().any()  # missing values are part of the data
    assert df["user_id"].between(0, 299).all()


def test_deterministic_by_seed(tmp_path):
    a = _read(synthetic.generate(SyntheticConfig(rows=3000, seed=1), tmp_path / "a"))
    b = _read(synthetic.generate(SyntheticConfig(rows=3000, seed=1), tmp_path / "b"))
    c = _read(synthetic.generate(SyntheticConfig(rows=3000, seed=2), tmp_path / "c"))
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a[synthetic.TARGET], c[synthetic.TARGET])


def test_regenerates_only_when_parameters_change(tmp_path):
    out = synthetic.generate(SyntheticConfig(rows=500, partitions=2), tmp_path / "d")
    stamp = (out / "part-00000.parquet").stat().st_mtime_ns
    synthetic.generate(SyntheticConfig(rows=500, partitions=2), out)
    assert (out / "part-00000.parquet").stat().st_mtime_ns == stamp
    synthetic.generate(SyntheticConfig(rows=700, partitions=2), out)
    assert len(_read(out)) == 700


def test_target_has_learnable_nonlinear_signal(tmp_path):
    """A GBDT explains most of the variance; a linear model on the raw numerics explains much less."""
    import xgboost as xgb

    df = _read(synthetic.generate(SyntheticConfig(rows=20000, users=2000), tmp_path / "d"))
    x = df[["price", "quantity", "discount", "sessions_30d", "days_since_last_purchase",
            "avg_basket_value_90d", "loyalty_score", "returns_90d"]].astype(float)
    x["promo"] = df["promo"].astype(float)
    x["hour"] = df["timestamp"].dt.hour
    x["doy"] = df["timestamp"].dt.dayofyear
    x["region"] = df["region"].astype("category").cat.codes
    y = df[synthetic.TARGET].to_numpy()
    train, test = slice(0, 15000), slice(15000, None)
    booster = xgb.train({"max_depth": 5, "eta": 0.1, "nthread": 2}, xgb.DMatrix(x[train], y[train]), 150)
    pred = booster.predict(xgb.DMatrix(x[test]))
    r2 = 1 - np.sum((pred - y[test]) ** 2) / np.sum((y[test] - y[test].mean()) ** 2)
    xl = np.column_stack([np.nan_to_num(x.to_numpy()), np.ones(len(x))])
    coef, *_ = np.linalg.lstsq(xl[train], y[train], rcond=None)
    lin = xl[test] @ coef
    r2_lin = 1 - np.sum((lin - y[test]) ** 2) / np.sum((y[test] - y[test].mean()) ** 2)
    assert r2 > 0.75
    assert r2 - r2_lin > 0.1, (r2, r2_lin)


@pytest.mark.parametrize("rows", [1, 99])
def test_rejects_tiny_sizes_through_config(rows):
    from training.errors import UserError
    from tests.conftest import load_config

    with pytest.raises(UserError, match="data.synthetic.rows must be >= 100"):
        load_config(f"data.synthetic.rows={rows}")

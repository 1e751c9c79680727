"""Feature engineering: the deterministic split, encoders fitted on training rows only, saved state."""

import logging
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from training.data.schema import DataConfig
from training.data.columns import model_feature_names, resolve_columns
from training.data.features import FeaturePipeline
from training.data.split import in_validation
from training.errors import UserError


def frame(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "ts": pd.Timestamp("2025-03-01") + pd.to_timedelta(rng.integers(0, 90 * 86400, n), unit="s"),
        "city": rng.choice(["paris", "rome", "oslo"], n),
        "amount": np.exp(rng.normal(2, 1.2, n)),       # skewed, non-negative
        "score": rng.normal(0, 1, n),                    # symmetric, may be negative
        "flag": rng.random(n) < 0.3,
        "y": rng.normal(10, 2, n),
    })


def cfg(**kw) -> DataConfig:
    base = dict(path="unused", target="y", interactions=[["amount", "score"]])
    base.update(kw)
    return DataConfig(**base)


def fit(ray_session, df, c):
    import pyarrow as pa
    import ray.data

    ds = ray.data.from_pandas(df)
    cols = resolve_columns(c, pa.Schema.from_pandas(df, preserve_index=False))
    return FeaturePipeline.fit(ds, c, cols)


def test_split_is_deterministic_and_independent_of_batching():
    df = frame(5000)
    whole = in_validation(df, 0.2, seed=3)
    chunked = np.concatenate([in_validation(df.iloc[i:i + 700], 0.2, seed=3) for i in range(0, len(df), 700)])
    assert (whole == chunked).all()
    assert abs(whole.mean() - 0.2) < 0.03
    assert (whole != in_validation(df, 0.2, seed=4)).any()


def test_a_row_splits_the_same_whatever_dtypes_its_block_gave_its_columns():
    """An integer column is float64 in a block with a missing value, a boolean column object,
    times come in µs or ns, columns in another order: the held path and Ray Data's read group
    rows into different blocks, and a row must land on the same side in both (else the gate's
    validation rows include training rows)."""
    rng = np.random.default_rng(1)
    n = 4000
    plain = pd.DataFrame({"store": rng.integers(0, 40, n), "promo": rng.integers(0, 2, n).astype(bool),
                          "city": rng.choice(["a", "b", "c"], n), "amount": rng.normal(size=n),
                          "ts": pd.date_range("2026-01-01", periods=n, freq="min")})
    with_nulls = pd.DataFrame({"amount": plain["amount"], "store": plain["store"].astype("float64"),
                               "promo": plain["promo"].astype(object), "city": plain["city"],
                               "ts": plain["ts"].astype("datetime64[us]")})
    assert with_nulls["store"].dtype == "float64" and with_nulls["promo"].dtype == object
    assert (in_validation(plain, 0.2, seed=5) == in_validation(with_nulls, 0.2, seed=5)).all()
    # JSON rows: numbers as objects; a missing value is missing whatever its column's dtype.
    json_like = plain.astype({"store": object})
    json_like.loc[0, "store"], plain_missing = None, plain.astype({"store": "float64"})
    plain_missing.loc[0, "store"] = np.nan
    assert (in_validation(json_like, 0.2, seed=5) == in_validation(plain_missing, 0.2, seed=5)).all()


def test_the_seed_moves_the_split_of_numeric_rows_too():
    """pandas keys its hashes of text only: a seed passed as its key left all-numeric data (most
    transaction tables) split the same way under every seed."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"amount": rng.normal(size=5000), "store": rng.integers(0, 50, 5000),
                       "ts": pd.date_range("2026-01-01", periods=5000, freq="min")})
    splits = [in_validation(df, 0.2, seed=s) for s in (0, 1, 2)]
    assert all(abs(v.mean() - 0.2) < 0.03 for v in splits)
    overlap = (splits[0] & splits[1]).sum() / splits[0].sum()
    assert overlap < 0.3, overlap   # independent splits share about a fifth of their rows
    assert (splits[0] == in_validation(df, 0.2, seed=0)).all()


def test_column_roles_are_detected_from_the_schema():
    import pyarrow as pa

    cols = resolve_columns(cfg(), pa.Schema.from_pandas(frame(10), preserve_index=False))
    assert cols.timestamp == "ts"
    assert cols.categorical == ["city"]
    assert cols.numeric == ["amount", "score", "flag"]


def test_fitted_state_comes_from_training_rows_only(ray_session):
    train = frame(3000)
    pipe = fit(ray_session, train, cfg())
    assert pipe.categories["city"] == sorted(pipe.categories["city"], key=lambda c: -(train.city == c).sum())
    assert "amount" in pipe.log1p and "score" not in pipe.log1p  # skew detection
    assert pipe.train_rows == 3000
    unseen = frame(5, seed=9).assign(city=["tokyo", None, "rome", "paris", "oslo"])
    out = pipe.transform(unseen)
    assert np.isnan(out["city"].iloc[0]) and np.isnan(out["city"].iloc[1])  # unseen / missing -> NaN
    assert out["city"].iloc[2] == pipe.categories["city"].index("rome")
    # data.max_categories keeps the most frequent training categories; the rest become missing.
    capped = fit(ray_session, train, cfg(max_categories=2))
    assert capped.categories["city"] == pipe.categories["city"][:2]
    rarest = pipe.categories["city"][2]
    encoded = capped.transform(frame(3, seed=9).assign(city=[rarest, *pipe.categories["city"][:2]]))["city"]
    assert np.isnan(encoded.iloc[0]) and list(encoded.iloc[1:]) == [0, 1]


def test_transform_builds_time_interaction_and_log_features(ray_session):
    df = frame(1000)
    pipe = fit(ray_session, df, cfg())
    out = pipe.transform(df)
    assert {"ts_hour", "ts_dayofweek", "ts_month", "ts_dayofyear", "ts_is_weekend", "amount_x_score"} <= set(out)
    assert "ts" not in out
    np.testing.assert_allclose(out["amount"], np.log1p(df["amount"]), rtol=1e-5)
    np.testing.assert_allclose(out["amount_x_score"], df["amount"] * df["score"], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(out["ts_hour"], df["ts"].dt.hour)
    np.testing.assert_array_equal(out["ts_is_weekend"], df["ts"].dt.dayofweek >= 5)
    assert list(out.columns) == pipe.output_features + ["y"]
    # The names the config checks vet before any cluster starts are the ones the model gets.
    cols = resolve_columns(cfg(), pa.Schema.from_pandas(df, preserve_index=False))
    assert pipe.output_features == model_feature_names(cols, cfg().interactions)


def test_a_moment_gets_the_same_time_features_whatever_offset_it_is_written_with(ray_session):
    """A request may write a time with its own UTC offset, and a batch may mix two (across a change
    to summer time): the same moment is the same features, and a mixed batch does not fail."""
    pipe = fit(ray_session, frame(1000), cfg())
    rows = pd.DataFrame({"ts": ["2024-06-01T12:00:00+02:00", "2024-06-01T10:00:00Z", "2024-01-05T23:30:00-01:00"],
                         "city": "rome", "amount": 3.0, "score": 0.5, "flag": True})
    out = pipe.transform(rows, with_target=False)
    time_parts = [c for c in out if c.startswith("ts_")]
    assert out.loc[0, time_parts].tolist() == out.loc[1, time_parts].tolist()
    assert out.loc[0, "ts_hour"] == 10
    assert out.loc[2, ["ts_hour", "ts_dayofyear", "ts_dayofweek"]].tolist() == [0, 6, 5]  # Jan 6th, 00:30 UTC


def test_scaling_uses_training_statistics(ray_session):
    df = frame(4000)
    pipe = fit(ray_session, df, cfg(scale=True))
    out = pipe.transform(df)
    assert abs(out["score"].mean()) < 1e-3 and abs(out["score"].std() - 1) < 1e-2
    shifted = pipe.transform(df.assign(score=df.score + 10))  # new data is not re-centred
    assert abs(shifted["score"].mean() - 10 / df.score.std()) < 0.05


def test_missing_values_pass_through_and_unlabelled_rows_drop(ray_session):
    df = frame(500)
    df.loc[:9, "score"] = np.nan
    df.loc[10:14, "y"] = np.nan
    pipe = fit(ray_session, df, cfg())
    out = pipe.transform(df)
    assert len(out) == 495
    assert out["score"].isna().sum() == 10
    assert len(pipe.transform(df.drop(columns="y"), with_target=False)) == 500


def test_state_round_trips_through_json(ray_session):
    df = frame(800)
    pipe = fit(ray_session, df, cfg(scale=True))
    again = FeaturePipeline.from_json(pipe.to_json())
    pd.testing.assert_frame_equal(pipe.transform(df), again.transform(df))


def test_bad_column_lists_are_named():
    import pyarrow as pa

    schema = pa.Schema.from_pandas(frame(5), preserve_index=False)
    with pytest.raises(UserError, match="not in the data: nope"):
        resolve_columns(cfg(features=["amount", "nope"]), schema)
    with pytest.raises(UserError, match="data.interactions: 'city' is not a numeric feature column"):
        resolve_columns(cfg(interactions=[["city", "amount"]]), schema)
    # Columns the transform and the model would read from every row, though not features: the
    # run failed only after training, when the registered model's example was scored.
    with pytest.raises(UserError, match=r"^data.categorical names columns that are not features: city \(the target"):
        resolve_columns(cfg(features=["amount", "score"], categorical=["city"], interactions=[]), schema)
    with pytest.raises(UserError, match="data.categorical names columns that are not features: y "):
        resolve_columns(cfg(categorical=["city", "y"]), schema)
    with pytest.raises(UserError, match=r"^data.timestamp 'ts' is not a feature column \(add it to data.features"):
        resolve_columns(cfg(features=["amount", "score"], timestamp="ts", interactions=[]), schema)
    # A misspelt exclusion would train on the column it meant to leave out.
    with pytest.raises(UserError, match="^data.exclude names columns not in the data: fla$"):
        resolve_columns(cfg(exclude=["fla"]), schema)


def test_feature_names_the_libraries_refuse_or_a_derived_feature_takes_are_config_errors():
    """Found before a cluster starts: XGBoost refuses `[`, `]`, `<` in a feature name (LightGBM
    JSON's characters) in every worker after the data is prepared; a column named like a time
    part or an interaction was silently replaced by it."""
    import pyarrow as pa

    priced = frame(5).rename(columns={"amount": "amount[usd]"})
    with pytest.raises(UserError, match=r"^column 'amount\[usd\]': XGBoost and LightGBM refuse \[ \] in a feature"):
        resolve_columns(cfg(interactions=[]), pa.Schema.from_pandas(priced, preserve_index=False))
    excluded = resolve_columns(cfg(interactions=[], exclude=["amount[usd]"]),
                               pa.Schema.from_pandas(priced, preserve_index=False))
    assert "amount[usd]" not in excluded.features
    clash = frame(5).assign(ts_month=1.0)
    with pytest.raises(UserError, match="^feature 'ts_month' is both a column of the data and a derived feature"):
        resolve_columns(cfg(interactions=[]), pa.Schema.from_pandas(clash, preserve_index=False))
    product = frame(5).assign(amount_x_score=1.0)
    with pytest.raises(UserError, match="^feature 'amount_x_score' is both a column"):
        resolve_columns(cfg(), pa.Schema.from_pandas(product, preserve_index=False))


@pytest.mark.parametrize("setting", [{}, {"RAW_SHARE": 0.0}, {"RAW_SHARE": 0.0, "SPLITS_AT_ONCE_BYTES": 0}],
                         ids=["raw rows held", "source read again by each pass",
                              "source read again by each pass, both splits at once"])
def test_prepare_fits_encoders_on_training_rows_only(ray_session, tmp_path, monkeypatch, caplog, setting):
    """Through prepare(), as a run does: a city that occurs only in validation rows is unknown to
    the fitted pipeline (encoded as missing), and the statistics come from training rows only.
    Every way of reading gives this: the raw rows held in the object store (a small source),
    and a source too large to hold (RAW_SHARE 0 makes any source too large), read again by each
    pass with the split and the transform in the read's task, the two splits one after the other
    or at once (as a large source's are: SPLITS_AT_ONCE_BYTES 0)."""
    from training.data import prepare as preparation
    from training.data.prepare import prepare
    from training.data.schema import DataSource

    for name, value in setting.items():
        monkeypatch.setattr(preparation, name, value)
    raw_share = setting.get("RAW_SHARE")

    df = frame(3000, seed=5)
    df.loc[df.index[::10], "city"] = "tokyo"
    df.loc[df.index[::10], "score"] += 50  # validation-only rows that would move a mean fitted on all rows
    valid = in_validation(df, 0.2, seed=0)
    # The split hashes each row's content, so dropping tokyo's training rows moves no other row.
    df = df[(df.city != "tokyo") | valid].reset_index(drop=True)
    valid = in_validation(df, 0.2, seed=0)
    tokyo = (df.city == "tokyo").to_numpy()
    assert tokyo.sum() > 20 and valid[tokyo].all()
    df.to_parquet(tmp_path / "rows.parquet", index=False)

    with caplog.at_level("INFO", logger="training.data.prepare"):
        data = prepare(cfg(source=DataSource.parquet, path=str(tmp_path / "rows.parquet"), scale=True))
    assert ("read again by each pass rather than held" in caplog.text) == (raw_share == 0.0)
    assert set(data.pipeline.categories["city"]) == {"paris", "rome", "oslo"}
    assert data.pipeline.train_rows == data.train_rows == int((~valid).sum())
    mean, _ = data.pipeline.scaling["score"]
    assert mean == pytest.approx(df.score[~valid].mean(), abs=1e-9)
    # The validation rows' unknown city is encoded as missing; no other city is.
    encoded = data.valid.to_pandas()
    assert len(encoded) == valid.sum() and encoded["city"].isna().sum() == tokyo.sum()
    # The model's input example: raw validation rows, with the source's own column types.
    example = data.example
    assert len(example) == 5 and list(example.columns) == list(df.columns)
    assert example.merge(df[valid], how="inner").shape[0] == 5
    assert example.dtypes.to_dict() == df.dtypes.to_dict()


def test_an_empty_validation_split_is_one_line_naming_it(ray_session, tmp_path):
    from training.data.prepare import prepare
    from training.data.schema import DataSource

    df = frame(40, seed=5)
    assert not in_validation(df, 0.0001, seed=0).any()
    df.to_parquet(tmp_path / "rows.parquet", index=False)
    with pytest.raises(UserError, match=r"^the validation split is empty \(40 rows with a target; adjust "
                                        r"data.validation_fraction or add rows\)$"):
        prepare(cfg(source=DataSource.parquet, path=str(tmp_path / "rows.parquet"), validation_fraction=0.0001))


def _plasma_mib(ray_session) -> int:
    """Ray's object store in use, in MiB (what `ray memory --stats-only` reports)."""
    import re

    from ray._private.internal_api import memory_summary

    summary = memory_summary(ray_session.get_runtime_context().gcs_address, stats_only=True)
    return int(re.search(r"Plasma memory usage (\d+) MiB", summary).group(1))


@pytest.mark.parametrize("raw_share", [None, 0.0], ids=["raw rows held", "source read again by each pass"])
def test_prepare_leaves_only_the_preprocessed_splits_in_the_object_store(ray_session, tmp_path, monkeypatch,
                                                                         raw_share):
    """Once prepare() returns, the raw rows are out of Ray's object store: a small source's were
    held while its passes ran, then freed; a large one's were never held. Here the raw rows take
    about 12 MiB (mostly a text column that is not a feature) and the float32 splits under 1 MiB."""
    from training.data import prepare as preparation
    from training.data.schema import DataSource

    if raw_share is not None:
        monkeypatch.setattr(preparation, "RAW_SHARE", raw_share)
    df = frame(6000, seed=3)
    df["note"] = [f"{i:06d}" + "x" * 2042 for i in range(len(df))]
    df.to_parquet(tmp_path / "rows.parquet", index=False)
    before = _plasma_mib(ray_session)
    data = preparation.prepare(cfg(source=DataSource.parquet, path=str(tmp_path / "rows.parquet"), exclude=["note"]))
    assert data.train_rows + data.valid_rows == 6000
    # Ray frees an object a moment after its last reference goes.
    deadline, held = time.monotonic() + 10, _plasma_mib(ray_session) - before
    while held > 2 and time.monotonic() < deadline:
        time.sleep(0.5)
        held = _plasma_mib(ray_session) - before
    assert held <= 2, f"{held} MiB more in the object store after prepare(): raw rows still held"


def test_rows_without_a_target_value_are_left_out_of_the_fit_and_counted(caplog):
    """They neither train nor score (the transform drops them), so a category seen only in them
    is unknown to the model, and they are not among the rows with a target."""
    from training.data.profiling import fitted, profile_block

    df = frame(400)
    unlabelled = df["city"] == "oslo"
    df.loc[unlabelled, "y"] = np.nan
    c = cfg(interactions=[])
    cols = resolve_columns(c, pa.Schema.from_pandas(df, preserve_index=False))
    with caplog.at_level(logging.WARNING, logger="training.data.profiling"):
        pipe, rows, _ = fitted([profile_block(df.iloc[:150], c, cols), profile_block(df.iloc[150:], c, cols)], c, cols)
    assert rows == int((~unlabelled).sum())
    assert sorted(pipe.categories["city"]) == ["paris", "rome"]
    assert f"{int(unlabelled.sum())} of 400 rows have no value of data.target 'y'" in caplog.text

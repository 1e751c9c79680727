"""Workloads and data options through the CLI, as a user runs them: `python -m training ...` in a
fresh process; what it prints and what lands in MLflow.

The ensemble (default members) and workload=bert run through the CLI in tests/test_serving.py,
which then serves the versions they registered; synthetic data and checkpoints on S3 in
tests/test_object_store.py; a rerun with the same run_name in tests/test_driver_retry.py.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import SMALL, registered_versions, run_cli

pytestmark = pytest.mark.slow


def _client(workdir) -> MlflowClient:
    return MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")


def _runs(client: MlflowClient, filter_string: str = ""):
    return client.search_runs([client.get_experiment_by_name("ray-training").experiment_id], filter_string)


def test_a_search_through_the_cli_prints_its_table_and_registers_the_best(tmp_path):
    args = [*SMALL, "workload=tune", "workload.num_samples=3", "workload.max_concurrent_trials=2",
            "workload.space.num_boost_round={type: int, low: 10, high: 30}", "workload.scheduler.grace_period=10",
            "workload.search.startup_trials=2", "cluster.cpus_per_worker=1", "run_name=cli-search"]
    proc = run_cli(args, tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for expected in ("Search cli-search: 3 trials (", "Top 3 trials by validation RMSE:", "Best trial:",
                     "Model version: models:/retail-demand-tuned/1", "Resume:        rerun with run_name=cli-search"):
        assert expected in out, out[-3000:]
    client = _client(tmp_path)
    [parent] = _runs(client, "attributes.run_name = 'cli-search'")
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials"] == 3
    trials = _runs(client, f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(trials) == 3 and all("valid_rmse" in t.data.metrics for t in trials)
    best = min(t.data.metrics["valid_rmse"] for t in trials)
    assert parent.data.metrics["best_valid_rmse"] == pytest.approx(best)
    assert [int(v.version) for v in registered_versions(tmp_path)] == [1]


def test_local_parquet_with_column_options_streamed_without_materializing(tmp_path):
    """data=parquet over a folder of files, the features named, a numeric code declared
    categorical, an interaction, and data.materialize=false (workers read the source)."""
    rng = np.random.default_rng(1)
    n = 4000
    df = pd.DataFrame({"ts": pd.Timestamp("2025-01-01") + pd.to_timedelta(rng.integers(0, 200 * 86400, n), unit="s"),
                       "store": rng.choice([7, 8, 9], n), "price": rng.uniform(1, 10, n),
                       "units": rng.integers(1, 20, n).astype(float), "row_id": np.arange(n),
                       "note": rng.choice(["a", "b"], n)})
    df["revenue"] = df.price * df.units + df.store.map({7: 0.0, 8: 40.0, 9: 80.0}) + rng.normal(0, 1, n)
    (tmp_path / "sales").mkdir()
    for i, part in enumerate(np.array_split(df, 3)):
        part.to_parquet(tmp_path / "sales" / f"part-{i}.parquet", index=False)

    args = ["data=parquet", "data.path=sales", "data.target=revenue", "data.features=[ts,store,price,units]",
            "data.categorical=[store]", "data.interactions=[[price,units]]", "data.materialize=false",
            "workload=xgboost", "workload.members.0.num_boost_round=60", "cluster.num_workers=2",
            "workload.registered_model_name=sales"]
    proc = run_cli(args, tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[training] data: 4,000 rows, 4 features (1 categorical, time column 'ts')" in proc.stdout, proc.stdout
    assert "Model version: models:/sales/1" in proc.stdout

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/sales/1")
    assert model.metadata.get_input_schema().input_names() == ["ts", "store", "price", "units"]
    pipeline = model.unwrap_python_model().model.pipeline
    assert "price_x_units" in pipeline.output_features and pipeline.categorical_features == ["store"]
    [run] = _runs(_client(tmp_path))
    assert run.data.params["data.materialize"] == "False" and run.data.metrics["r2_xgboost"] > 0.9
    pred = model.predict(df.drop(columns=["revenue"]).head(200))
    assert np.corrcoef(pred, df.revenue.head(200))[0, 1] > 0.95

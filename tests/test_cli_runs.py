"""Workloads and data options through the CLI, as a user runs them: `python -m training ...` in a
fresh process; what it prints and what lands in MLflow.

The ensemble (default members) and workload=bert run through the CLI in tests/test_serving.py,
which then serves the versions they registered; synthetic data and checkpoints on S3 in
tests/test_object_store.py; a rerun with the same run_name in tests/test_driver_retry.py.
"""

from __future__ import annotations

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


def test_local_parquet_streamed_with_chosen_columns_trains_and_serves_raw_rows(tmp_path):
    """A user's own parquet files, read while training (`data.materialize=false`), with the column
    options: excluded ids, an integer id declared categorical, one interaction. The run must not
    wait forever for a CPU its stream needs, and the registered model must take raw rows."""
    import mlflow.pyfunc

    from training.data.schema import SyntheticConfig
    from training.data.synthetic import generate, generate_partition

    generate(SyntheticConfig(rows=6000, partitions=3, users=500), tmp_path / "tx")
    # Two members would train side by side on this machine's 2 CPUs, leaving none for the stream.
    members = ("workload.members=[{name: xgb, kind: xgboost, num_boost_round: 20, params: {max_depth: 4}},"
               " {name: lgbm, kind: lightgbm, num_boost_round: 20, params: {num_leaves: 15}}]")
    args = ["workload=ensemble", members, "data=parquet",
            f"data.path={tmp_path / 'tx'}", "data.target=spend_next_30d", "data.materialize=false",
            "data.exclude=[transaction_id,user_id]", "data.categorical=[store,region,product_id]",
            "data.interactions=[[price,quantity]]", "run_name=cli-parquet"]
    proc = run_cli(args, tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Model version: models:/retail-demand-ensemble/1" in proc.stdout, proc.stdout[-2000:]
    assert "training 2 member(s) in 1 slot(s) (xgb, lgbm)" in proc.stderr + proc.stdout
    [parent] = _runs(_client(tmp_path), "attributes.run_name = 'cli-parquet'")
    assert parent.info.status == "FINISHED"
    assert parent.data.params["data.materialize"] == "False"
    assert parent.data.metrics["data_rows"] == 6000

    client = _client(tmp_path)
    model = mlflow.pyfunc.load_model(client.get_model_version_download_uri("retail-demand-ensemble", "1"))
    ensemble = model.unwrap_python_model().model
    features = list(ensemble.pipeline.output_features)
    assert "price_x_quantity" in features
    assert not {"transaction_id", "user_id"} & set(features)
    assert set(ensemble.pipeline.categorical_features) == {"store", "region", "product_id"}
    # Raw rows as a caller has them, excluded columns and target included: they are ignored.
    rows = generate_partition(SyntheticConfig(rows=50, users=500), 7, 50, 10**6)
    predictions = model.predict(rows)
    assert len(predictions) == 50 and predictions.notna().all()
    assert predictions.std() > 0  # the model uses its features, not a constant

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

"""Each workload end to end on the session's real Ray (2 CPUs) with small data, tracked in a real MLflow store."""

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from training.gbdt import workload as gbdt
from tests.conftest import SMALL, load_config, registered_versions, small_rounds

pytestmark = pytest.mark.slow


def _children(client, run_id):
    exp = client.get_run(run_id).info.experiment_id
    return client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{run_id}'")


def test_ensemble_end_to_end(ray_session, workdir, capsys):
    """One worker per member on 2 CPUs: two members train at once (the single-model tests below
    cover data-parallel training across two workers). xgb_deep, at learning rate 1, overfits
    within a few rounds and stops early."""
    cfg = load_config(*SMALL, *small_rounds("ensemble", 40), "cluster.num_workers=1",
                      "workload.members.0.params.eta=1.0", "workload.members.0.early_stopping_rounds=3")
    result = gbdt.run(cfg)

    # The ensemble is never worse than its best member on the validation split.
    members = [result.metrics[m]["rmse"] for m in ("xgb_deep", "xgb_shallow", "lgbm")]
    assert result.metrics["ensemble"]["rmse"] <= min(members) + 1e-9
    assert all(w >= 0 for w in result.weights.values())
    assert result.metrics["ensemble"]["r2"] > 0.5

    client = MlflowClient(tracking_uri=result.tracking_uri)
    parent = client.get_run(result.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["workload.name"] == "ensemble"
    assert parent.data.params["cluster.num_workers"] == "1"
    assert parent.data.metrics["rmse_ensemble"] == pytest.approx(result.metrics["ensemble"]["rmse"])
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert artifacts == {"plots/feature_importance.png", "plots/validation_curves.png"}

    children = _children(client, result.run_id)
    assert sorted(c.info.run_name for c in children) == ["lgbm", "xgb_deep", "xgb_shallow"]
    for child in children:
        curve = [m.value for m in client.get_metric_history(child.info.run_id, "valid_rmse_curve")]
        kept = int(child.data.metrics["best_iteration"])
        assert "valid_r2" in child.data.metrics and child.data.params["num_boost_round"] == "40"
        assert child.info.status == "FINISHED"
        points = client.get_metric_history(child.info.run_id, "valid_rmse_curve")
        assert sorted(m.step for m in points) == list(range(1, len(curve) + 1))  # each round once
        # Logged by rank 0 as it boosted, each point at its round's time (the driver's fill-in at
        # the end would give every point one timestamp).
        assert len({m.timestamp for m in points}) > len(points) // 2
        if child.info.run_name == "xgb_deep":
            # Stopped 3 rounds after its best round; the model keeps the best round's trees.
            assert len(curve) == kept + 3 < 40 and kept == int(np.argmin(curve)) + 1
            assert child.data.metrics["rounds_boosted"] == len(curve)
            assert f"| {kept} of {len(curve)} |" in capsys.readouterr().out
        else:
            assert len(curve) == kept == 40 and curve[-1] < curve[0]
    # The cluster holds two members' workers at once: the first two trained concurrently.
    spans = {c.info.run_name: (c.data.metrics["started_at"], c.data.metrics["finished_at"]) for c in children}
    (s1, e1), (s2, e2) = spans["xgb_deep"], spans["xgb_shallow"]
    assert s2 < e1 and s1 < e2, spans

    # The registered version is the whole ensemble and predicts from raw rows.
    assert result.model_uri == "models:/retail-demand-ensemble/1"
    model = mlflow.pyfunc.load_model(result.model_uri)
    raw = pd.read_parquet(workdir / "data/synthetic/retail").head(50)
    pred = model.predict(raw.drop(columns=["spend_next_30d"]))
    assert len(pred) == 50 and np.isfinite(pred).all()
    assert np.corrcoef(pred, raw["spend_next_30d"])[0, 1] > 0.6


def test_no_version_is_registered_when_a_member_fails(ray_session, workdir):
    # One constraint per column of a 3-column table: the config-time parameter check (3 columns)
    # accepts it, this data's features do not, so lgbm fails inside training.
    cfg = load_config(*SMALL, *small_rounds("ensemble", 20), "cluster.num_workers=1", "cluster.max_failures=0",
                      "+workload.members.2.params.monotone_constraints=[1,1,1]")
    from training.gbdt.slots import MemberTrainingError

    with pytest.raises(MemberTrainingError, match="member 'lgbm' failed"):
        gbdt.run(cfg)
    assert registered_versions(workdir) == []
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlruns/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("ray-training").experiment_id],
                              filter_string="attributes.run_name LIKE 'ensemble-%'")
    assert [r.info.status for r in runs] == ["FAILED"]

"""The typed config: composition, overrides and the errors a user sees for bad keys and values."""

import pytest

from training.settings import ClusterMode, TrackingBackend
from training.gbdt.config import GBDTWorkloadConfig
from training.errors import UserError
from tests.conftest import load_config


def test_defaults_compose_to_the_seed_ensemble():
    cfg = load_config()
    assert isinstance(cfg.workload, GBDTWorkloadConfig)
    members = [(m.name, m.kind, m.num_boost_round, m.params.get("max_depth")) for m in cfg.workload.members]
    assert members == [("xgb_deep", "xgboost", 500, 6), ("xgb_shallow", "xgboost", 800, 4),
                       ("lgbm", "lightgbm", 600, 8)]
    assert cfg.workload.members[0].params["eta"] == 0.1
    assert cfg.workload.members[1].params["eta"] == 0.05
    assert cfg.workload.members[2].params["learning_rate"] == 0.08
    assert cfg.cluster.mode is ClusterMode.local
    assert cfg.tracking.backend is TrackingBackend.local


def test_groups_and_values_override_from_the_command_line():
    cfg = load_config("workload=xgboost", "cluster=address", "cluster.num_workers=4", "cluster.cpus_per_worker=2",
                      "data=parquet", "data.path=s3://bucket/tx", "data.target=amount")
    assert [m.name for m in cfg.workload.members] == ["xgboost"]
    assert (cfg.cluster.mode, cfg.cluster.address, cfg.cluster.num_workers) == (ClusterMode.address, "auto", 4)
    assert (cfg.data.path, cfg.data.target) == ("s3://bucket/tx", "amount")


@pytest.mark.parametrize("override, message", [
    ("data.colour=red", "Key 'colour' not in 'DataConfig'; full_key: data.colour"),
    ("+data.colour=red", "Key 'colour' not in 'DataConfig'"),
    ("+colour=red", "unknown key 'colour'"),
    ("cluster.num_workers=many", "Value 'many' of type 'str' could not be converted to Integer; "
                                 "full_key: cluster.num_workers"),
    ("workload=catboost", "Could not find 'workload/catboost'; Available options in 'workload': "
                          "bert; ensemble; lightgbm; tune; xgboost"),
    ("workload.members.0.kind=catboost", "workload.members.0.kind must be one of lightgbm, xgboost, got 'catboost'"),
    ("cluster.num_workers=0", "cluster.num_workers must be >= 1, got 0"),
    ("data.validation_fraction=1.5", "data.validation_fraction must be between 0 and 1, got 1.5"),
    ("cluster=address cluster.address=null", "cluster.address is required with cluster=address"),
])
def test_bad_keys_and_values_name_the_key(override, message):
    with pytest.raises(UserError) as err:
        load_config(*override.split())
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_parquet_needs_a_path():
    with pytest.raises(UserError, match="missing mandatory value: path; full_key: data.path"):
        load_config("data=parquet")


def test_server_tracking_needs_a_uri(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(UserError, match="tracking=server needs tracking.uri"):
        load_config("tracking=server")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert load_config("tracking=server").tracking.backend is TrackingBackend.server


def test_a_rerun_keeps_what_a_bert_schedule_or_a_tune_search_was_laid_out_with():
    """A rerun with the same run_name continues the earlier run's checkpoints. BERT resumes at
    its step of a learning-rate schedule laid out over epochs x steps per epoch (batch,
    accumulation, workers), and a restored Tune search keeps its first attempt's sample count,
    scheduler and trial shape: a change there is refused by name. GBDT members may grow rounds."""
    import yaml

    from training.config import to_yaml
    from training.runtime.run import differences, identity

    def changed(*args):
        before, now = (identity(yaml.safe_load(to_yaml(load_config(*a)))) for a in args)
        return differences(before, now)

    assert changed(["workload=bert", "data=text_synthetic"], ["workload=bert", "data=text_synthetic", "workload.epochs=5"]) == ["workload.epochs"]
    assert changed(["workload=bert", "data=text_synthetic"], ["workload=bert", "data=text_synthetic", "cluster.num_workers=2"]) == ["cluster.num_workers"]
    assert changed(["workload=bert", "data=text_synthetic"], ["workload=bert", "data=text_synthetic", "workload.log_every_steps=5"]) == []
    assert changed(["workload=tune"], ["workload=tune", "workload.num_samples=40"]) == ["workload.num_samples"]
    assert changed(["workload=tune"], ["workload=tune", "workload.scheduler.grace_period=100"]) == [
        "workload.scheduler.grace_period"]
    assert changed(["workload=xgboost"], ["workload=xgboost", "workload.members.0.num_boost_round=900"]) == []
    assert changed(["workload=xgboost"], ["workload=xgboost", "cluster.num_workers=2"]) == []


def test_a_config_dir_with_a_space_or_a_quote_in_its_path(tmp_path):
    """--config-dir paths reach Hydra as they are: not percent-encoded (Hydra would look for
    `my%20conf`), and quoted for its override grammar."""
    from training import config

    for name in ("my conf", "it's"):
        (tmp_path / name / "data").mkdir(parents=True)
        (tmp_path / name / "data" / "shop.yaml").write_text(
            f"defaults: [data_schema, _self_]\nsource: parquet\npath: /data/{name}\ntarget: amount\n")
        cfg = config.load(["data=shop"], [str(tmp_path / name)])
        assert (cfg.data.path, cfg.data.target) == (f"/data/{name}", "amount")

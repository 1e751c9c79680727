"""The in-process Ray of `cluster=local` as `connect` sets it up: reading parquet costs what it
needs, not a cluster's worth, and the run's options reach Ray Train."""

import os

from ray.util.state import list_actors

from tests.conftest import load_config
from training.data.schema import SyntheticConfig
from training.data import sources, synthetic
from training.observability.sampler import state_address


def _footer_readers() -> set:
    return {a.actor_id for a in list_actors(address=state_address(), filters=[("class_name", "=", "FooterReader")],
                                            limit=1000, raise_on_missing_output=False)}


def test_a_local_parquet_read_starts_one_footer_reader_not_32(ray_session, tmp_path):
    """Ray Data 2.60 starts 32 FooterReader actors (a process each) per parquet read by default;
    `training.runtime.cluster.local_defaults` sizes that to the machine (one per 8 CPUs, here one)."""
    path = synthetic.generate(SyntheticConfig(rows=2000, partitions=3, users=50), tmp_path / "d")
    before = _footer_readers()
    cfg = load_config("data=parquet", f"data.path={path}", "data.target=quantity").data
    with sources.reading(cfg):
        rows = sources.read(cfg).materialize().count()
    started = _footer_readers() - before
    assert rows == 2000
    assert 1 <= len(started) <= 2  # one per execution: the schema probe and the full read may each list


def test_each_run_sets_ray_trains_poll_interval_from_its_config(ray_session, monkeypatch):
    """`cluster.train_poll_interval_s` reaches Ray Train through its environment variable, for
    every run of a process: a notebook's second run with another value is not left with the first's."""
    from training.runtime.cluster import connect

    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")  # what an earlier run set
    connect(load_config("cluster.train_poll_interval_s=0.5", "cluster.num_cpus=2").cluster)
    assert os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "0.5"
    connect(load_config("cluster.num_cpus=2").cluster)
    assert os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "0.1"

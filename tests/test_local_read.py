"""Reading parquet on the in-process Ray of `cluster=local` costs what it needs, not a cluster's worth."""

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

"""A parquet source that prepare() holds is read by plain Ray tasks the driver plans from the
footers: the same rows and columns as Ray Data's read of it, in blocks of bounded size."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import load_config
from training.data import holding, sources


def test_the_plan_groups_small_row_groups_and_splits_large_ones():
    files = (holding.ParquetFile("a.parquet", [100, 100, 100, 500], {}), holding.ParquetFile("b.parquet", [40], {}))
    size = holding.SourceSize(rows=840, bytes=840, files=files)  # one byte a row
    plan = [(file.path, first, count, blocks) for file, first, count, blocks in holding.plan(size, target_bytes=250)]
    assert plan == [("a.parquet", 0, 2, 1), ("a.parquet", 2, 1, 1), ("a.parquet", 3, 1, 2), ("b.parquet", 0, 1, 1)]


@pytest.fixture
def partitioned(tmp_path):
    """Hive partition directories (one URI-encoded), files of several row groups, one with an
    upper-case extension, and files that are not data: a hidden one, a marker, a README."""
    frames = []
    for i, region in enumerate(["eu", "us west"]):
        part = tmp_path / "tx" / f"region={region.replace(' ', '%20')}"
        part.mkdir(parents=True)
        for j in range(2):
            n = 300 + 100 * j
            df = pd.DataFrame({"k": range(i * 1000 + j * 500, i * 1000 + j * 500 + n), "x": [0.5 * k for k in range(n)],
                               "shop": [f"s{k % 7}" for k in range(n)]})
            pq.write_table(pa.Table.from_pandas(df, preserve_index=False), part / f"part-{j}.parquet", row_group_size=100)
            frames.append(df.assign(region=region))
    pq.write_table(pa.table({"k": [-1], "x": [0.0], "shop": ["hidden"]}), tmp_path / "tx" / ".staging.parquet")
    upper = pd.DataFrame({"k": range(5000, 5150), "x": [0.25 * k for k in range(150)], "shop": ["s9"] * 150})
    pq.write_table(pa.Table.from_pandas(upper, preserve_index=False), tmp_path / "tx" / "region=eu" / "PART-9.PARQUET",
                   row_group_size=100)
    frames.append(upper.assign(region="eu"))
    (tmp_path / "tx" / "_SUCCESS").write_text("")
    (tmp_path / "tx" / "README.md").write_text("# exported nightly\n")
    return tmp_path / "tx", pd.concat(frames, ignore_index=True)


def test_a_held_source_has_the_rows_and_columns_of_ray_datas_read(ray_session, partitioned, monkeypatch):
    import ray.data

    path, written = partitioned
    cfg = load_config("data=parquet", f"data.path={path}", "data.target=x").data
    size = holding.measure(cfg)
    assert size.rows == len(written) and size.bytes > 0
    # Blocks of about 250 rows: the 100-row groups are read two at a time, the last one alone.
    monkeypatch.setattr(ray.data.DataContext.get_current(), "target_max_block_size", int(250 * size.row_bytes))
    with sources.reading(cfg):
        ray_data = sources.read(cfg)
        blocks = ray_session.get(holding.hold(cfg, ray_data, size))
        expected = ray_data.materialize().to_pandas()

    got = pa.concat_tables(blocks).to_pandas()
    assert list(got.columns) == list(expected.columns) == ["k", "x", "shop", "region"]
    assert got.dtypes.to_dict() == expected.dtypes.to_dict()
    assert got.sort_values("k").reset_index(drop=True).equals(expected.sort_values("k").reset_index(drop=True))
    assert sorted(got["region"].unique()) == ["eu", "us west"]
    # The upper-case file is read and the hidden file, the marker and the README are not, as by Ray Data.
    assert len(got) == len(written)
    assert len(blocks) == sum(n for *_, n in holding.plan(size, int(250 * size.row_bytes))) == 9
    assert max(b.num_rows for b in blocks) <= 250


def test_the_passes_over_held_blocks_run_as_tasks_in_block_order(ray_session, partitioned):
    """`map_blocks` hands each block to the function as a pandas frame; `gather` returns the
    results in block order whatever order they finish in, and reports each as it arrives."""
    path, written = partitioned
    cfg = load_config("data=parquet", f"data.path={path}", "data.target=x").data
    size = holding.measure(cfg)

    def first_key(frame: pd.DataFrame, offset: int) -> int:  # by value to the tasks: not importable there
        assert isinstance(frame, pd.DataFrame)
        return int(frame["k"].iloc[0]) + offset

    with sources.reading(cfg):
        blocks = holding.hold(cfg, sources.read(cfg), size)
        seen = []
        firsts = holding.gather(holding.map_blocks(blocks, first_key, offset=1), seen.append)
    tables = ray_session.get(blocks)
    assert firsts == [t.column("k")[0].as_py() + 1 for t in tables]
    assert sorted(seen) == sorted(firsts)

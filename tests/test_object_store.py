"""Data and checkpoints on an object store, through a real S3 API.

The S3 endpoint is moto's standalone server (a real HTTP S3 implementation, installed by
`make test` into .venv-s3, apart from the project's environment);
the project talks to it only through pyarrow's S3 filesystem, as it would to AWS S3 or MinIO.
"""

import os
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest

from tests.conftest import registered_versions, run_cli
from tests.s3_server import CREDS
from tests.s3_server import uri as _uri

pytestmark = pytest.mark.slow


def test_synthetic_data_and_checkpoints_on_s3(s3_endpoint, tmp_path, monkeypatch):
    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    fs, _ = pafs.FileSystem.from_uri(_uri(s3_endpoint, "training") + "&allow_bucket_creation=true")
    fs.create_dir("training")
    data, storage = _uri(s3_endpoint, "training/data/retail"), _uri(s3_endpoint, "training/ray_results")
    proc = run_cli(["workload=xgboost", f"data.path='{data}'", "data.synthetic.rows=3000",
                    "workload.members.0.num_boost_round=20", "workload.checkpoint_every=10",
                    f"cluster.storage_path='{storage}'", "cluster.num_workers=1", "run_name=s3-run"],
                   tmp_path, timeout=400, env=CREDS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[training] data: 3,000 rows" in proc.stdout
    names = {i.base_name for i in fs.get_file_info(pafs.FileSelector("training/data/retail"))}
    assert {"part-00000.parquet", "_generator.json"} <= names
    runs = [i.base_name for i in fs.get_file_info(pafs.FileSelector("training/ray_results"))]
    assert runs == ["s3-run-xgboost"]
    ckpts = [i for i in fs.get_file_info(pafs.FileSelector("training/ray_results/s3-run-xgboost", recursive=True))
             if i.base_name == "model.ubj"]
    assert ckpts, "no checkpoint was written to the object store"
    assert len(registered_versions(tmp_path)) == 1
    # A RayJob retry reruns the same command: it continues from the checkpoints in the store.
    again = run_cli(["workload=xgboost", f"data.path='{data}'", "data.synthetic.rows=3000",
                     "workload.members.0.num_boost_round=30", "workload.checkpoint_every=10",
                     f"cluster.storage_path='{storage}'", "cluster.num_workers=1", "run_name=s3-run"],
                    tmp_path, timeout=400, env=CREDS)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "[xgboost] resuming from checkpoint at round 20" in again.stdout, again.stdout[-3000:]
    assert "[xgboost] round 30/30" in again.stdout and "round 10/30" not in again.stdout


def test_csv_on_s3_with_explicit_columns(s3_endpoint, tmp_path, monkeypatch):
    """Any tabular data, here CSV files with a header on S3, through the CLI: the columns' roles
    given in data options (an id excluded, a numeric code declared categorical), missing values in
    a numeric column. The registered model takes the raw columns and treats the code as a category."""
    import mlflow
    import pandas as pd
    from mlflow.tracking import MlflowClient

    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    fs, _ = pafs.FileSystem.from_uri(_uri(s3_endpoint, "tables") + "&allow_bucket_creation=true")
    fs.create_dir("tables")
    rng = np.random.default_rng(0)
    n = 3000
    df = pd.DataFrame({"listing_id": np.arange(n), "size_m2": rng.uniform(20, 200, n),
                       "rooms": rng.integers(1, 6, n), "district": rng.choice([11, 22, 33], n)})
    df["price"] = 3000 * df.size_m2 + 10000 * df.rooms + df.district.map({11: 0, 22: 9e4, 33: 4e4})
    df.loc[::50, "rooms"] = None  # missing values in a numeric column
    for i, part in enumerate((df.iloc[: n // 2], df.iloc[n // 2:])):
        with fs.open_output_stream(f"tables/houses/part-{i}.csv") as out:
            out.write(part.to_csv(index=False).encode())
    proc = run_cli(["data=csv", f"data.path='{_uri(s3_endpoint, 'tables/houses')}'", "data.target=price",
                    "data.exclude=[listing_id]", "data.categorical=[district]", "workload=lightgbm",
                    "workload.members.0.num_boost_round=60", "workload.registered_model_name=houses",
                    "cluster.num_workers=1"], tmp_path, timeout=400, env=CREDS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[training] data: 3,000 rows, 3 features (1 categorical)" in proc.stdout, proc.stdout[-3000:]
    assert len(registered_versions(tmp_path)) == 1

    db = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=db, registry_uri=db)
    [run] = [r for r in client.search_runs([client.get_experiment_by_name("ray-training").experiment_id])
             if "mlflow.parentRunId" not in r.data.tags]
    assert run.data.metrics["r2_lightgbm"] > 0.9
    mlflow.set_tracking_uri(db)
    model = mlflow.pyfunc.load_model("models:/houses/1")
    assert model.metadata.get_input_schema().input_names() == ["size_m2", "rooms", "district"]
    pipeline = model.unwrap_python_model().model.pipeline
    assert pipeline.categorical_features == ["district"] and set(pipeline.categories["district"]) == {"11", "22", "33"}
    pred = model.predict(pd.DataFrame({"size_m2": [100.0, 100.0], "rooms": [3.0, 3.0], "district": [22, 11]}))
    assert abs(pred[0] - (300000 + 30000 + 90000)) < 60000
    assert pred[0] - pred[1] > 45000  # the district's code is a category, and it matters


def test_missing_bucket_is_a_clear_error(s3_endpoint, tmp_path):
    proc = run_cli(["data=parquet", f"data.path='{_uri(s3_endpoint, 'no-such-bucket/tx')}'", "data.target=y"],
                   tmp_path, env=CREDS)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: data.path does not exist: s3://no-such-bucket/tx")


def test_held_out_csv_files_in_a_bucket_folder_are_read_as_csv(s3_endpoint, monkeypatch):
    """promote.data_path at a folder of csv files on S3 (the gate's held-out rows)."""
    import pandas as pd

    from training.ops.held_out import read_table
    from tests.s3_server import filesystem

    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    fs = filesystem(s3_endpoint, "holdout")
    for i in range(2):
        with fs.open_output_stream(f"holdout/rows/part-{i}.csv") as out:
            out.write(pd.DataFrame({"x": [1.0 + i, 2.0 + i], "y": [3.0, 4.0]}).to_csv(index=False).encode())
    rows = read_table(_uri(s3_endpoint, "holdout/rows"))
    assert sorted(rows["x"]) == [1.0, 2.0, 2.0, 3.0] and list(rows.columns) == ["x", "y"]


def test_a_train_checkpoint_on_s3_reopens_from_what_a_tune_trial_reports(s3_endpoint, monkeypatch):
    """A distributed Tune trial reports where its Train checkpoint is; Ray's Checkpoint.path has
    the storage URI's scheme and options stripped, and opened alone it fails ("URI has empty
    scheme"). The reported place is a URI that reopens the checkpoint, options kept."""
    from ray.train import Checkpoint

    from training.runtime.workers import checkpoint_uri, storage_join

    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    fs, _ = pafs.FileSystem.from_uri(_uri(s3_endpoint, "tuning") + "&allow_bucket_creation=true")
    fs.create_dir("tuning")
    storage = storage_join(_uri(s3_endpoint, "tuning/ray_results"), "search-1-train")
    assert storage == _uri(s3_endpoint, "tuning/ray_results/search-1-train")
    with fs.open_output_stream("tuning/ray_results/search-1-train/t1/checkpoint_000002/state.json") as f:
        f.write(b'{"round": 20}')
    written = Checkpoint("tuning/ray_results/search-1-train/t1/checkpoint_000002", filesystem=fs)  # as Train gives it
    reported = checkpoint_uri(written, storage)
    with Checkpoint(reported).as_directory() as d:
        assert (Path(d) / "state.json").read_text() == '{"round": 20}'
    assert storage_join("/tmp/runs", "search-1-train") == "/tmp/runs/search-1-train"

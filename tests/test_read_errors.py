"""Transient read errors are retried and the data loads fully; permanent ones end in one line.

The faults are real HTTP answers from an S3 endpoint: moto's S3 server (as in
tests/test_object_store.py) behind `tests/flaky_s3.py`, a proxy that answers the first GETs of
every object with an error, or always answers one object with 404 NoSuchKey (a file deleted
after listing). The project reads through pyarrow's S3 filesystem, as from AWS S3.

pyarrow's S3 client already retries throttling, 5xx and dropped connections itself (measured
here: a 503 SlowDown answered 20 times in a row per object was still read; 40 was not). The transient
fault below is one it does not retry (an HTTP 400 with an unknown code, as a gateway in front
of the store may answer; the test declares it transient), so only Ray Data's retries, steered by data.retried_io_errors, can
save the read.

The same proxy, answering late or counting requests, checks that the driver and the held read
do not wait on one round trip after another (footers read at once, column chunks together).
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from tests.conftest import load_config, registered_versions, run_cli
from tests.flaky_s3 import FlakyS3Proxy
from tests.s3_server import CREDS
from tests.s3_server import uri as _uri
from training.errors import UserError

pytestmark = pytest.mark.slow
TRANSIENT = 2  # failed GETs per object before it answers (each retry backs off 1 s, then 2 s)
FAULT = (400, "GatewayBusy", "try again")
# The S3 client does not always hand the error body over (the code then reads UNKNOWN): match the status.
RETRY = "data.retried_io_errors=['HTTP status 400']"
FILES = 2
# What the S3 client makes of a 404 for the object (its code depends on whether it read the body).
GONE = r"AWS Error (NO_SUCH_KEY|RESOURCE_NOT_FOUND) during GetObject operation"


@pytest.fixture(scope="module")
def bucket(s3_endpoint, tmp_path_factory):
    """Two parquet files on S3 and the checksum of a clean read of them. The server's credentials
    are this module's only: later modules on the same worker see the environment they started with."""
    with pytest.MonkeyPatch.context() as env:
        for k, v in CREDS.items():
            env.setenv(k, v)
        fs, _ = pafs.FileSystem.from_uri(_uri(s3_endpoint, "flaky") + "&allow_bucket_creation=true")
        fs.create_dir("flaky")
        rng = np.random.default_rng(3)
        for i in range(FILES):
            n = 400
            pq.write_table(pa.table({"x": rng.normal(size=n), "k": np.arange(n) + i * n, "y": rng.normal(size=n)}),
                           f"flaky/tx/part-{i}.parquet", filesystem=fs)
        yield s3_endpoint


def checksum(df: pd.DataFrame) -> str:
    df = df.sort_values("k").reset_index(drop=True)[["k", "x", "y"]]
    return hashlib.sha256(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes()).hexdigest()


def read_all(endpoint: str, *overrides: str) -> pd.DataFrame:
    from training.data import sources

    cfg = load_config("data=parquet", f"data.path='{_uri(endpoint, 'flaky/tx')}'", "data.target=y", *overrides).data
    sources.check(cfg)
    with sources.reading(cfg):
        return sources.read(cfg).materialize().to_pandas()


def test_transient_errors_are_retried_and_every_row_arrives(bucket, ray_session):
    clean = read_all(bucket)
    with FlakyS3Proxy(bucket, transient=TRANSIENT, transient_answer=FAULT) as proxy:
        flaky = read_all(proxy.endpoint, RETRY)
    assert len(flaky) == len(clean) == FILES * 400
    assert checksum(flaky) == checksum(clean)
    assert len(proxy.injected) == FILES and all(n == TRANSIENT for n in proxy.injected.values())


def _read_with_faults_in_the_tasks(endpoint: str, *overrides: str):
    """The faults start only once the driver has checked and sampled the files: only Ray Data's
    tasks meet them (the listing task that reads the parquet footers, then the read tasks).
    TRANSIENT faults in all, whichever files they hit: each failed attempt of a task uses up at
    least one, so data.read_retries >= TRANSIENT reruns always get through, whatever the order in
    which the files are opened."""
    from training.data import sources

    with FlakyS3Proxy(endpoint, transient_total=TRANSIENT, transient_answer=FAULT) as proxy:
        proxy.armed = False
        cfg = load_config("data=parquet", f"data.path='{_uri(proxy.endpoint, 'flaky/tx')}'", "data.target=y",
                          RETRY, *overrides).data
        ds = sources.read(cfg)
        proxy.armed = True
        with sources.reading(cfg):
            return ds.materialize().to_pandas(), proxy


def test_read_tasks_retry_transient_errors(bucket, ray_session):
    """Ray 2.60 opens a parquet file (its footer, in the listing task and again in the read task)
    outside the per-operation retries, so the task-level reruns (data.read_retries, default 3) are
    what read every row here."""
    clean = read_all(bucket)
    flaky, proxy = _read_with_faults_in_the_tasks(bucket)
    assert checksum(flaky) == checksum(clean)
    assert sum(proxy.injected.values()) == TRANSIENT


def test_read_tasks_without_reruns_fail_on_the_same_faults(bucket, ray_session):
    with pytest.raises(UserError) as err:
        _read_with_faults_in_the_tasks(bucket, "data.read_retries=0")
    assert "AWS Error UNKNOWN (HTTP status 400)" in str(err.value) and "\n" not in str(err.value)


def test_without_retries_the_same_faults_fail_the_read(bucket, ray_session):
    """The control: the default data.retried_io_errors does not list the fault, so it is fatal (one line)."""
    with FlakyS3Proxy(bucket, transient=TRANSIENT, transient_answer=FAULT) as proxy, pytest.raises(UserError) as err:
        read_all(proxy.endpoint)
    assert str(err.value).startswith(f"cannot read parquet data at {_uri(proxy.endpoint, 'flaky/tx')}: ")
    assert "AWS Error UNKNOWN (HTTP status 400)" in str(err.value) and "\n" not in str(err.value)
    assert sum(proxy.injected.values()) == 1  # not retried


def test_a_file_deleted_after_listing_fails_at_once_naming_it(bucket, ray_session):
    """Inside the Ray read tasks (the driver's check is skipped): not retried, one line with the cause."""
    from training.data import sources

    with FlakyS3Proxy(bucket, gone=("part-1.parquet",)) as proxy:
        cfg = load_config("data=parquet", f"data.path='{_uri(proxy.endpoint, 'flaky/tx')}'", "data.target=y").data
        with pytest.raises(UserError) as err:
            with sources.reading(cfg):
                sources.read(cfg).materialize()
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"cannot read parquet data at {cfg.path}: "), msg
    assert re.search(GONE, msg), msg
    assert proxy.injected["flaky/tx/part-1.parquet"] == 1  # a permanent error is not retried


def _hold_with_faults_in_the_tasks(proxy: FlakyS3Proxy, *overrides: str) -> pd.DataFrame:
    """prepare()'s read of a source it holds (training/data/holding.py): the driver measures
    the source, then the faults start, so that only the planned read tasks meet them."""
    import ray

    from training.data import holding, sources

    cfg = load_config("data=parquet", f"data.path='{_uri(proxy.endpoint, 'flaky/tx')}'", "data.target=y",
                      *overrides).data
    proxy.armed = False
    raw, size = sources.read(cfg), holding.measure(cfg)
    proxy.armed = True
    with sources.reading(cfg):
        return pa.concat_tables(ray.get(holding.hold(cfg, raw, size))).to_pandas()


def test_a_held_source_is_read_through_transient_errors(bucket, ray_session):
    """Without task reruns (data.read_retries=0): the task's own retries, Ray Data's policy, read
    every file (a task that exhausts them is rerun, as Ray Data's are, for transient errors only)."""
    clean = read_all(bucket)
    with FlakyS3Proxy(bucket, transient=TRANSIENT, transient_answer=FAULT) as proxy:
        held = _hold_with_faults_in_the_tasks(proxy, RETRY, "data.read_retries=0")
    assert checksum(held) == checksum(clean)
    assert dict(proxy.injected) == {f"flaky/tx/part-{i}.parquet": TRANSIENT for i in range(FILES)}


def test_a_held_source_fails_at_once_on_a_permanent_error(bucket, ray_session):
    """A file deleted after the driver read its footer: one line naming the cause, not retried
    (neither within the task nor by a rerun of it), although other errors are retried."""
    with FlakyS3Proxy(bucket, gone=("part-1.parquet",)) as proxy:
        with pytest.raises(UserError) as err:
            _hold_with_faults_in_the_tasks(proxy, RETRY)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"cannot read parquet data at {_uri(proxy.endpoint, 'flaky/tx')}: "), msg
    assert re.search(GONE, msg), msg
    assert proxy.injected["flaky/tx/part-1.parquet"] == 1


def test_the_checks_before_a_cluster_read_one_file_only(bucket):
    """`check` runs before Ray starts and reads the schema and one row: of a dataset of many
    large files on an object store, the first file only (no read-ahead into the others)."""
    from training.data import sources

    with FlakyS3Proxy(bucket) as proxy:  # no faults: the proxy only counts the GETs per object
        cfg = load_config("data=parquet", f"data.path='{_uri(proxy.endpoint, 'flaky/tx')}'", "data.target=y").data
        sources.check(cfg)
    assert set(proxy.gets) == {"flaky/tx/part-0.parquet"}, dict(proxy.gets)


def test_the_footers_of_many_files_are_read_at_once(bucket):
    """Before any work, the driver reads every footer of a parquet source (its rows and row
    groups plan the held read). From a store where each request waits on a round trip, it reads
    them many at a time, not one file after another: the proxy, answering every object request
    after 0.2 s, sees several in flight at once; and every file's row groups come out right."""
    from training.data import holding

    files, groups = 12, [100, 100, 50]
    fs, _ = pafs.FileSystem.from_uri(_uri(bucket, "flaky"))
    table = pa.table({"x": np.arange(sum(groups), dtype=np.float64), "y": np.ones(sum(groups))})
    for i in range(files):
        with fs.open_output_stream(f"flaky/many/part-{i:02d}.parquet") as out:
            pq.write_table(table, out, row_group_size=groups[0])
    with FlakyS3Proxy(bucket, latency_s=0.2) as proxy:
        cfg = load_config("data=parquet", f"data.path='{_uri(proxy.endpoint, 'flaky/many')}'", "data.target=y").data
        size = holding.measure(cfg)
    assert sorted(f.path.rsplit("/", 1)[-1] for f in size.files) == [f"part-{i:02d}.parquet" for i in range(files)]
    assert [f.row_groups for f in size.files] == [groups] * files and size.rows == files * sum(groups)
    assert proxy.most_in_flight >= 4, proxy.most_in_flight


def test_a_held_file_is_read_in_a_few_requests_not_one_per_column_chunk(bucket, ray_session):
    """The driver's sample of a file's first rows (for the size estimate) and the held read
    fetch the column chunks they need together (coalesced byte ranges): on an object store each
    request is a round trip, and a wide file has a chunk per column per row group. 24 columns x
    2 row groups here: one request per chunk made 51 and 49 GETs."""
    import ray

    from training.data import holding, sources

    fs, _ = pafs.FileSystem.from_uri(_uri(bucket, "flaky"))
    rng = np.random.default_rng(5)
    table = pa.table({f"c{i}": rng.normal(size=2000) for i in range(23)} | {"y": rng.normal(size=2000)})
    with fs.open_output_stream("flaky/wide/part-0.parquet") as out:
        pq.write_table(table, out, row_group_size=1000)
    with FlakyS3Proxy(bucket) as proxy:
        cfg = load_config("data=parquet", f"data.path='{_uri(proxy.endpoint, 'flaky/wide')}'", "data.target=y").data
        raw = sources.read(cfg)
        proxy.gets.clear()
        size = holding.measure(cfg)   # the footer, then the first rows for the width
        measured = proxy.gets.pop("flaky/wide/part-0.parquet")
        with sources.reading(cfg):
            held = pa.concat_tables(ray.get(holding.hold(cfg, raw, size)))
    assert held.equals(table)
    assert measured <= 6 and proxy.gets["flaky/wide/part-0.parquet"] <= 6, (measured, dict(proxy.gets))  # 48 chunks


def _cli(endpoint: str, tmp_path, *extra: str):
    return run_cli(["workload=xgboost", "data=parquet", f"data.path='{_uri(endpoint, 'flaky/tx')}'",
                    "data.target=y", "workload.members.0.num_boost_round=10", "workload.checkpoint_every=5",
                    "cluster.num_workers=1", "cluster.num_cpus=2", "cluster.storage_path=ckpt", *extra],
                   tmp_path, timeout=400, env=CREDS)


def test_cli_run_through_transient_errors_registers_the_model(bucket, tmp_path):
    with FlakyS3Proxy(bucket, transient=TRANSIENT, transient_answer=FAULT) as proxy:
        proc = _cli(proxy.endpoint, tmp_path, RETRY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"[training] data: {FILES * 400:,} rows" in proc.stdout
    assert sum(proxy.injected.values()) >= FILES * TRANSIENT
    assert len(registered_versions(tmp_path)) == 1


def test_cli_permanent_error_is_one_line_and_leaves_nothing(bucket, tmp_path):
    from mlflow.tracking import MlflowClient

    with FlakyS3Proxy(bucket, gone=("part-1.parquet",)) as proxy:
        proc = _cli(proxy.endpoint, tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot read parquet data at s3://flaky/tx?endpoint_override={proxy.endpoint}"), last
    assert re.search(GONE, last), last
    assert "Traceback" not in proc.stderr
    assert registered_versions(tmp_path) == []
    db = tmp_path / "mlruns" / "mlflow.db"
    if db.exists():
        assert MlflowClient(f"sqlite:///{db}").search_runs(
            [e.experiment_id for e in MlflowClient(f"sqlite:///{db}").search_experiments()]) == []
    assert not (tmp_path / "ckpt").exists() or not any((tmp_path / "ckpt").rglob("*"))

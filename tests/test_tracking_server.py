"""Tracking against a real `mlflow server` process started by the test (runs, artifacts, registry over HTTP)."""

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import SMALL, load_config, small_rounds
from training.gbdt import workload as gbdt

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen([str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                             "--backend-store-uri", f"sqlite:///{root}/server.db",
                             "--artifacts-destination", str(root / "artifacts")],
                            stdout=subprocess.DEVNULL, stderr=open(root / "server.log", "w"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    yield url, root
    proc.terminate()
    proc.wait(20)


@pytest.mark.fresh_store
def test_run_and_model_version_land_on_the_server(ray_session, workdir, mlflow_server):
    url, root = mlflow_server
    cfg = load_config(*SMALL, *small_rounds("xgboost", 20), "tracking=server", f"tracking.uri={url}",
                      "tracking.experiment=server-test", "cluster.num_workers=1")
    result = gbdt.run(cfg)
    assert result.tracking_uri == url
    client = MlflowClient(tracking_uri=url, registry_uri=url)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert [int(v.version) for v in client.search_model_versions("name='retail-demand-xgboost'")] == [1]
    # The artifacts went through the server into its artifact store, not into the working dir.
    assert not (workdir / "mlruns").exists()
    assert list((root / "artifacts").rglob("feature_importance.png"))
    mlflow.set_tracking_uri(url)
    model = mlflow.pyfunc.load_model(result.model_uri)
    raw = pd.read_parquet(workdir / "data/synthetic/retail").head(10).drop(columns=["spend_next_30d"])
    assert len(model.predict(raw)) == 10


def test_tracking_uri_from_the_environment(mlflow_server, monkeypatch):
    url, _ = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    from training.runtime import tracking

    cfg = load_config("tracking=server")
    assert tracking.setup(cfg.tracking) == url

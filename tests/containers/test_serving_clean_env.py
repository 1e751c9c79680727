"""A registered model serves from a clean environment that has only the model's own requirements.

What `mlflow models serve`, batch scoring jobs and serving platforms do with a registered model: a
GBDT ensemble is trained and registered by the CLI (`python -m training workload=ensemble`, local
tracking), its artifacts are downloaded, a fresh virtual environment installs only the model's
`requirements.txt`, and `mlflow models serve --env-manager local` in that environment answers a POST
of the model's own `serving_input_example.json` on /invocations with the predictions the model gives
in-process (in the project's environment).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.conftest import registered_versions, run_cli, small_rounds  # noqa: E402

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_registered_ensemble_serves_from_its_own_requirements(tmp_path):
    proc = run_cli([*small_rounds("ensemble", 10), "data.synthetic.rows=2000", "data.synthetic.partitions=2"],
                   tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [version] = registered_versions(tmp_path)

    import mlflow

    db = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    mlflow.set_tracking_uri(db)
    mlflow.set_registry_uri(db)
    uri = f"models:/{version.name}/{version.version}"
    model_dir = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "model")))
    example = json.loads((model_dir / "serving_input_example.json").read_text())
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame(**example["dataframe_split"]) if "dataframe_split" in example else pd.DataFrame(
        example["dataframe_records"])
    predicted = mlflow.pyfunc.load_model(uri).predict(frame)
    expected = np.asarray(predicted.iloc[:, 0] if isinstance(predicted, pd.DataFrame) else predicted).ravel()

    # A clean environment: nothing but the model's requirements (pip's own index configuration).
    env_dir = tmp_path / "clean-env"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    pip = subprocess.run([str(py), "-m", "pip", "install", "--quiet", "-r", str(model_dir / "requirements.txt")],
                         capture_output=True, text=True, timeout=1200)
    assert pip.returncode == 0, pip.stderr[-3000:]

    port = free_port()
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MLFLOW_", "VIRTUAL_ENV"))}
    clean_env["PATH"] = f"{env_dir / 'bin'}:{clean_env['PATH']}"
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen([str(env_dir / "bin" / "mlflow"), "models", "serve", "-m", str(model_dir),
                               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
                              cwd=tmp_path, env=clean_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 240
        body = (model_dir / "serving_input_example.json").read_bytes()
        answer = None
        while time.time() < deadline and server.poll() is None:
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=30) as r:  # nosec B310: the test's own server
                    answer = json.loads(r.read())
                break
            except OSError:
                time.sleep(2)
        assert answer is not None, (tmp_path / "serve.log").read_text()[-4000:]
        got = answer["predictions"]
        got = [p if not isinstance(p, dict) else next(iter(p.values())) for p in got]
        assert len(got) == len(expected)
        assert [round(float(a), 4) for a in got] == [round(float(b), 4) for b in list(expected)]
    finally:
        server.terminate()
        server.wait(30)
        log.close()

"""A registered model serves where models are served: a fresh virtual environment that installs
only the model's own requirements.txt, and `mlflow models serve` answering POSTs on /invocations.

This is what `mlflow models serve`, batch scoring jobs and serving platforms do with a model from
the registry: nothing of this project's environment (Ray, Hydra, the rest of `training/`) is
there. The predictions must equal the in-process model's on the model's own serving example.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import SMALL, run_cli, small_rounds
from tests.local_cluster import free_port

pytestmark = pytest.mark.slow


def clean_venv(where: Path, requirements: Path) -> Path:
    """A new venv holding the model's requirements and nothing else; its python.

    uv resolves and installs the requirements.txt as pip would, in seconds rather than minutes.
    Wheel locations given to pip on this machine (PIP_FIND_LINKS) are passed on, so a pinned
    local build such as torch's CPU wheel is found where pip finds it."""
    uv = Path(sys.executable).parent / "uv"
    subprocess.run([str(uv), "venv", "--quiet", "--seed", "--python", sys.executable, str(where)], check=True)
    python = where / "bin" / "python"
    links = [arg for link in os.environ.get("PIP_FIND_LINKS", "").split() for arg in ("--find-links", link)]
    proc = subprocess.run([str(uv), "pip", "install", "--quiet", "--python", str(python), *links,
                           "-r", str(requirements)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return python


def serve_and_post(python: Path, model_dir: Path, body: bytes, log: Path) -> list:
    """`mlflow models serve` from the clean venv on a free loopback port; the /invocations answer."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "MLFLOW_"))}
    env["PATH"] = f"{python.parent}:{env.get('PATH', '')}"
    with open(log, "w") as out:
        server = subprocess.Popen([str(python.parent / "mlflow"), "models", "serve", "-m", str(model_dir),
                                   "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
                                  stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log.parent,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the model server did not come up:\n{log.read_text()[-3000:]}")
                time.sleep(1)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["predictions"]
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def registered_model(workdir: Path, args: list) -> tuple:
    """Train and register with the CLI: the registered version's files, downloaded, and the
    finished process (its stdout and stderr)."""
    proc = run_cli(args, workdir, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    uri = next(line.split()[-1] for line in proc.stdout.splitlines() if line.startswith("Model version:"))
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(workdir / "model"))), proc


def the_run(workdir: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ray-training").experiment_id
    parents = [r for r in client.search_runs([experiment]) if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, parents
    return client, parents[0]


def test_the_registered_ensemble_serves_from_its_own_requirements_only(workdir):
    model_dir, proc = registered_model(workdir, [*small_rounds("ensemble", 20), *SMALL, "cluster.num_cpus=2"])
    out = proc.stdout
    # What the user watches: the run's own lines, a member's progress with how long is left until
    # its last round, and no chatter from Ray Data, MLflow or XGBoost.
    for line in ("[training] data: 6,000 rows", "[training] ray: 1 node(s)", "[xgb_deep] round 20/20",
                 "| rounds | seconds | valid RMSE |"):
        assert line in out, out[-3000:]
    rounds = [line for line in out.splitlines() if "[xgb_deep] round " in line]
    assert len(rounds) >= 2 and "ETA" not in rounds[-1], rounds
    assert all(re.search(r"rounds/s, ETA (\d+s|\d+m\d\ds)\)$", line) for line in rounds[:-1]), rounds
    # "got rank": XGBoost's collective, which a one-worker slot does not start. The output is a
    # pipe here, as in a CI log or `kubectl logs`: no colour codes around the workers' prefixes.
    for noise in ("Progress bars disabled", "execution finished in", "Downloading artifacts", "got rank",
                  "Token authentication is enabled", " INFO mlflow", "\x1b["):
        assert noise not in out + proc.stderr, noise
    assert "(RayTrainWorker pid=" in out, out[-3000:]
    # The default ensemble's members, run to completion through the CLI: its summary, its usage.
    rows = {line.split("|")[0].strip(): [cell.strip() for cell in line.split("|")[1:]]
            for line in out.splitlines() if line.count("|") >= 6}
    assert rows["xgb_deep"][0] == rows["xgb_shallow"][0] == "xgboost", out[-3000:]
    assert rows["lgbm"][0] == "lightgbm" and rows["ensemble"][0] == "weighted", out[-3000:]
    for line in ("Resources:", "Model version: models:/retail-demand-ensemble/1"):
        assert line in out, out[-3000:]
    client, run = the_run(workdir)
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert run.info.status == "FINISHED"
    assert sorted(c.info.run_name for c in children) == ["lgbm", "xgb_deep", "xgb_shallow"]
    # Weights fitted on the validation split: never worse there than the best member.
    assert run.data.metrics["rmse_ensemble"] <= min(run.data.metrics[f"rmse_{m}"]
                                                    for m in ("xgb_deep", "xgb_shallow", "lgbm")) + 1e-9
    requirements = (model_dir / "requirements.txt").read_text().split()
    assert {r.split("==")[0] for r in requirements} == {"xgboost", "lightgbm", "pandas", "numpy", "pyarrow",
                                                        "scipy", "mlflow-skinny"}
    # The model carries the code it runs and nothing else of the package.
    code = sorted(str(p.relative_to(model_dir / "code")) for p in (model_dir / "code").rglob("*.py"))
    assert "training/gbdt/ensemble.py" in code and "training/data/features.py" in code
    assert not [c for c in code if c.startswith(("training/runtime", "training/config", "training/tune",
                                                 "training/bert", "training/gbdt/workload"))], code

    python = clean_venv(workdir / "venv", model_dir / "requirements.txt")
    missing = subprocess.run([str(python), "-c", "import importlib.util as u; "
                              "print([m for m in ('ray', 'hydra', 'omegaconf') if u.find_spec(m)])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert missing == "[]", f"the clean environment has {missing}"

    body = (model_dir / "serving_input_example.json").read_bytes()
    served = serve_and_post(python, model_dir, body, workdir / "serve.log")

    import mlflow
    import pandas as pd

    example = pd.DataFrame(**json.loads(body)["dataframe_split"])
    expected = mlflow.pyfunc.load_model(str(model_dir)).predict(example)
    got = [p["prediction"] if isinstance(p, dict) else p for p in served]
    assert got == pytest.approx(list(expected), rel=1e-6)


def test_the_registered_text_classifier_serves_from_its_own_requirements_only(workdir):
    from tests.test_bert import TINY

    args = [*TINY, "workload.epochs=1", "cluster.num_workers=1", "cluster.num_cpus=2"]
    model_dir, proc = registered_model(workdir, args)
    out = proc.stdout
    assert "Model version: models:/" in out and "Resources:" in out, out[-3000:]
    client, run = the_run(workdir)
    assert run.info.status == "FINISHED" and run.data.params["workload.name"] == "bert"
    assert client.get_metric_history(run.info.run_id, "train_loss_step")
    requirements = (model_dir / "requirements.txt").read_text().split()
    assert {r.split("==")[0] for r in requirements} == {"transformers", "torch", "tokenizers", "pandas", "mlflow-skinny"}
    assert not (model_dir / "code").exists()  # a transformers model: no project code at all

    python = clean_venv(workdir / "venv", model_dir / "requirements.txt")
    body = (model_dir / "serving_input_example.json").read_bytes()
    served = serve_and_post(python, model_dir, body, workdir / "serve.log")

    import mlflow

    texts = json.loads(body)["inputs"]
    expected = mlflow.pyfunc.load_model(str(model_dir)).predict(texts)
    assert [p["label"] for p in served] == list(expected["label"])
    assert {p["label"] for p in served} <= {"negative", "positive"}

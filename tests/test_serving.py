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

import numpy as np
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
    """The default ensemble through the CLI, to completion: one worker per member on 2 CPUs, so
    two members train at once. xgb_deep, at learning rate 1, overfits within a few rounds and
    stops early; the others boost all 40 rounds. Then its registered version, served."""
    rounds = 40
    model_dir, proc = registered_model(workdir, [*small_rounds("ensemble", rounds), *SMALL, "cluster.num_cpus=2",
                                                 "cluster.num_workers=1", "workload.members.0.params.eta=1.0",
                                                 "workload.members.0.early_stopping_rounds=3"])
    out = proc.stdout
    # What the user watches: the run's own lines, a member's progress with how long is left until
    # its last round, and no chatter from Ray Data, MLflow or XGBoost.
    for line in ("[training] data: 6,000 rows", "[training] ray: 1 node(s)", f"[xgb_shallow] round {rounds}/{rounds}",
                 "| rounds | seconds | valid RMSE |"):
        assert line in out, out[-3000:]
    progress = [line for line in out.splitlines() if "[xgb_shallow] round " in line]
    assert len(progress) >= 2 and "ETA" not in progress[-1], progress
    assert all(re.search(r"rounds/s, ETA (\d+s|\d+m\d\ds)\)$", line) for line in progress[:-1]), progress
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

    # MLflow: the parent run with the ensemble's metrics, weights and plots; a child run per member.
    client, run = the_run(workdir)
    assert run.info.status == "FINISHED"
    assert run.data.params["workload.name"] == "ensemble" and run.data.params["cluster.num_workers"] == "1"
    members = ("xgb_deep", "xgb_shallow", "lgbm")
    # Weights fitted on the validation split: never worse there than the best member.
    metrics = run.data.metrics
    assert metrics["rmse_ensemble"] <= min(metrics[f"rmse_{m}"] for m in members) + 1e-9
    assert metrics["r2_ensemble"] > 0.5 and all(metrics[f"weight_{m}"] >= 0 for m in members), metrics
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/feature_importance.png", "plots/validation_curves.png"}
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert sorted(c.info.run_name for c in children) == sorted(members)
    for child in children:
        points = client.get_metric_history(child.info.run_id, "valid_rmse_curve")
        curve = [m.value for m in sorted(points, key=lambda m: m.step)]
        kept = int(child.data.metrics["best_iteration"])
        assert child.info.status == "FINISHED"
        assert "valid_r2" in child.data.metrics and child.data.params["num_boost_round"] == str(rounds)
        assert sorted(m.step for m in points) == list(range(1, len(curve) + 1))  # each round once
        # Logged by rank 0 as it boosted, each point at its round's time (the driver's fill-in at
        # the end would give every point one timestamp).
        assert len({m.timestamp for m in points}) > len(points) // 2
        if child.info.run_name == "xgb_deep":
            # Stopped 3 rounds after its best round; the model keeps the best round's trees.
            assert len(curve) == kept + 3 < rounds and kept == int(np.argmin(curve)) + 1, curve
            assert child.data.metrics["rounds_boosted"] == len(curve)
            assert rows["xgb_deep"][1] == f"{kept} of {len(curve)}", out[-3000:]
        else:
            assert len(curve) == kept == rounds and curve[-1] < curve[0]
    # The cluster holds two members' workers at once: the first two trained concurrently.
    spans = {c.info.run_name: (c.data.metrics["started_at"], c.data.metrics["finished_at"]) for c in children}
    (s1, e1), (s2, e2) = spans["xgb_deep"], spans["xgb_shallow"]
    assert s2 < e1 and s1 < e2, spans

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

    model = mlflow.pyfunc.load_model(str(model_dir))
    example = pd.DataFrame(**json.loads(body)["dataframe_split"])
    got = [p["prediction"] if isinstance(p, dict) else p for p in served]
    assert got == pytest.approx(list(model.predict(example)), rel=1e-6)
    # The registered version is the whole ensemble and predicts from raw rows.
    raw = pd.read_parquet(workdir / "data/synthetic/retail").head(50)
    pred = model.predict(raw.drop(columns=["spend_next_30d"]))
    assert len(pred) == 50 and np.isfinite(pred).all()
    assert np.corrcoef(pred, raw["spend_next_30d"])[0, 1] > 0.6


def test_the_registered_text_classifier_serves_from_its_own_requirements_only(workdir):
    """workload=bert through the CLI: JSON lines with their own column names and string labels,
    2 workers x 2 epochs of a tiny BERT; it learns (accuracy far above chance, 0.5), logs each
    step as it trains, registers a transformers model. Then that version, served."""
    import mlflow

    from training.data.schema import TextSyntheticConfig
    from training.data.text import synthesize
    from tests.test_bert import TINY

    table = synthesize(TextSyntheticConfig(rows=800, seed=11)).to_pandas()
    table.rename(columns={"text": "review", "label": "sentiment"}).to_json(workdir / "reviews.jsonl",
                                                                            orient="records", lines=True)
    tiny_model = [a for a in TINY if not a.startswith("data")]  # the model and run; the data are these files
    args = [*tiny_model, "data=jsonl", f"data.path={workdir}/reviews.jsonl", "data.text.column=review",
            "data.target=sentiment", "workload.registered_model_name=tiny-bert", "cluster.num_cpus=2"]
    model_dir, proc = registered_model(workdir, args)
    out = proc.stdout
    for line in ("[bert] 2 worker(s) on cpu, fp32", "[bert] epoch 2/2", "accuracy | macro-F1",
                 "Resources:", "Model version: models:/tiny-bert/1"):
        assert line in out, out[-3000:]

    # MLflow: loss and learning rate per logged step, evaluation per epoch, the plot, the model.
    client, run = the_run(workdir)
    assert run.info.status == "FINISHED" and run.data.params["workload.name"] == "bert"

    def history(key: str) -> list:
        return sorted((m.step, m.value, m.timestamp) for m in client.get_metric_history(run.info.run_id, key))

    assert run.data.metrics["final_eval_accuracy"] > 0.85 and run.data.metrics["final_eval_macro_f1"] > 0.85
    # One evaluation per epoch, each well below chance (ln 2 = 0.69 for two balanced classes). Not
    # "epoch 2 below epoch 1": at this learning rate the second epoch may overfit 700 training rows.
    losses = history("eval_loss")
    assert [s for s, _, _ in losses] == [1, 2] and max(v for _, v, _ in losses) < 0.5, losses
    steps = history("train_loss_step")
    assert [s for s, _, _ in steps] == list(range(10, 81, 10))
    # Logged by rank 0 as it trained: each point at its own step's time, not one shared stamp.
    assert len({t for _, _, t in steps}) > len(steps) // 2
    lrs = [v for _, v, _ in history("learning_rate")]
    assert lrs[0] > lrs[-1] == pytest.approx(0.0)       # linear decay to 0 after the warm-up
    assert "plots/loss_curve.png" in {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    requirements = (model_dir / "requirements.txt").read_text().split()
    assert {r.split("==")[0] for r in requirements} == {"transformers", "torch", "tokenizers", "pandas", "mlflow-skinny"}
    assert not [r for r in requirements if "+" in r], requirements  # no local build label (torch's +cpu)
    assert not (model_dir / "code").exists()  # a transformers model: no project code at all
    # The label mapping travels with the model: held-out rows come back as their own labels.
    model = mlflow.pyfunc.load_model(str(model_dir))
    rows = table[table.index >= 700]
    pred = model.predict(list(rows["text"]))
    assert set(pred["label"]) <= {"negative", "positive"}
    assert (pred["label"].to_numpy() == rows["label"].to_numpy()).mean() > 0.85

    python = clean_venv(workdir / "venv", model_dir / "requirements.txt")
    body = (model_dir / "serving_input_example.json").read_bytes()
    served = serve_and_post(python, model_dir, body, workdir / "serve.log")

    texts = json.loads(body)["inputs"]
    expected = model.predict(texts)
    assert [p["label"] for p in served] == list(expected["label"])
    assert {p["label"] for p in served} <= {"negative", "positive"}

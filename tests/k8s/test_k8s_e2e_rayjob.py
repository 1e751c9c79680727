"""The rendered RayJob, end to end, without Kubernetes (verification.md layer 8).

A real multi-process Ray cluster shaped like the rendered RayCluster spec: a head
and one node per worker group, each started with its group's rayStartParams, CPU
count and memory limit (a custom resource stands in for nvidia.com/gpu), the
container env (MLFLOW_TRACKING_URI...), and token auth on with the token from the
rendered Secret, as KubeRay's authOptions injects it. The rendered MLflow
Deployment's command runs as the tracking server. The RayJob's exact entrypoint
and runtimeEnvYAML go through the Job Submission API on the head's dashboard
port (what KubeRay's submitter does); the job must SUCCEED and its run must be in MLflow:
found through the pods' MLFLOW_TRACKING_URI, its artifacts in the server's artifact store (none
left on the nodes), its registered version loading from the server and predicting.

Local substitutions, and only these: ports (free ones, so other Ray clusters on
the machine are untouched), in-pod paths (/work, /mlflow -> temp dirs; the shared
PVC mount path is a chart value set to a temp dir), the MLflow Service address
(-> 127.0.0.1:<port>), and the container's /home/ray/app -> this checkout's venv.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List

import pytest
import yaml

import k8s_support as k
from tests.ray_cluster import LocalCluster, free_port, http_ok, node_ports, wait_for

pytestmark = pytest.mark.slow

VENV_BIN = Path(sys.executable).parent
E2E_VALUES = k.CI_VALUES_DIR / "e2e-values.yaml"


def cpus(container: dict) -> int:
    return max(1, int(k.parse_quantity(container["resources"]["limits"]["cpu"])))


def memory(container: dict) -> int:
    return int(k.parse_quantity(container["resources"]["limits"]["memory"]))


def start_params(params: dict) -> list[str]:
    """rayStartParams -> `ray start` flags, as KubeRay builds them. The object store is scaled
    down to fit this machine, like the CPUs and memory (the callers pass their own size)."""
    return [f"--{key}={value}" for key, value in params.items() if key != "object-store-memory"]


SUBMIT = textwrap.dedent("""
    import json, sys, time
    from ray.job_submission import JobSubmissionClient, JobStatus
    address, entrypoint, runtime_env, timeout = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4])
    client = JobSubmissionClient(address)
    job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env or None)
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = client.get_job_status(job_id)
        if status.is_terminal():
            break
        time.sleep(2)
    print(json.dumps({"job_id": job_id, "status": str(status.value), "logs": client.get_job_logs(job_id)[-6000:]}))
""")


def submit(address: str, entrypoint: str, runtime_env: dict, env: dict, timeout: float) -> dict:
    proc = subprocess.run([sys.executable, "-c", SUBMIT, address, entrypoint, json.dumps(runtime_env), str(timeout)],
                          env=env, capture_output=True, text=True, timeout=timeout + 120)
    if proc.returncode != 0:
        return {"status": "SUBMIT_ERROR", "logs": proc.stdout[-3000:] + proc.stderr[-3000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def cluster(tmp_path):
    c = LocalCluster(tmp_path)
    yield c
    c.stop()


def test_rendered_rayjob_succeeds_on_a_real_ray_cluster(tmp_path, cluster):
    shared = tmp_path / "shared"
    values = k.load_values(E2E_VALUES)
    values["storage"]["pvc"] = {"mountPath": str(shared)}
    objs = k.render_objects(values)
    job = k.one(objs, "RayJob")
    spec = job["spec"]["rayClusterSpec"]
    assert spec["authOptions"]["mode"] == "token"
    token = base64.b64decode(k.one(objs, "Secret")["data"]["auth_token"]).decode()

    work = tmp_path / "work"
    mlflow_dir = tmp_path / "mlflow"
    for d in (shared, work, mlflow_dir):
        d.mkdir()

    def local_path(value: str) -> str:
        return value.replace("/work", str(work), 1) if value.startswith("/work") else value

    # --- MLflow: the rendered Deployment's command, args and env ----------------------------
    mlf = k.one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    mlf_env = {e["name"]: e["value"] for e in mlf["env"] if "value" in e}
    backend = mlf_env["MLFLOW_BACKEND_STORE_URI"].replace("/mlflow", str(mlflow_dir))
    port = free_port()
    args = []
    for a in mlf["args"]:
        a = a.replace("$(MLFLOW_BACKEND_STORE_URI)", backend).replace("=/mlflow", f"={mlflow_dir}")
        a = "--host=127.0.0.1" if a.startswith("--host=") else f"--port={port}" if a.startswith("--port=") else a
        args.append(a)
    env = {**os.environ, **mlf_env, "RT_WORKDIR": str(mlflow_dir), "HOME": str(tmp_path)}
    env["PATH"] = f"{VENV_BIN}:{env['PATH']}"
    cluster.spawn([str(VENV_BIN / mlf["command"][0]), *mlf["command"][1:], *args], env, "mlflow")
    local_mlflow = f"http://127.0.0.1:{port}"
    wait_for(lambda: http_ok(f"{local_mlflow}/health") == 200, 120, "the MLflow server", tmp_path)
    # The Host header Ray pods send (the Service name) is accepted; a foreign one is not.
    tracking_uri_in_pods = next(e["value"] for e in spec["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
                                if e["name"] == "MLFLOW_TRACKING_URI")
    search = f"{local_mlflow}/api/2.0/mlflow/experiments/search?max_results=1"
    pod_host = tracking_uri_in_pods.removeprefix("http://")

    def answer(host: str) -> int:
        """The server's first answer to a search sent with this Host header. Each of the server's
        workers sets up its store (SQLAlchemy, the schema) on the first API call it gets, which
        on a loaded machine can outlast one request's timeout; the next request may meet
        another worker doing the same, so every check waits for an answer, not only the first."""
        statuses = []
        wait_for(lambda: statuses.append(http_ok(search, host=host)) or statuses[-1] != 0, 120,
                 f"the MLflow API to answer a request for Host {host}", tmp_path)
        return statuses[-1]

    assert answer(pod_host) == 200
    assert answer("evil.example.com:5000") == 403

    # --- Ray: head + one node per worker group, env as in the pods --------------------------
    def ray_env(container: dict) -> dict:
        e = {k_: v for k_, v in os.environ.items() if not k_.startswith(("RAY_", "MLFLOW_"))}
        for item in container.get("env", []):
            value = item["value"].replace(tracking_uri_in_pods, local_mlflow)
            e[item["name"]] = local_path(value)
        e.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RT_WORKDIR=str(work), HOME=str(tmp_path),
                 PATH=f"{VENV_BIN}:{os.environ['PATH']}", PYTHONUNBUFFERED="1")
        return e

    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    ports: Dict[str, int] = {}
    ray = str(VENV_BIN / "ray")

    def head_argv() -> List[str]:
        ports.update(gcs=free_port(), dashboard=free_port())
        return [ray, "start", "--head", "--block", f"--port={ports['gcs']}", "--node-ip-address=127.0.0.1",
                f"--dashboard-port={ports['dashboard']}", "--dashboard-host=127.0.0.1", "--include-dashboard=true",
                f"--ray-client-server-port={free_port()}", f"--temp-dir={cluster.temp_dir}",
                f"--num-cpus={cpus(head)}", f"--memory={memory(head)}", "--object-store-memory=300000000",
                *node_ports(), *start_params(spec["headGroupSpec"]["rayStartParams"])]

    cluster.start_node(head_argv, ray_env(head), "ray-head")
    dashboard = f"http://127.0.0.1:{ports['dashboard']}"
    wait_for(lambda: http_ok(f"{dashboard}/api/gcs_healthz") == 200, 180, "the Ray head", tmp_path)

    for g in spec["workerGroupSpecs"]:
        c = g["template"]["spec"]["containers"][0]
        gpus = int(c["resources"]["limits"].get("nvidia.com/gpu", 0))
        extra = [f"--resources={json.dumps({'gpu_standin': gpus})}"] if gpus else []
        for i in range(g["replicas"]):
            # One node at a time: each start is retried (LocalCluster.start_node) and must not race another.
            cluster.start_node(lambda c=c, g=g, extra=extra: [
                ray, "start", "--block", f"--address=127.0.0.1:{ports['gcs']}", "--node-ip-address=127.0.0.1",
                f"--num-cpus={cpus(c)}", f"--memory={memory(c)}", "--object-store-memory=300000000",
                f"--temp-dir={cluster.node_temp_dir()}", *node_ports(), *extra,
                *start_params(g["rayStartParams"])], ray_env(c), f"ray-{g['groupName']}-{i}")

    client_env = {**ray_env(head), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    nodes_expected = 1 + sum(g["replicas"] for g in spec["workerGroupSpecs"])

    def nodes_alive() -> bool:
        probe = ("import json,sys,urllib.request;from ray.job_submission import JobSubmissionClient as C;"
                 "c=C(sys.argv[1]);r=c._do_request('GET','/nodes?view=summary');"
                 "print(len([n for n in r.json()['data']['summary'] if n['raylet']['state']=='ALIVE']))")
        p = subprocess.run([sys.executable, "-c", probe, dashboard], env=client_env, capture_output=True, text=True)
        return p.returncode == 0 and p.stdout.strip().isdigit() and int(p.stdout.strip()) >= nodes_expected

    wait_for(nodes_alive, 180, f"{nodes_expected} Ray nodes", tmp_path)

    # Token auth is really on: a client without the token is refused.
    no_token = {k_: v for k_, v in client_env.items() if k_ not in ("RAY_AUTH_TOKEN",)}
    denied = submit(dashboard, "echo hi", {}, {**no_token, "HOME": str(tmp_path / "nohome")}, 30)
    assert denied["status"] == "SUBMIT_ERROR" and "auth" in denied["logs"].lower(), denied

    # --- the RayJob: exact entrypoint and runtimeEnvYAML ----------------------------------
    runtime_env = yaml.safe_load(job["spec"].get("runtimeEnvYAML") or "") or {}
    result = submit(dashboard, job["spec"]["entrypoint"], runtime_env, client_env, 900)
    assert result["status"] == "SUCCEEDED", f"{result['status']}\n{result['logs']}"

    # --- the run is in MLflow ----------------------------------------------------------------
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=local_mlflow)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.status for r in parents] == ["FINISHED"], [(r.info.run_name, r.info.status) for r in runs]
    run = parents[0]
    # The run is the one the entrypoint asked for: its overrides are the run's logged params.
    for override in shlex.split(job["spec"]["entrypoint"])[3:]:
        key, _, value = override.partition("=")
        if key in run.data.params:
            assert run.data.params[key] == value, (key, run.data.params[key], value)
    assert run.data.params["cluster.mode"] == "address" and run.data.params["tracking.backend"] == "server"
    # It registered a model version from this run, in the chart's MLflow server.
    versions = client.search_model_versions()
    assert [v.run_id for v in versions] == [run.info.run_id], versions
    # The entrypoint names no tracking URI: the run found the server through the pods'
    # MLFLOW_TRACKING_URI. Its artifacts went through the server into the server's artifact store,
    # and nothing MLflow wrote stayed behind on the Ray nodes.
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
    assert list((mlflow_dir / "artifacts").rglob("feature_importance.png"))
    assert not list(work.rglob("mlruns")) and not list(shared.rglob("mlruns"))
    # The registered version loads from the server and predicts the rows the job trained on.
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(local_mlflow)
    model = mlflow.pyfunc.load_model(f"models:/{versions[0].name}/{versions[0].version}")
    raw = pd.read_parquet(shared / "data/synthetic/retail").head(10).drop(columns=["spend_next_30d"])
    assert len(model.predict(raw)) == 10
    assert list(shared.glob("data/synthetic/retail/*.parquet")), "synthetic data not on the shared volume"
    states = list(shared.glob("ray_results/*/checkpoint_*/*/state.json"))
    assert states, "no checkpoint on the shared volume"

"""The chart's rendered RayJob run as containers of the built image, pod by pod (tests/containers/pods.py,
kuberay.py).

The release is rendered with the real Helm engine from tests/containers/pods-values.yaml (the chart
scaled to two cores: the head and one CPU worker pod of one CPU each). The MLflow Deployment's pod
runs first; then each RayJob plays what the KubeRay operator does for it: the head pod, the worker
pods once the head's GCS answers, the K8sJobMode submitter pod with the RayJob's entrypoint and
runtimeEnvYAML; the job's status is read from the Job Submission API, as the operator reads it.
Every pod runs under the rendered security context: read-only root filesystem, uid 1000 / gid 100,
all capabilities dropped, no privilege escalation, writable only where a volume is mounted.

Asserted: the job succeeds; its model version is in the chart's MLflow server, which runs
MLflow's basic-auth app (the pods write as the chart's Secret's user; an unauthenticated write is
refused with 401) and keeps its artifacts in an s3:// bucket (a real S3 API on this host, in the
place of MinIO or AWS S3; credentials from a user's Secret); the run's Ray logs and model are
artifacts of the run in that bucket, none on a volume. No container can write outside its mounted
volumes: each runs with the read-only root filesystem its rendered spec asks for (`--read-only`),
and the job succeeds under it. The job loses a pod on the way: the worker container is killed after the run's first
checkpoint and a new pod is started from the same spec; the training resumes from that checkpoint
on the new pod, and the job still succeeds with one model version. The model
server (serving.enabled): its pod loads the champion the first job's promotion gate set and
answers /invocations with what that model predicts in process; the `helm test` pod then passes.

What this cannot show, and needs a real cluster: the operator's reconciliation (played here in
order by the test), scheduling onto nodes, admission and server-side defaulting, NetworkPolicy
enforcement, probes and eviction (see pods.py, kuberay.py and docs/kubernetes.md).
"""

from __future__ import annotations

import base64
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

import k8s_support as k
from kuberay import RayCluster, job_info
from pods import Release, wait
from tests import s3_server
from tests.local_cluster import http_ok as http_status

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
VALUES = HERE / "pods-values.yaml"
# The model the release's model server serves (serving.model in pods-values.yaml).
SERVED = "retail-demand-xgboost"
BUCKET = "mlflow-artifacts"  # the MLflow server's artifact store
# In the model server's own container: the champion's files as its registry holds them, the
# model's serving input example, and what the model predicts for it in process.
EXPECTED = """
import json, mlflow, pandas as pd
d = mlflow.artifacts.download_artifacts("models:/{model}@champion", dst_path="/tmp/expected")
body = json.load(open(d + "/serving_input_example.json"))
rows = pd.DataFrame(**body["dataframe_split"])
print(json.dumps({{"body": body, "predictions": [float(p) for p in mlflow.pyfunc.load_model(d).predict(rows)]}}))
"""


class MlflowRest:
    """The chart's MLflow server over its REST API. The server checks the Host header against the
    chart's allowed hosts; the test sends one of them (127.0.0.1:5000) to the pod's own address."""

    def __init__(self, url: str, user: str | None = None, password: str | None = None):
        self.url = url
        self.headers = {"Host": "127.0.0.1:5000"}
        if user:  # the chart's MLflow runs its basic-auth app (pods-values.yaml)
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"

    def get(self, endpoint: str, **params) -> dict:
        req = urllib.request.Request(f"{self.url}{endpoint}?{urllib.parse.urlencode(params)}", headers=self.headers)
        with urllib.request.urlopen(req, timeout=30) as r:  # nosec B310: the test's own server
            return json.loads(r.read() or b"{}")

    def post(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(f"{self.url}{path}", data=json.dumps(body).encode(), method="POST",
                                     headers={**self.headers, "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:  # nosec B310: the test's own server
            return json.loads(r.read() or b"{}")

    def champion(self, model: str) -> dict:
        return self.get("/api/2.0/mlflow/registered-models/alias", name=model, alias="champion")["model_version"]

    def model_versions(self) -> list[dict]:
        return self.get("/api/2.0/mlflow/model-versions/search", max_results=1000).get("model_versions", [])

    def runs(self) -> list[dict]:
        exps = self.post("/api/2.0/mlflow/experiments/search", {"max_results": 1000}).get("experiments", [])
        body = {"experiment_ids": [e["experiment_id"] for e in exps], "max_results": 1000}
        return self.post("/api/2.0/mlflow/runs/search", body).get("runs", [])

    def artifacts(self, run_id: str, path: str) -> list[str]:
        out, todo = [], [path]
        while todo:
            files = self.get("/api/2.0/mlflow/artifacts/list", run_id=run_id, path=todo.pop()).get("files", [])
            for f in files:
                (todo if f.get("is_dir") else out).append(f["path"])
        return out


@pytest.fixture(scope="module")
def release(image, s3_endpoint, tmp_path_factory):
    """The release with its MLflow server's artifact store on S3 (`mlflow.artifacts.*`), a real S3
    API on this host (tests/s3_server.py) standing in for MinIO in the cluster, and the Secret
    with its credentials that a user creates beside the release."""
    values = k.load_values(VALUES)
    values["mlflow"]["artifacts"] = {"destination": f"s3://{BUCKET}/mlflow", "endpointUrl": f"http://{s3_endpoint}",
                                     "credentialsSecret": "artifact-store"}
    creds = {key: base64.b64encode(v.encode()).decode() for key, v in s3_server.CREDS.items()}
    objs = [*k.render_objects(values),
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "artifact-store"}, "data": creds}]
    rel = Release(objs, tmp_path_factory.mktemp("release"))
    rel.bucket = s3_server.filesystem(s3_endpoint, BUCKET)
    try:
        rel.mlflow_pod, rel.mlflow_url = rel.start_mlflow()
        # Ready when /health answers and every server worker has started (the chart runs several).
        workers = next(int(a.split("=")[1]) for a in k.by_kind(objs, "Deployment")[0]["spec"]["template"]["spec"]
                       ["containers"][0]["args"] if a.startswith("--workers="))
        wait(lambda: http_status(f"{rel.mlflow_url}/health") == 200
             and rel.logs(rel.mlflow_pod).count("Application startup complete") >= workers, 240, "the MLflow pod", rel)
        auth = next(v for name, v in rel.secrets.items() if name.endswith("-mlflow-auth"))
        rel.mlflow = MlflowRest(rel.mlflow_url, auth["username"], auth["password"])
        yield rel
    finally:
        rel.stop()


def rayjob(values_overrides: list[str] | None = None) -> dict:
    values = k.load_values(VALUES)
    if values_overrides:
        values["job"]["overrides"] = values_overrides
    return k.one(k.render_objects(values), "RayJob")


def start_cluster(rel: Release, job: dict) -> RayCluster:
    cluster = RayCluster(rel, job)
    cluster.start_head()
    # KubeRay's worker init container waits until the head's GCS answers; the operator creates the
    # submitter once the cluster's pods are ready.
    wait(lambda: cluster.ready("head"), 240, "the head pod to be ready", rel)
    for i, g in enumerate(cluster.spec["workerGroupSpecs"]):
        for r in range(g["replicas"]):
            cluster.start_worker(i, str(r))
    wait(lambda: all(cluster.ready(n) for n in cluster.nodes), 240, "the worker pods to be ready", rel)
    return cluster


def finish(rel: Release, cluster: RayCluster, submitter, submission_id: str) -> dict:
    wait(lambda: not rel.running(submitter), 900, "the submitter pod to finish", rel)
    info = job_info(cluster.dashboard, rel.token, submission_id, sys.executable)
    info["logs"] = rel.logs(submitter)[-6000:]
    return info


@pytest.fixture(scope="module")
def default_job(release) -> dict:
    """The release's RayJob as rendered (pods-values.yaml), run once, losing its worker pod on the
    way: once the run's first checkpoint is on the shared volume the worker container is removed
    (the pod is gone with its node) and KubeRay's replacement is started from the same spec.
    Returns its outcome, the model versions before it and whether the training resumed from that
    checkpoint. Its cluster is deleted once
    the job has finished, as `shutdownAfterJobFinishes` does."""
    before = [v for v in release.mlflow.model_versions() if v["name"] == SERVED]
    cluster = start_cluster(release, rayjob())
    results = next(release.claims.glob("*-shared"), release.claims) / "ray_results"
    old = set(results.glob("*/checkpoint_*")) if results.exists() else set()
    sid = f"rt-{uuid.uuid4().hex[:8]}"
    submitter = cluster.start_submitter(sid)
    wait(lambda: not release.running(submitter) or bool(set(results.glob("*/checkpoint_*")) - old), 600,
         "the run's first checkpoint", release)
    assert release.running(submitter), release.logs(submitter)[-4000:]
    release.remove(cluster.nodes.pop("cpu-0"))  # the pod is gone with its node; KubeRay makes a new one
    time.sleep(2)
    cluster.start_worker(0, "1")
    info = finish(release, cluster, submitter, sid)
    info["before"] = len(before)
    info["resumed"] = "resuming from checkpoint at round" in release.logs(submitter)
    cluster.delete()
    return info


def test_rendered_rayjob_runs_as_containers_and_survives_a_lost_worker_pod(release, default_job):
    mlflow, info = release.mlflow, default_job
    assert info["status"] == "SUCCEEDED", f"{info['status']}: {info['message']}\n{info['logs']}"
    assert info["resumed"], f"the training did not lose its worker:\n{info['logs']}"

    # The job's pods wrote as the Secret's user; without credentials the server refuses a write.
    with pytest.raises(urllib.error.HTTPError) as refused:
        MlflowRest(release.mlflow_url).post("/api/2.0/mlflow/experiments/create", {"name": "anonymous"})
    assert refused.value.code == 401
    # One version, though the training ran on two worker pods one after the other.
    versions = [v for v in mlflow.model_versions() if v["name"] == SERVED]
    assert len(versions) == info["before"] + 1, versions
    newest = max(versions, key=lambda v: int(v["version"]))
    # The promotion gate ran in the job (promote.enabled): the first version is the champion.
    assert mlflow.champion(SERVED)["version"] == newest["version"]
    logs = mlflow.artifacts(newest["run_id"], "ray_logs")
    assert any("raylet" in p for p in logs), f"no Ray logs among the run's artifacts: {logs[:20]}"
    # The artifacts are in the server's object store, uploaded by the server itself (the pods only
    # talk to it over HTTP), and none on a volume.
    import pyarrow.fs as pafs

    stored = [f.path for f in release.bucket.get_file_info(pafs.FileSelector(f"{BUCKET}/mlflow", recursive=True))]
    assert any(f"/{newest['run_id']}/artifacts/ray_logs/" in p for p in stored), stored[:20]
    assert any(p.endswith("/MLmodel") for p in stored), stored[:20]
    assert not list(release.claims.rglob("MLmodel")), list(release.claims.rglob("MLmodel"))
    # The client of a gs:// artifact store is in the image too.
    release.exec(release.mlflow_pod, ["python", "-c", "import google.cloud.storage"])

    # Nothing written outside the mounted volumes: every pod ran with the read-only root filesystem
    # its rendered spec asks for (pods.py: `--read-only`), and the job succeeded under it.
    assert all(c["securityContext"]["readOnlyRootFilesystem"] is True for o in release.objs
               for _, pod in k.pod_specs(o) for c in k.containers(pod))
    assert list(release.claims.glob("*-shared/data/synthetic/retail/*")), "synthetic data not on the shared volume"


def test_the_model_server_serves_the_champion_the_job_promoted_and_helm_test_passes(release, default_job):
    """The rendered serving Deployment's pod: it loads models:/<model>@champion from the chart's
    MLflow server as the Secret's user, answers /ping once loaded, and /invocations gives what
    the same model predicts in process, naming the champion's version. (Following the alias as
    it moves: tests/test_serve.py.)"""
    assert default_job["status"] == "SUCCEEDED", default_job["logs"]
    champion = release.mlflow.champion(SERVED)["version"]
    pod, url = release.start_serving()
    wait(lambda: http_status(f"{url}/ping") == 200 or not release.running(pod), 300, "the model server", release)
    assert release.running(pod), release.logs(pod)[-4000:]
    expected = json.loads(release.exec(pod, ["python", "-c", EXPECTED.format(model=SERVED)]).splitlines()[-1])
    assert release.exec(pod, ["printenv", "OMP_NUM_THREADS"]).strip() == "1"  # the pod's CPU limit
    request = urllib.request.Request(f"{url}/invocations", data=json.dumps(expected["body"]).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as r:  # nosec B310: the test's own server
        served = [p["prediction"] if isinstance(p, dict) else p for p in json.loads(r.read())["predictions"]]
        assert r.headers["mlflow-model-version"] == champion
    assert served == pytest.approx(expected["predictions"], rel=1e-6)
    assert len(served) == len(expected["body"]["dataframe_split"]["data"]) > 0
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as r:  # nosec B310: the test's own server
        metrics = r.read().decode()
    assert f'model_server_served_version{{model="{SERVED}"}} {float(champion)}' in metrics, metrics[-2000:]
    assert f'model_server_requests_total{{path="/invocations",status="200",version="{champion}"}} 1.0' in metrics
    # `helm test`: MLflow's API as the Secret's user through its Service name, the model server's /ping.
    check = release.start_helm_test()
    wait(lambda: not release.running(check), 120, "the helm test pod", release)
    out = release.logs(check)
    assert release.exit_code(check) == 0 and "mlflow 200" in out and "model server 200" in out, out[-3000:]
    release.remove(check)
    release.remove(pod)

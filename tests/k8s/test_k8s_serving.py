"""The model server (serving.*): `python -m training.ops.serve` following a registry alias, rendered by the real
Helm engine. tests/containers/test_rayjob_containers.py runs the rendered pod against the chart's
MLflow server and checks its answers; the schemas, checkov and NetworkPolicy tests cover the
ci/serving-values.yaml scenario."""

from __future__ import annotations

import k8s_support as k

ON = {"serving": {"enabled": True, "model": "retail-demand-ensemble"}}


def _serving(values: dict) -> tuple[dict, dict]:
    objs = k.render_objects(values)
    dep = next(d for d in k.by_kind(objs, "Deployment") if d["metadata"]["name"].endswith("-serving"))
    svc = next(s for s in k.by_kind(objs, "Service") if s["metadata"]["name"].endswith("-serving"))
    return dep, svc


def test_off_by_default():
    names = [o["metadata"]["name"] for o in k.render_objects({})]
    assert not [n for n in names if n.endswith("-serving")], names


def test_serves_the_alias_from_the_charts_tracking_server_in_the_project_image():
    dep, svc = _serving(ON)
    pod = dep["spec"]["template"]["spec"]
    [c] = pod["containers"]
    assert c["command"] == ["python", "-m", "training.ops.serve"]
    assert c["args"] == ["--model=retail-demand-ensemble", "--alias=champion", "--host=0.0.0.0", "--port=8000",
                         "--follow-s=60"]
    # The same arguments parse with the server's own parser (tests/test_serve.py runs it).
    from training.ops.serve import parser

    parsed = parser().parse_args(c["args"])
    assert (parsed.model, parsed.alias, parsed.version, parsed.follow_s) == ("retail-demand-ensemble", "champion", None, 60)
    jobs = k.by_kind(k.render_objects(ON), "RayJob")
    assert c["image"] == jobs[0]["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["MLFLOW_TRACKING_URI"] == f"http://{k.RELEASE}-ray-training-mlflow:5000"
    assert c["readinessProbe"]["httpGet"]["path"] == "/ping"
    # The port answers nothing while the model downloads and loads: liveness waits for the
    # start, up to serving.startupSeconds (600), before it may restart the pod.
    start = c["startupProbe"]
    assert start["httpGet"]["path"] == "/ping" and start["periodSeconds"] * start["failureThreshold"] == 600
    assert "initialDelaySeconds" not in c["livenessProbe"]
    # Read-only root: the downloaded model goes to the /tmp emptyDir.
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert [m["mountPath"] for m in c["volumeMounts"]] == ["/tmp"] and env["HOME"] == "/tmp"
    # The GBDT libraries predict with a thread per CPU of the pod's limit, not of the node.
    omp = next(e for e in c["env"] if e["name"] == "OMP_NUM_THREADS")["valueFrom"]["resourceFieldRef"]
    assert omp == {"containerName": "serving", "resource": "limits.cpu", "divisor": "1"}
    assert pod["automountServiceAccountToken"] is False
    assert svc["spec"]["type"] == "ClusterIP" and svc["spec"]["ports"][0]["port"] == 8000
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]


def test_a_version_instead_of_an_alias_and_credentials_with_the_auth_app():
    values = {"serving": {"enabled": True, "model": "m", "alias": "", "version": 3},
              "mlflow": {"auth": {"enabled": True}}}
    dep, _ = _serving(values)
    [c] = dep["spec"]["template"]["spec"]["containers"]
    assert "--version=3" in c["args"] and not [a for a in c["args"] if a.startswith("--alias")]
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert secrets == {"MLFLOW_TRACKING_USERNAME": {"name": f"{k.RELEASE}-ray-training-mlflow-auth", "key": "username"},
                       "MLFLOW_TRACKING_PASSWORD": {"name": f"{k.RELEASE}-ray-training-mlflow-auth", "key": "password"}}


def test_the_install_notes_say_how_to_reach_it_and_that_it_follows_the_alias():
    notes = k.render(ON)["ray-training/templates/NOTES.txt"]
    name = f"{k.RELEASE}-ray-training-serving"
    assert f"port-forward svc/{name} 8000:8000" in notes
    assert "models:/retail-demand-ensemble@champion, following the alias every 60 s" in notes
    assert "mlflow-model-version" in notes
    assert "Model server" not in k.render({})["ray-training/templates/NOTES.txt"]


def test_upgrades_and_drains_keep_it_answering():
    dep, _ = _serving(ON)
    assert dep["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    assert not k.by_kind(k.render_objects(ON), "PodDisruptionBudget")  # one replica: a budget would block drains
    objs = k.render_objects({"serving": {**ON["serving"], "replicas": 2}})
    [pdb] = k.by_kind(objs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == _serving({"serving": {**ON["serving"], "replicas": 2}})[0]["spec"]["selector"]
    errors = [e for v in k.KUBE_VERSIONS for e in k.validation_errors(pdb, v)]
    assert not errors, errors

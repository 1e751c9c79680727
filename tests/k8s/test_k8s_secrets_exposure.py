"""No secret outside Secret objects, nothing exposed outside the cluster by default.

Rendered by the real Helm engine with every credential the chart knows about configured
(Ray token created by the chart, object-store credentials, a PostgreSQL backend URI, MLflow
artifact credentials, scheduled retraining whose RayJob template sits in a ConfigMap)."""

from __future__ import annotations

import base64
import json

import pytest

import k8s_support as k

ALL_CREDENTIALS = {
    "storage": {"type": "objectStore", "objectStore": {"uri": "s3://bucket/p", "credentialsSecret": "s3-creds",
                                                       "endpointUrl": "http://minio:9000"}},
    "mlflow": {"backend": {"type": "postgresql", "existingSecret": "mlflow-db"},
               "artifacts": {"destination": "s3://bucket/mlflow", "credentialsSecret": "s3-creds"}},
    "schedule": {"enabled": True},
    "rayCluster": {"enabled": True},
    "autoscaling": {"enabled": True},
    "workerGroups": {"cpu": {"env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "t"}}}]}},
}


def test_the_ray_token_appears_only_in_its_secret():
    objs = k.render_objects(ALL_CREDENTIALS)
    (secret,) = k.by_kind(objs, "Secret")
    encoded = secret["data"]["auth_token"]
    token = base64.b64decode(encoded).decode()
    assert len(token) == 48
    for obj in objs:
        if obj is secret:
            continue
        text = json.dumps(obj)
        assert token not in text and encoded not in text, k.obj_id(obj)


def test_pods_get_credentials_only_by_secret_reference():
    """Every env var that looks like a credential comes from a Secret; Secrets reach pods only as refs."""
    import yaml

    objs = k.render_objects(ALL_CREDENTIALS)
    # The retrain CronJob's RayJob template travels in a ConfigMap: check its pods too.
    templates = [yaml.safe_load(text) for cm in k.by_kind(objs, "ConfigMap") for text in cm.get("data", {}).values()
                 if text.lstrip().startswith("apiVersion")]
    assert [t["kind"] for t in templates] == ["RayJob"]
    refs = set()
    for obj in objs + templates:
        for where, pod in k.pod_specs(obj):
            for c in k.containers(pod):
                for e in c.get("env", []):
                    if any(w in e["name"].upper() for w in ("SECRET", "PASSWORD", "TOKEN", "KEY", "BACKEND_STORE")):
                        assert "value" not in e and "secretKeyRef" in e.get("valueFrom", {}), (k.obj_id(obj), where, e)
                        refs.add(e["valueFrom"]["secretKeyRef"]["name"])
                refs |= {f["secretRef"]["name"] for f in c.get("envFrom", []) if "secretRef" in f}
    assert {"s3-creds", "mlflow-db", "hf"} <= refs


def test_a_literal_credential_in_values_is_refused():
    import helm_python

    with pytest.raises(helm_python.HelmValuesError) as err:
        k.render({"workerGroups": {"cpu": {"env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": "hunter2"}]}}})
    assert "/workerGroups/cpu/env/0/value" in str(err.value)
    with pytest.raises(helm_python.HelmValuesError) as err:  # no values key takes a credential
        k.render({"storage": {"objectStore": {"secretAccessKey": "hunter2"}}})
    assert "secretAccessKey" in str(err.value)


@pytest.mark.parametrize("values_file", k.scenario_files(), ids=lambda p: p.name)
def test_nothing_is_exposed_outside_the_cluster(values_file):
    """Dashboard and MLflow Services are ClusterIP; no Ingress, NodePort, LoadBalancer or host ports."""
    objs = k.render_objects(k.load_values(values_file))
    services = k.by_kind(objs, "Service")
    assert services and all(s["spec"].get("type", "ClusterIP") == "ClusterIP" for s in services)
    assert not [o for o in objs if o["kind"] in ("Ingress", "Route", "Gateway", "HTTPRoute")]
    for obj in objs:
        for where, pod in k.pod_specs(obj):
            assert not pod.get("hostNetwork") and not pod.get("hostPID"), (k.obj_id(obj), where)
            for c in k.containers(pod):
                assert not any("hostPort" in p for p in c.get("ports", [])), (k.obj_id(obj), where)

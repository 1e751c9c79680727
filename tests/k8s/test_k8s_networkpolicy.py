"""The NetworkPolicies: default deny in and out for every pod of the release, then explicit allows.

Rendered by the real Helm engine; the objects are checked against the Kubernetes schemas in
test_k8s_contract.py. Whether a CNI enforces them is for a real cluster (docs/kubernetes.md)."""

from __future__ import annotations

import pytest

import k8s_support as k


def policies(values: dict | None = None) -> dict[str, dict]:
    return {o["metadata"]["name"].removeprefix(f"{k.RELEASE}-ray-training-"): o["spec"]
            for o in k.by_kind(k.render_objects(values or {}), "NetworkPolicy")}


def selects(selector: dict, labels: dict) -> bool:
    """A label selector (matchLabels + In expressions) against a pod's labels."""
    if any(labels.get(key) != v for key, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        assert e["operator"] == "In", e
        if labels.get(e["key"]) not in e["values"]:
            return False
    return True


def release_pods(values: dict | None = None) -> list[tuple[str, dict]]:
    """(where, labels) of every pod template the release renders: Ray, submitter, MLflow, test, launcher."""
    out = []
    for obj in k.render_objects(values or {}):
        kind, spec = obj["kind"], obj.get("spec", {})
        if kind == "Pod":
            out.append((k.obj_id(obj), obj["metadata"]["labels"]))
        elif kind in ("Deployment", "Job"):
            out.append((k.obj_id(obj), spec["template"]["metadata"]["labels"]))
        elif kind == "CronJob":
            out.append((k.obj_id(obj), spec["jobTemplate"]["spec"]["template"]["metadata"]["labels"]))
        elif kind in ("RayJob", "RayCluster"):
            cs = spec.get("rayClusterSpec", spec)
            out.append((f"{k.obj_id(obj)} head", cs["headGroupSpec"]["template"]["metadata"]["labels"]))
            out += [(f"{k.obj_id(obj)} {g['groupName']}", g["template"]["metadata"]["labels"])
                    for g in cs["workerGroupSpecs"]]
            if "submitterPodTemplate" in spec:
                out.append((f"{k.obj_id(obj)} submitter", spec["submitterPodTemplate"]["metadata"]["labels"]))
    return out


EVERYTHING = {"rayCluster": {"enabled": True}, "schedule": {"enabled": True}, "autoscaling": {"enabled": True},
              "serving": {"enabled": True, "model": "retail-demand-ensemble"}}


@pytest.mark.parametrize("values", [{}, EVERYTHING], ids=["default", "every component"])
def test_default_deny_in_and_out_covers_every_release_pod(values):
    deny = policies(values)["default-deny"]
    assert deny["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny and "egress" not in deny  # selects only: nothing allowed by it
    pods = release_pods(values)
    assert len(pods) >= (6 if values else 4)
    uncovered = [where for where, labels in pods if not selects(deny["podSelector"], labels)]
    assert not uncovered


def test_dns_egress_is_allowed_to_kube_system_on_53():
    dns = policies()["dns"]
    assert dns["podSelector"] == policies()["default-deny"]["podSelector"]
    (rule,) = dns["egress"]
    assert rule["to"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}
    assert sorted((p["port"], p["protocol"]) for p in rule["ports"]) == [(53, "TCP"), (53, "UDP")]


def test_ray_pods_talk_freely_among_themselves_and_code_ports_are_restricted():
    ray = policies()["ray"]
    ray_labels = {"app.kubernetes.io/name": "ray-training", "app.kubernetes.io/instance": k.RELEASE,
                  "app.kubernetes.io/component": "ray"}
    among = [r for r in ray["ingress"] if "ports" not in r]
    assert len(among) == 1 and selects(among[0]["from"][0]["podSelector"], ray_labels)
    (code,) = [r for r in ray["ingress"] if "ports" in r]
    assert sorted(p["port"] for p in code["ports"]) == [8265, 10001]
    submitter = dict(ray_labels, **{"app.kubernetes.io/component": "submitter"})
    mlflow = dict(ray_labels, **{"app.kubernetes.io/component": "mlflow"})
    peers = [p["podSelector"] for p in code["from"] if "namespaceSelector" not in p]
    assert any(selects(p, submitter) for p in peers) and not any(selects(p, mlflow) for p in peers)
    # Egress: the other Ray pods (all ports) and MLflow's port; nothing outside by default.
    assert [r for r in ray["egress"] if "ports" not in r][0]["to"][0]["podSelector"]["matchLabels"] == ray_labels
    assert [r["ports"] for r in ray["egress"] if "ports" in r] == [[{"port": 5000, "protocol": "TCP"}]]
    assert not any("ipBlock" in peer for r in ray["egress"] for peer in r["to"])


def test_dashboard_from_adds_peers_to_the_code_ports_only():
    ci = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ci"}}}
    ray = policies({"networkPolicy": {"dashboardFrom": [ci]}})["ray"]
    (code,) = [r for r in ray["ingress"] if "ports" in r]
    assert ci in code["from"]
    assert ci not in policies()["ray"]["ingress"][1]["from"]


def test_object_store_egress_follows_storage_type():
    store = {"storage": {"type": "objectStore", "objectStore": {"uri": "s3://bucket/p"}}}
    assert not any("ipBlock" in str(r) for r in policies()["ray"]["egress"])
    egress = policies(store)["ray"]["egress"]
    assert {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 443, "protocol": "TCP"}]} in egress
    minio = {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "minio"}}}],
             "ports": [{"port": 9000, "protocol": "TCP"}]}
    egress = policies({**store, "networkPolicy": {"objectStore": minio}})["ray"]["egress"]
    assert minio in egress and not any("ipBlock" in str(r) for r in egress)


def test_data_in_an_object_store_with_pvc_storage():
    """docs/kubernetes.md "Your own data": data.path=s3://... on a PVC preset. The Ray pods reach
    the object store (networkPolicy.objectStore) only with rayPodsToObjectStore, and get the
    credentials Secret and endpoint whatever storage.type."""
    data = {"job": {"overrides": ["workload=ensemble", "data=parquet", "data.path=s3://bucket/tx/",
                                  "data.target=amount"]},
            "storage": {"objectStore": {"credentialsSecret": "s3-creds", "endpointUrl": "http://minio.minio:9000"}}}
    https = {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 443, "protocol": "TCP"}]}
    assert https not in policies(data)["ray"]["egress"]
    opened = {**data, "networkPolicy": {"rayPodsToObjectStore": True}}
    assert https in policies(opened)["ray"]["egress"]
    job = k.one(k.render_objects(opened), "RayJob")
    assert job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["volumes"][-1]["name"] == "shared"
    for where, pod in k.pod_specs(job):
        if "submitter" in where:
            continue
        ray = pod["containers"][0]
        assert {"secretRef": {"name": "s3-creds"}} in ray["envFrom"], where
        assert {"name": "AWS_ENDPOINT_URL", "value": "http://minio.minio:9000"} in ray["env"], where


def test_mlflow_reaches_its_database_only_where_its_peers_say():
    """An egress rule with an empty `to` admits every address: without the database's peers
    there is no rule (nothing on 5432), with them only they are."""
    postgres = {"mlflow": {"backend": {"type": "postgresql", "existingSecret": "db"}}}
    egress = policies(postgres)["mlflow"].get("egress", [])
    assert not [r for r in egress if {"port": 5432, "protocol": "TCP"} in r.get("ports", [])], egress
    peers = [{"ipBlock": {"cidr": "10.20.0.0/24"}}]
    egress = policies({**postgres, "networkPolicy": {"database": {"to": peers}}})["mlflow"]["egress"]
    assert {"to": peers, "ports": [{"port": 5432, "protocol": "TCP"}]} in egress


def test_kubernetes_api_only_for_the_pods_that_call_it():
    def api_rules(spec):
        return [r for r in spec.get("egress", []) if {"port": 6443, "protocol": "TCP"} in r.get("ports", [])]

    default = policies()
    assert not any(api_rules(p) for p in default.values())  # submitter, Ray pods, MLflow: none
    everything = policies(EVERYTHING)
    assert api_rules(everything["ray"]) and api_rules(everything["retrain"])
    assert not api_rules(everything["clients"])


def test_external_tracking_replaces_the_mlflow_rule():
    ray = policies({"mlflow": {"enabled": False, "externalUri": "https://mlflow.example.com"}})
    assert "mlflow" not in ray
    ports = [r["ports"] for r in ray["ray"]["egress"] if "ports" in r]
    assert ports == [[{"port": 443, "protocol": "TCP"}, {"port": 5000, "protocol": "TCP"}]]


def test_the_model_server_takes_requests_from_the_release_and_serving_from_and_reaches_only_mlflow():
    client = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "shop"}}}
    rendered = policies({"serving": {"enabled": True, "model": "m"}, "networkPolicy": {"servingFrom": [client]}})
    serving = rendered["serving"]
    pod = next(labels for where, labels in release_pods({"serving": {"enabled": True, "model": "m"}})
               if labels.get("app.kubernetes.io/component") == "serving")
    assert selects(serving["podSelector"], pod) and not selects(rendered["ray"]["podSelector"], pod)
    [rule] = serving["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert rule["from"][1:] == [client] and selects(rule["from"][0]["podSelector"], pod)
    [egress] = serving["egress"]
    assert egress["ports"] == [{"port": 5000, "protocol": "TCP"}]
    assert egress["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "mlflow"
    # `helm test` asks the model server whether its model is loaded.
    to_serving = [r for r in rendered["clients"]["egress"]
                  if r["to"][0]["podSelector"]["matchLabels"].get("app.kubernetes.io/component") == "serving"]
    assert [r["ports"] for r in to_serving] == [[{"port": 8000, "protocol": "TCP"}]]
    assert "serving" not in policies()  # off by default


def test_disabled_renders_no_policy():
    assert policies({"networkPolicy": {"enabled": False}}) == {}


def test_bad_peer_is_rejected_by_the_schema():
    import helm_python

    with pytest.raises(helm_python.HelmValuesError) as err:
        k.render({"networkPolicy": {"dashboardFrom": [{"ipBlock": {"cidr": "everywhere"}}]}})
    assert "/networkPolicy/dashboardFrom/0/ipBlock/cidr" in str(err.value)

"""Monitoring objects: the Prometheus Operator PodMonitor, the NetworkPolicy opening the metrics
port, and the Grafana dashboard ConfigMap, rendered with the real Helm engine.

The PodMonitor is validated against the Prometheus Operator's CRD schema as compiled by the npm
package @kubernetes-models/prometheus-operator (installed by `make k8s-tools`, run with node):
no Prometheus Operator CRD is available under ../shared/schemas and no PyPI package ships one.
That compiled schema accepts unknown fields, so unknown PodMonitor fields are checked against
the package's type declarations. The dashboard's metric names are checked against a real
Ray's metrics endpoint in tests/test_observability.py.
"""

from __future__ import annotations

import copy
import json

import pytest
import yaml

import k8s_support as k

ON = {"monitoring": {"podMonitor": {"enabled": True, "labels": {"release": "kps"}},
                     "grafanaDashboard": {"enabled": True}}}


def _monitoring_objects(objs):
    return [o for o in objs if o["metadata"]["labels"].get("app.kubernetes.io/component") == "monitoring"]


def test_off_by_default(scenario_renders):
    """Without the Prometheus Operator's CRDs a PodMonitor would fail the install: opt-in only."""
    assert not _monitoring_objects(k.render_objects({}))
    for name, objs in scenario_renders.items():
        if name != "monitoring-values.yaml":
            assert not _monitoring_objects(objs), name


@pytest.mark.parametrize("kube", k.KUBE_VERSIONS)
def test_monitoring_objects_are_valid(kube):
    objs = _monitoring_objects(k.render_objects(ON))
    assert sorted(o["kind"] for o in objs) == ["ConfigMap", "NetworkPolicy", "PodMonitor"]
    errors = [e for o in objs for e in k.validation_errors(o, kube)]
    assert not errors, errors


def test_podmonitor_scrapes_every_ray_pods_metrics_port():
    objs = k.render_objects(ON)
    pm = k.one(objs, "PodMonitor")
    assert pm["metadata"]["labels"]["release"] == "kps"
    assert pm["spec"]["namespaceSelector"] == {"matchNames": [k.NAMESPACE]}
    [endpoint] = pm["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics" and endpoint["interval"] == "15s"
    selector = pm["spec"]["selector"]["matchLabels"]
    rayjob = k.one(objs, "RayJob")
    templates = [rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]]
    templates += [g["template"] for g in rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]]
    for t in templates:   # head and every worker group: selected, and serving the named port
        assert selector.items() <= t["metadata"]["labels"].items()
        ports = {p["name"]: p["containerPort"] for c in t["spec"]["containers"] for p in c.get("ports", [])}
        assert ports.get("metrics") == 8080
    # Selected pods are Ray pods only (not MLflow, not the submitter).
    for o in objs:
        if o["kind"] == "Deployment":
            assert not selector.items() <= o["spec"]["template"]["metadata"]["labels"].items()


def test_network_policy_opens_only_the_metrics_port_to_prometheus():
    objs = k.render_objects(ON)
    [np] = [o for o in _monitoring_objects(objs) if o["kind"] == "NetworkPolicy"]
    [rule] = np["spec"]["ingress"]
    assert rule["ports"] == [{"port": 8080, "protocol": "TCP"}]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                             "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]
    off = k.render_objects({**ON, "networkPolicy": {"enabled": False}})
    assert not [o for o in _monitoring_objects(off) if o["kind"] == "NetworkPolicy"]


@pytest.mark.parametrize("scheduled", ["schedule-cronjob-values.yaml", "schedule-raycronjob-values.yaml"])
def test_scheduled_runs_are_scraped_without_a_release_rayjob(scheduled):
    """A release with job.enabled=false whose runs come from the schedule: their Ray pods (the
    retrain ConfigMap's RayJob, the RayCronJob's jobTemplate) are selected by the PodMonitor, and
    Prometheus may reach their metrics port; the dashboard Service follows their head."""
    values = {**k.load_values(k.CI_VALUES_DIR / scheduled), **ON}
    objs = k.render_objects(values)
    assert not k.by_kind(objs, "RayJob")
    if scheduled == "schedule-cronjob-values.yaml":
        cm = next(o for o in k.by_kind(objs, "ConfigMap") if o["metadata"]["name"].endswith("-retrain"))
        spec = yaml.safe_load(cm["data"]["rayjob.yaml"])["spec"]
    else:
        spec = k.one(objs, "RayCronJob")["spec"]["jobTemplate"]
    cs = spec["rayClusterSpec"]
    templates = [cs["headGroupSpec"]["template"]] + [g["template"] for g in cs["workerGroupSpecs"]]
    pm = k.one(objs, "PodMonitor")
    [np] = [o for o in _monitoring_objects(objs) if o["kind"] == "NetworkPolicy"]
    for t in templates:
        assert pm["spec"]["selector"]["matchLabels"].items() <= t["metadata"]["labels"].items()
        assert np["spec"]["podSelector"]["matchLabels"].items() <= t["metadata"]["labels"].items()
    svc = next(o for o in k.by_kind(objs, "Service") if o["metadata"]["name"].endswith("-dashboard"))
    head = cs["headGroupSpec"]["template"]["metadata"]["labels"]
    assert {k_: v for k_, v in svc["spec"]["selector"].items() if k_ != "ray.io/node-type"}.items() <= head.items()


@pytest.mark.parametrize("kube", k.KUBE_VERSIONS)
def test_the_model_servers_metrics_are_scraped_on_its_port(kube):
    objs = k.render_objects({**ON, "serving": {"enabled": True, "model": "m"}})
    server = next(d for d in k.by_kind(objs, "Deployment") if d["metadata"]["name"].endswith("-serving"))
    labels = server["spec"]["template"]["metadata"]["labels"]
    [pm] = [o for o in k.by_kind(objs, "PodMonitor") if o["metadata"]["name"].endswith("-serving")]
    assert pm["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pm["spec"]["podMetricsEndpoints"][0] | {} == {"port": "http", "path": "/metrics", "interval": "15s",
                                                         "scrapeTimeout": "10s"}
    [np] = [o for o in k.by_kind(objs, "NetworkPolicy") if o["metadata"]["name"].endswith("-serving-metrics")]
    assert np["spec"]["ingress"][0]["ports"] == [{"port": 8000, "protocol": "TCP"}]
    errors = [e for o in (pm, np) for e in k.validation_errors(o, kube)]
    assert not errors, errors
    # Without the model server, only the Ray pods' PodMonitor.
    assert [o["metadata"]["name"] for o in k.by_kind(k.render_objects(ON), "PodMonitor")] == [
        f"{k.RELEASE}-ray-training-ray"]


def test_grafana_dashboard_configmap():
    values = copy.deepcopy(ON)
    values["monitoring"]["grafanaDashboard"].update(namespace="grafana", annotations={"grafana_folder": "Training"})
    cm = [o for o in _monitoring_objects(k.render_objects(values)) if o["kind"] == "ConfigMap"][0]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "grafana"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Training"}
    dash = json.loads(cm["data"]["ray-training.json"])
    assert dash["uid"] == "ray-training-runs"
    assert dash == json.loads((k.CHART_DIR / "dashboards" / "ray-training.json").read_text())
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for topic in ("throughput", "cpu", "gpu", "memory", "object store", "failed", "model server"):
        assert topic in titles, topic
    for p in dash["panels"]:  # the Ray panels follow the run picked above; the model server outlives runs
        assert p["targets"] and (_model_server_panel(p) or all('SessionName=~"$session"' in t["expr"]
                                                                for t in p["targets"])), p["title"]


@pytest.mark.parametrize("mutate, expected", [
    (lambda pm: pm["spec"]["podMetricsEndpoints"][0].update(port=8080), "port must be string"),
    (lambda pm: pm["spec"]["podMetricsEndpoints"][0].update(interval="15 seconds"), "interval must match pattern"),
    (lambda pm: pm["spec"].pop("selector"), "must have required property selector"),
    (lambda pm: pm["spec"]["podMetricsEndpoints"][0].update(scrapeInterval="15s"),
     "unknown field spec.podMetricsEndpoints[0].scrapeInterval"),
])
def test_schema_check_catches_podmonitor_mistakes(mutate, expected):
    pm = copy.deepcopy(k.one(k.render_objects(ON), "PodMonitor"))
    mutate(pm)
    errors = k.validation_errors(pm)
    assert any(expected in e for e in errors), errors


@pytest.mark.parametrize("values, reason", [
    ({"monitoring": {"podMonitor": {"interval": "15 sec"}}},
     "at '/monitoring/podMonitor/interval': '15 sec' does not match pattern"),
    ({"monitoring": {"grafanaDashboard": {"lables": {}}}},
     "at '/monitoring/grafanaDashboard': additional properties 'lables' not allowed"),
])
def test_bad_monitoring_values_fail_the_render(values, reason):
    import helm_python

    with pytest.raises(helm_python.HelmValuesError) as err:
        k.render(values)
    assert reason in str(err.value), str(err.value)


# Labels Prometheus itself gives every PodMonitor target (Prometheus Operator), whatever the relabelings.
PROMETHEUS_TARGET_LABELS = {"instance", "job", "namespace", "pod", "container", "endpoint"}


def _dashboard_labels(dash: dict) -> set[str]:
    """Every label a query filters on, groups by or lists the values of (legends only display)."""
    import re

    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dash["templating"]["list"] if v.get("definition")]
    labels = set()
    for e in exprs:
        for selector in re.findall(r"\{([^}]*)\}", e):
            labels |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", selector))
        for grouping in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", e):
            labels |= {x.strip() for x in grouping.split(",") if x.strip()}
        labels |= {m for m in re.findall(r"label_values\([^)]*?,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)", e)}
    return labels


def test_dashboard_filters_only_on_labels_ray_or_the_podmonitor_provide():
    """The Ray labels the dashboard filters and groups by are CamelCase (SessionName, State, Name,
    Location); every other label it filters on must come from the PodMonitor's relabelings (or
    Prometheus' target labels), else its panels stay empty. The cluster label is KubeRay's
    `ray_io_cluster`."""
    pm = k.one(k.render_objects(ON), "PodMonitor")
    [endpoint] = pm["spec"]["podMetricsEndpoints"]
    relabelled = {r["targetLabel"] for r in endpoint["relabelings"]}
    assert {"ray_io_cluster", "ray_node_type"} <= relabelled and "ray_cluster" not in relabelled
    cluster_rule = next(r for r in endpoint["relabelings"] if r["targetLabel"] == "ray_io_cluster")
    assert cluster_rule["sourceLabels"] == ["__meta_kubernetes_pod_label_ray_io_cluster"]
    dash = json.loads((k.CHART_DIR / "dashboards" / "ray-training.json").read_text())
    ray_panels = [p for p in dash["panels"] if not _model_server_panel(p)]
    used = _dashboard_labels({**dash, "panels": ray_panels})
    assert {"ray_io_cluster", "SessionName"} <= used, used
    prometheus_side = {label for label in used if not label[0].isupper()}
    missing = prometheus_side - relabelled - PROMETHEUS_TARGET_LABELS
    assert not missing, f"the dashboard uses {sorted(missing)}, which no PodMonitor relabeling produces"
    assert "ray_cluster" not in json.dumps(dash)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["cluster"]["allValue"] == ".*", "series scraped without the label still show under All"
    for p in ray_panels:
        assert all('ray_io_cluster=~"$cluster"' in t["expr"] for t in p["targets"]), p["title"]
    # The model server's panels use its own labels (tests/test_serve.py checks them against a real
    # server's /metrics) and the target labels of its PodMonitor.
    server_panels = [p for p in dash["panels"] if _model_server_panel(p)]
    assert len(server_panels) == 3
    server_labels = _dashboard_labels({"panels": server_panels, "templating": {"list": []}})
    assert server_labels - PROMETHEUS_TARGET_LABELS <= {"version", "status", "path", "model", "le"}, server_labels
    # One release's servers at a time, picked by namespace (a label every scraped series has).
    assert all('namespace=~"$namespace"' in t["expr"] for p in server_panels for t in p["targets"])


def _model_server_panel(panel: dict) -> bool:
    return all("model_server_" in t["expr"] for t in panel["targets"])

"""The chart renders and lints cleanly with the real Helm engine for every scenario."""

from __future__ import annotations

import json
import pytest

import k8s_support as k

SCENARIOS = k.scenario_files()


@pytest.mark.parametrize("kube", k.KUBE_VERSIONS)
@pytest.mark.parametrize("values_file", SCENARIOS, ids=lambda p: p.name)
def test_strict_lint(values_file, kube):
    import helm_python

    report = helm_python.lint(str(k.CHART_DIR), k.load_values(values_file), strict=True,
                              kube_version=f"v{kube}")
    messages = [f"[{m['severity']}] {m['path']}: {m['error']}" for m in report["messages"]]
    assert not report["errors"] and not messages, "\n".join(messages)


@pytest.mark.parametrize("values_file", SCENARIOS, ids=lambda p: p.name)
def test_every_object_is_valid(values_file, scenario_renders):
    """Ray CRs against the KubeRay CRDs (unknown fields rejected, CEL rules, operator
    rules); core kinds and every Ray pod template against Kubernetes 1.30 and 1.34."""
    objs = scenario_renders[values_file.name]
    assert objs, "rendered nothing"
    errors = [e for o in objs for v in k.KUBE_VERSIONS for e in k.validation_errors(o, v)]
    assert not errors, "\n".join(dict.fromkeys(errors))


def test_scenarios_cover_every_kind(scenario_renders):
    kinds = {o["kind"] for objs in scenario_renders.values() for o in objs}
    assert {"RayJob", "RayCluster", "Deployment", "Service", "Secret", "PersistentVolumeClaim",
            "ServiceAccount", "Role", "RoleBinding", "NetworkPolicy", "Pod"} <= kinds


def test_labels_and_names(scenario_renders):
    for name, objs in scenario_renders.items():
        for o in objs:
            labels = o["metadata"].get("labels", {})
            for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                        "app.kubernetes.io/version", "app.kubernetes.io/managed-by", "helm.sh/chart"):
                assert key in labels, f"{name}: {k.obj_id(o)} lacks label {key}"
            obj_name = o["metadata"].get("name") or o["metadata"]["generateName"] + "xxxxx"
            assert len(obj_name) <= 63 and k.DNS1035.match(obj_name.replace(".", "-")), (name, obj_name)


def test_long_release_name_still_fits_kuberay_limits():
    """fullname is cut at 40 characters, so `<fullname>-r<revision>` stays <= 47."""
    objs = k.render_objects({"rayCluster": {"enabled": True}}, name="a-very-long-release-name-for-team-forecasting",
                            revision=1234)
    assert k.one(objs, "RayJob")["metadata"]["name"].endswith("-r1234")
    errors = [e for o in objs for e in k.kuberay_rule_violations(o)]
    assert not errors, errors


def test_notes_print_the_next_commands():
    notes = k.render({})["ray-training/templates/NOTES.txt"]
    for expected in ("kubectl -n ml get rayjob demo-ray-training-r1 -w",
                     "port-forward svc/demo-ray-training-dashboard 8265:8265",
                     "port-forward svc/demo-ray-training-mlflow 5000:5000",
                     "secret demo-ray-training-ray-auth", "helm test demo"):
        assert expected in notes, f"NOTES.txt lacks {expected!r}:\n{notes}"
    off = k.render({"auth": {"mode": "disabled", "acknowledgeDisabled": True}})
    assert "WARNING: Ray token authentication is DISABLED" in off["ray-training/templates/NOTES.txt"]


def test_helm_test_hook():
    pod = k.one(k.render_objects({"rayCluster": {"enabled": True}}), "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["args"][0]
    assert "http://demo-ray-training-mlflow:5000/api/2.0/mlflow/experiments/search" in script
    assert '("demo-ray-training-head-svc", 8265)' in script
    compile(script, "helm-test", "exec")
    assert not by_kind_pods(k.render_objects({"tests": {"enabled": False}}))
    # With MLflow's basic-auth app, the check authenticates as the chart's Secret's user; with the
    # model server, it asks whether the model is loaded (tests/containers runs this pod).
    pod = k.one(k.render_objects({"mlflow": {"auth": {"enabled": True}},
                                  "serving": {"enabled": True, "model": "m"}}), "Pod")
    [c] = pod["spec"]["containers"]
    assert {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in c["env"]} == {
        "MLFLOW_TRACKING_USERNAME": "demo-ray-training-mlflow-auth", "MLFLOW_TRACKING_PASSWORD": "demo-ray-training-mlflow-auth"}
    assert "http://demo-ray-training-serving:8000/ping" in c["args"][0]
    compile(c["args"][0], "helm-test", "exec")


def test_only_the_ray_pods_and_the_model_server_run_the_gpu_image():
    """presets/bert-gpu.yaml: the Ray head and workers run the `-gpu` build (rayImage: CUDA,
    torch); MLflow, the submitter and `helm test` keep the CPU image (`image`), many GB smaller to
    pull. The model server loads what the Ray pods trained, so it runs their image."""
    import yaml

    app_version = yaml.safe_load((k.CHART_DIR / "Chart.yaml").read_text())["appVersion"]
    values = k.load_values(k.PRESETS_DIR / "bert-gpu.yaml")
    images = {(k.obj_id(o), c["name"]): c["image"] for o in k.render_objects(values)
              for _, pod in k.pod_specs(o) for c in k.containers(pod)}
    gpu = {key: image for key, image in images.items() if image.endswith("-gpu")}
    assert {c for _, c in gpu} == {"ray-head", "ray-worker"}, images
    assert {c for _, c in images} - {c for _, c in gpu} == {"mlflow", "ray-job-submitter", "check"}
    assert set(images.values()) - set(gpu.values()) == {f"ray-training:{app_version}"}
    served = k.render_objects({**values, "serving": {"enabled": True, "model": "m"}})
    server = next(d for d in k.by_kind(served, "Deployment") if d["metadata"]["name"].endswith("-serving"))
    assert server["spec"]["template"]["spec"]["containers"][0]["image"] == f"ray-training:{app_version}-gpu"
    # A repository of its own for MLflow, without a tag: the chart's appVersion, as for `image`.
    mlflow = k.one(k.render_objects({"mlflow": {"image": {"repository": "registry.example/mlflow"}}}), "Deployment")
    assert mlflow["spec"]["template"]["spec"]["containers"][0]["image"] == f"registry.example/mlflow:{app_version}"


def by_kind_pods(objs):
    return k.by_kind(objs, "Pod")


def test_values_schema_is_strict_everywhere():
    """additionalProperties: false on every object schema that declares properties
    (if/then/allOf fragments only add constraints to an object declared elsewhere)."""
    import json

    schema = json.loads((k.CHART_DIR / "values.schema.json").read_text())
    assert schema["$schema"].startswith("http://json-schema.org/draft-07/")
    loose = []

    def walk(node, path):
        if isinstance(node, dict):
            fragment = any(part in ("if", "then", "allOf") for part in path.split("."))
            if "properties" in node and node.get("additionalProperties") is not False and not fragment:
                loose.append(path)
            for key, sub in node.items():
                walk(sub, f"{path}.{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                walk(sub, f"{path}.{i}")

    walk(schema, "$")
    assert not loose, loose


def test_every_default_value_is_declared_in_the_schema():
    """The defaults themselves pass the schema, and every leaf is declared (unknown keys fail)."""
    import helm_python

    with helm_python.Chart.load(str(k.CHART_DIR)) as chart:
        chart.validate_schema(chart.values)  # raises on a default the schema rejects
        values = chart.values
    schema = json.loads((k.CHART_DIR / "values.schema.json").read_text())

    def resolve(node):
        while "$ref" in node:
            node = schema["definitions"][node["$ref"].rsplit("/", 1)[-1]]
        return node

    undeclared = []

    def walk(value, node, path):
        node = resolve(node)
        if not isinstance(value, dict) or "properties" not in node:
            return
        for key, sub in value.items():
            if key in node["properties"]:
                walk(sub, node["properties"][key], f"{path}.{key}")
            elif not isinstance(node.get("additionalProperties"), dict):  # a free-form map is declared
                undeclared.append(f"{path}.{key}")

    walk(values, schema, "values")
    assert not undeclared, undeclared
    # A value the schema does not declare is rejected, not ignored.
    with pytest.raises(helm_python.HelmValuesError, match="additional properties 'replicaz' not allowed"):
        k.render({"workerGroups": {"cpu": {"replicaz": 2}}})


NOTES_VARIANTS = {
    "K8sJobMode": {},
    "SidecarMode": {"job": {"submissionMode": "SidecarMode"}},
    "HTTPMode": {"job": {"submissionMode": "HTTPMode"}},
    "InteractiveMode": {"job": {"submissionMode": "InteractiveMode"}},
    "generateName": {"job": {"generateName": True}},
    "suspended": {"job": {"suspend": True, "labels": {"kueue.x-k8s.io/queue-name": "team-a"}}},
    "rayCluster": {"rayCluster": {"enabled": True}, "job": {"enabled": False}},
    "existing secret": {"auth": {"existingSecret": "my-token"}},
}
# kubectl resource names in NOTES -> the kinds the chart renders.
NOTES_KINDS = {"rayjob": "RayJob", "raycluster": "RayCluster", "svc": "Service", "secret": "Secret", "job": "Job"}


def _notes_references(notes: str) -> list[tuple[str, str]]:
    """(kind, name) of every object a kubectl command in NOTES names."""
    import re

    refs = []
    for line in notes.splitlines():
        for m in re.finditer(r"kubectl -n \S+ (?:get|describe|logs -f|port-forward|patch)\s+(\w+)(?:/|\s+)([^\s)']+)",
                             line):
            kind, name = m.groups()
            if kind in NOTES_KINDS and not name.startswith("-"):
                refs.append((NOTES_KINDS[kind], name))
    return refs


@pytest.mark.parametrize("variant", NOTES_VARIANTS)
def test_notes_name_only_objects_the_release_creates(variant):
    """Every object a NOTES command names is rendered by the chart, or is what KubeRay makes from
    a rendered RayJob: the submitter Job (named after the RayJob, K8sJobMode only)."""
    values = NOTES_VARIANTS[variant]
    rendered = k.render(values)
    notes, objs = rendered["ray-training/templates/NOTES.txt"], k.objects_from_rendered(rendered)
    names = {(o["kind"], o["metadata"].get("name") or o["metadata"].get("generateName")) for o in objs}
    jobs = k.by_kind(objs, "RayJob")
    if jobs and jobs[0]["spec"].get("submissionMode", "K8sJobMode") == "K8sJobMode":
        names.add(("Job", jobs[0]["metadata"].get("name")))
    if (values.get("auth") or {}).get("existingSecret"):
        names.add(("Secret", values["auth"]["existingSecret"]))
    refs = _notes_references(notes)
    assert refs, notes
    placeholder = "<rayjob-name>"
    for kind, name in refs:
        if name == placeholder:   # generateName: the API server picks it; NOTES say how to list it
            assert "get rayjob -l app.kubernetes.io/instance=demo,app.kubernetes.io/component=rayjob" in notes
            continue
        assert (kind, name) in names, f"NOTES name {kind} {name}, which the release does not create:\n{notes}"
    mode = (values.get("job") or {}).get("submissionMode", "K8sJobMode")
    assert ("logs -f job/" in notes) == (jobs != [] and mode == "K8sJobMode")
    if jobs and mode == "SidecarMode":
        assert "-c ray-job-submitter" in notes and "ray.io/node-type=head" in notes
    if jobs and mode == "HTTPMode":
        assert "ray job logs --follow" in notes and "{.status.jobId}" in notes
    if jobs and mode == "InteractiveMode":
        assert '"jobId":"<id>"' in notes and "--submission-id <id>" in notes


# What each command NOTES.txt suggests asks of the API: (apiGroup, resource, verb).
KINDS = {"rayjob": ("ray.io", "rayjobs"), "raycluster": ("ray.io", "rayclusters"), "pod": ("", "pods"),
         "secret": ("", "secrets")}


def _api_needs(command: str) -> set:
    words = command.split()
    verb, rest = words[3], words[4:]
    if verb in ("get", "describe", "patch"):
        group, resource = KINDS[rest[0]]
        if verb != "get":
            return {(group, resource, "get" if verb == "describe" else "patch")}
        return {(group, resource, "list" if "-l" in rest else "get")} | ({(group, resource, "watch")} if "-w" in rest else set())
    if verb == "logs":
        target = next(w for w in rest if "/" in w) if any("/" in w for w in rest if not w.startswith("-")) else None
        job = {("batch", "jobs", "get")} if target and target.startswith("job/") else set()
        return job | {("", "pods", "list"), ("", "pods/log", "get")}
    if verb == "port-forward":
        return {("", "services", "get"), ("", "pods", "list"), ("", "pods/portforward", "create")}
    raise AssertionError(f"no API mapping for: {command}")


@pytest.mark.parametrize("values", [{}, {"job": {"submissionMode": "SidecarMode"}},
                                    {"job": {"submissionMode": "InteractiveMode"}}, {"rayCluster": {"enabled": True}}],
                         ids=["K8sJobMode", "SidecarMode", "InteractiveMode", "rayCluster"])
def test_notes_suggest_only_what_the_submitter_role_allows(values):
    rendered = k.render(values)
    notes = rendered["ray-training/templates/NOTES.txt"]
    role = k.one(k.objects_from_rendered(rendered), "Role")
    allowed = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
               for v in rule["verbs"]}
    commands = [c.strip() for line in notes.splitlines() for c in line.split("$(")
                if c.strip().startswith("kubectl -n ")]
    assert commands
    for command in commands:
        missing = _api_needs(command.rstrip(")")) - allowed
        assert not missing, f"NOTES.txt suggests `{command}` but the submitter Role lacks {sorted(missing)}"

"""Per-group pod fields (head and each worker group): extra volumes and mounts, envFrom,
priorityClassName, runtimeClassName, pod labels and annotations, topologySpreadConstraints,
initContainers. Each lands in its group's pod template only, the result validates against the
KubeRay CRDs and the Kubernetes schemas, and a wrong type is one schema error naming the value."""

from __future__ import annotations

import copy

import pytest

import k8s_support as k

CA = {"name": "corp-ca", "configMap": {"name": "corp-ca-bundle"}}
CA_MOUNT = {"name": "corp-ca", "mountPath": "/etc/ssl/corp", "readOnly": True}
SPREAD = {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
          "labelSelector": {"matchLabels": {"ray-training/worker-group": "cpu"}}}
INIT = {"name": "wait-data", "command": ["sh", "-c", "test -d /mnt/shared/data"],
        "volumeMounts": [{"name": "shared", "mountPath": "/mnt/shared", "readOnly": True}]}
FIELDS = {
    "volumes": [CA],
    "volumeMounts": [CA_MOUNT],
    "envFrom": [{"secretRef": {"name": "hf-token"}}],
    "priorityClassName": "training-high",
    "runtimeClassName": "nvidia",
    "labels": {"team": "forecasting"},
    "annotations": {"example.com/owner": "forecasting"},
    "topologySpreadConstraints": [SPREAD],
    "initContainers": [INIT],
}
GROUPS = ("head", "cpu", "gpu")


def _values(group: str, fields: dict) -> dict:
    values = {"workerGroups": {"gpu": {"enabled": True}}}
    if group == "head":
        values["head"] = copy.deepcopy(fields)
    else:
        values["workerGroups"].setdefault(group, {}).update(copy.deepcopy(fields))
    return values


def _templates(objs) -> dict[str, dict]:
    """{"head" | group name: pod template} of the RayJob's cluster."""
    cs = k.one(objs, "RayJob")["spec"]["rayClusterSpec"]
    out = {"head": cs["headGroupSpec"]["template"]}
    out.update({g["groupName"]: g["template"] for g in cs["workerGroupSpecs"]})
    return out


def _ray_container(template: dict) -> dict:
    [c] = template["spec"]["containers"]
    return c


@pytest.mark.parametrize("group", GROUPS)
def test_each_field_renders_into_its_groups_pod_template_only(group):
    objs = k.render_objects(_values(group, FIELDS))
    templates = _templates(objs)
    t = templates[group]
    spec, c = t["spec"], _ray_container(t)
    assert spec["volumes"][-1] == CA and c["volumeMounts"][-1] == CA_MOUNT
    assert {"name": "shm", "mountPath": "/dev/shm"} in c["volumeMounts"], "the chart's mounts stay"
    assert c["envFrom"] == [{"secretRef": {"name": "hf-token"}}]
    assert spec["priorityClassName"] == "training-high" and spec["runtimeClassName"] == "nvidia"
    assert t["metadata"]["labels"]["team"] == "forecasting"
    assert t["metadata"]["labels"]["app.kubernetes.io/component"] == "ray", "the chart's labels stay"
    assert t["metadata"]["annotations"] == {"example.com/owner": "forecasting"}
    assert spec["topologySpreadConstraints"] == [SPREAD]
    [init] = spec["initContainers"]
    assert init["command"] == INIT["command"] and init["volumeMounts"] == INIT["volumeMounts"]
    for other, ot in templates.items():
        if other != group:
            keys = set(ot["spec"]) & {"priorityClassName", "runtimeClassName", "topologySpreadConstraints",
                                      "initContainers"}
            assert not keys, (other, keys)
            assert "team" not in ot["metadata"]["labels"] and "envFrom" not in _ray_container(ot)
            assert all(v["name"] != "corp-ca" for v in ot["spec"]["volumes"])
    errors = [e for o in objs for v in k.KUBE_VERSIONS for e in k.validation_errors(o, v)]
    assert not errors, "\n".join(dict.fromkeys(errors))


def test_the_same_fields_reach_the_long_lived_raycluster():
    objs = k.render_objects({**_values("cpu", FIELDS), "rayCluster": {"enabled": True}})
    rc = k.one(objs, "RayCluster")
    [cpu] = [g for g in rc["spec"]["workerGroupSpecs"] if g["groupName"] == "cpu"]
    assert cpu["template"]["spec"]["priorityClassName"] == "training-high"
    assert not k.validation_errors(rc)


def test_defaults_add_nothing_to_the_pods():
    for t in _templates(k.render_objects({"workerGroups": {"gpu": {"enabled": True}}})).values():
        assert not set(t["spec"]) & {"priorityClassName", "runtimeClassName", "topologySpreadConstraints",
                                     "initContainers"}
        assert "envFrom" not in _ray_container(t) and "annotations" not in t["metadata"]
        assert [v["name"] for v in t["spec"]["volumes"]] == ["shm", "tmp", "work", "shared"]


def test_init_containers_default_to_the_chart_image_security_context_and_group_resources():
    objs = k.render_objects(_values("cpu", {"initContainers": [INIT, {
        "name": "own", "image": "busybox:1.36", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                                             "limits": {"cpu": "100m", "memory": "64Mi"}},
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}}}]}))
    cpu = _templates(objs)["cpu"]
    first, own = cpu["spec"]["initContainers"]
    ray = _ray_container(cpu)
    assert first["image"] == ray["image"] and first["imagePullPolicy"] == ray["imagePullPolicy"]
    assert first["securityContext"] == ray["securityContext"]
    assert first["resources"] == ray["resources"], "no GPUs and no more than the Ray container asks"
    assert own["image"] == "busybox:1.36" and "imagePullPolicy" not in own
    assert own["resources"]["limits"] == {"cpu": "100m", "memory": "64Mi"}
    assert own["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    gpu_init = _templates(k.render_objects(_values("gpu", {"initContainers": [INIT]})))["gpu"]["spec"]["initContainers"][0]
    assert "nvidia.com/gpu" not in gpu_init["resources"]["limits"]


def test_group_annotations_win_over_pod_annotations():
    values = _values("cpu", {"annotations": {"a": "group"}})
    values["podAnnotations"] = {"a": "global", "b": "global"}
    t = _templates(k.render_objects(values))
    assert t["cpu"]["metadata"]["annotations"] == {"a": "group", "b": "global"}
    assert t["head"]["metadata"]["annotations"] == {"a": "global", "b": "global"}


def test_envfrom_follows_the_object_store_credentials():
    values = _values("cpu", {"envFrom": [{"configMapRef": {"name": "env"}, "prefix": "X_"}]})
    values["storage"] = {"type": "objectStore", "objectStore": {"uri": "s3://b/p", "credentialsSecret": "s3"}}
    t = _templates(k.render_objects(values))
    assert _ray_container(t["cpu"])["envFrom"] == [{"secretRef": {"name": "s3"}},
                                                    {"configMapRef": {"name": "env"}, "prefix": "X_"}]
    assert _ray_container(t["head"])["envFrom"] == [{"secretRef": {"name": "s3"}}]


WRONG_TYPES = {
    "volumes": ("corp-ca", "got string, want array"),
    "volumeMounts": ([{"name": "corp-ca"}], "missing property 'mountPath'"),
    "envFrom": ({"secretRef": {"name": "x"}}, "got object, want array"),
    "priorityClassName": (5, "got number, want string"),
    "runtimeClassName": (True, "got boolean, want string"),
    "labels": ({"team": 1}, "got number, want string"),
    "annotations": (["a"], "got array, want object"),
    "topologySpreadConstraints": ([{"maxSkew": "1", "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                                    "labelSelector": {"matchLabels": {"a": "b"}}}], "got string, want integer"),
    "initContainers": ("busybox", "got string, want array"),
}


@pytest.mark.parametrize("group", ["head", "cpu"])
@pytest.mark.parametrize("field", WRONG_TYPES)
def test_schema_rejects_a_wrong_type_with_one_error_naming_the_value(field, group):
    import helm_python

    bad, reason = WRONG_TYPES[field]
    with pytest.raises(helm_python.HelmValuesError) as err:
        k.render(_values(group, {field: bad}))
    path = f"/head/{field}" if group == "head" else f"/workerGroups/{group}/{field}"
    problems = [line for line in str(err.value).splitlines() if line.lstrip().startswith("- at")]
    assert len(problems) == 1, str(err.value)
    assert path in problems[0] and reason in problems[0], str(err.value)


@pytest.mark.parametrize("values, message", [
    ({"head": {"volumeMounts": [{"name": "data", "mountPath": "/data"}]}},
     'head.volumeMounts[0].name="data": no such volume in the pod (shm, tmp, work, shared)'),
    ({"workerGroups": {"cpu": {"initContainers": [{"name": "i", "volumeMounts": [{"name": "x", "mountPath": "/x"}]}]}}},
     'workerGroups.cpu.initContainers[i].volumeMounts[0].name="x": no such volume'),
    ({"workerGroups": {"cpu": {"volumes": [{"name": "tmp", "emptyDir": {}}]}}},
     'workerGroups.cpu.volumes[0].name="tmp": the pod already has a volume of that name'),
    ({"head": {"labels": {"app.kubernetes.io/component": "x"}}},
     "head.labels.app.kubernetes.io/component: keys under app.kubernetes.io/"),
    ({"commonLabels": {"team": "a"}, "workerGroups": {"cpu": {"labels": {"team": "b"}}}},
     "workerGroups.cpu.labels.team: also set in commonLabels"),
    ({"head": {"initContainers": [{"name": "ray-head"}]}}, 'the name "ray-head" is the Ray container\'s'),
    ({"head": {"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "z", "whenUnsatisfiable": "DoNotSchedule"}]}},
     "at '/head/topologySpreadConstraints/0': missing property 'labelSelector'"),
    ({"head": {"volumes": [{"name": "a", "emptyDir": {}, "configMap": {"name": "b"}}]}}, "/head/volumes/0"),
    ({"storage": {"type": "objectStore", "objectStore": {"uri": "s3://b"}},
      "head": {"volumeMounts": [{"name": "shared", "mountPath": "/mnt/shared"}]}},
     'head.volumeMounts[0].name="shared": no such volume in the pod (shm, tmp, work)'),
])
def test_inconsistent_pod_fields_fail_with_one_line(values, message):
    import helm_python

    with pytest.raises((helm_python.HelmValuesError, helm_python.HelmRenderError)) as err:
        k.render(values)
    assert message in str(err.value), str(err.value)

"""Resource guards in the chart: memory limits, Ray's object store and /dev/shm follow the values.

Rendered by the real Helm engine (the objects are validated in test_k8s_contract.py)."""

from __future__ import annotations

import pytest

import k8s_support as k

GiB = 2**30


def groups(values: dict) -> dict[str, dict]:
    """group name -> {limits, requests, object_store, shm} of the rendered RayJob."""
    cs = k.one(k.render_objects(values), "RayJob")["spec"]["rayClusterSpec"]
    out = {}
    for name, g in [("head", cs["headGroupSpec"])] + [(g["groupName"], g) for g in cs["workerGroupSpecs"]]:
        pod = g["template"]["spec"]
        res = pod["containers"][0]["resources"]
        shm = next(v for v in pod["volumes"] if v["name"] == "shm")["emptyDir"]
        mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "shm")
        assert shm["medium"] == "Memory" and mount["mountPath"] == "/dev/shm"
        out[name] = {"limits": res["limits"], "requests": res["requests"],
                     "object_store": int(g["rayStartParams"]["object-store-memory"]),
                     "shm": k.parse_quantity(shm["sizeLimit"])}
    return out


def test_defaults_set_object_store_and_shm_explicitly():
    g = groups({})
    for name, limit in (("head", 8 * GiB), ("cpu", 16 * GiB)):
        assert g[name]["object_store"] == int(0.3 * limit)
        # /dev/shm holds the object store plus storage.shmSize (2Gi), rounded up to a MiB.
        assert g[name]["object_store"] + 2 * GiB <= g[name]["shm"] < g[name]["object_store"] + 2 * GiB + 2**20
        assert g[name]["shm"] < limit


@pytest.mark.parametrize("memory", ["24Gi", "6Gi"])
def test_memory_limits_object_store_and_shm_follow_the_memory_value(memory):
    values = {"workerGroups": {"cpu": {"resources": {"requests": {"cpu": "4", "memory": memory},
                                                     "limits": {"cpu": "4", "memory": memory}}}},
              "storage": {"shmSize": "1Gi"}}
    g = groups(values)["cpu"]
    limit = k.parse_quantity(memory)
    assert g["limits"]["memory"] == g["requests"]["memory"] == memory
    assert g["object_store"] == int(0.3 * limit)
    assert g["object_store"] + GiB <= g["shm"] < g["object_store"] + GiB + 2**20
    assert groups({})["cpu"]["object_store"] != g["object_store"]


def test_explicit_object_store_memory_and_ray_start_param():
    g = groups({"workerGroups": {"cpu": {"objectStoreMemory": "4Gi"}},
                "head": {"rayStartParams": {"object-store-memory": "1000000000"}}})
    assert g["cpu"]["object_store"] == 4 * GiB
    assert g["cpu"]["shm"] == 6 * GiB
    assert g["head"]["object_store"] == 1_000_000_000


def test_an_object_store_the_pod_cannot_hold_is_refused():
    import helm_python

    with pytest.raises(helm_python.HelmRenderError) as err:
        k.render({"workerGroups": {"cpu": {"objectStoreMemory": "15Gi"}}})
    assert ("workerGroups.cpu: the object store (15360 MiB) plus storage.shmSize (2Gi) must stay below "
            "resources.limits.memory=16Gi") in str(err.value)


@pytest.mark.parametrize("values, store, limit", [
    ({"workerGroups": {"cpu": {"objectStoreMemory": 4294967296}}}, 4 * GiB, "16Gi"),
    ({"workerGroups": {"cpu": {"resources": {"requests": {"cpu": "4", "memory": 17179869184},
                                             "limits": {"cpu": "4", "memory": 17179869184}}}}},
     int(0.3 * 16 * GiB), 17179869184),
])
def test_a_plain_number_quantity_is_bytes(values, store, limit):
    """YAML numbers reach the templates as float64; 4294967296 is 4 GiB, not 4 bytes (Kubernetes
    reads a plain number as bytes too)."""
    g = groups(values)["cpu"]
    assert g["limits"]["memory"] == limit
    assert g["object_store"] == store
    assert store + 2 * GiB <= g["shm"] < store + 2 * GiB + 2**20


def test_a_plain_number_limit_is_named_in_bytes_when_refused():
    import helm_python

    with pytest.raises(helm_python.HelmRenderError) as err:
        k.render({"workerGroups": {"cpu": {"objectStoreMemory": "15Gi", "resources": {
            "requests": {"cpu": "4", "memory": 17179869184}, "limits": {"cpu": "4", "memory": 17179869184}}}}})
    assert "the object store (15360 MiB) plus storage.shmSize (2Gi) must stay below " \
           "resources.limits.memory=17179869184" in str(err.value)

"""Bad values fail at render time with one message that names the value."""

from __future__ import annotations

import pytest

import k8s_support as k

GPU_ON = {"enabled": True}

CASES = {
    # values.schema.json
    "wrong type": ({"workerGroups": {"cpu": {"replicas": "two"}}}, ["/workerGroups/cpu/replicas", "want integer"]),
    "unknown key": ({"job": {"overidez": ["workload=xgboost"]}}, ["/job", "overidez"]),
    "unknown key deep": ({"workerGroups": {"cpu": {"resources": {"limits": {"cpus": "2"}}}}}, ["cpus"]),
    "unknown group field": ({"workerGroups": {"cpu": {"replica": 2}}}, ["/workerGroups/cpu", "replica"]),
    "negative replicas": ({"workerGroups": {"cpu": {"replicas": -1}}}, ["/workerGroups/cpu/replicas", "-1"]),
    "bad quantity": ({"head": {"resources": {"limits": {"memory": "8Gb"}}}}, ["/head/resources/limits/memory", "8Gb"]),
    "bad enum": ({"job": {"submissionMode": "K8sMode"}}, ["/job/submissionMode", "K8sJobMode"]),
    "bad upgradeStrategy": ({"rayCluster": {"enabled": True, "upgradeStrategy": "Rolling"}},
                            ["/rayCluster/upgradeStrategy", "Recreate"]),
    "gpu group without gpus": ({"workerGroups": {"gpu": {**GPU_ON, "gpus": 0}}}, ["/workerGroups/gpu/gpus", "want 1"]),
    "gpu group missing gpus": ({"workerGroups": {"tpu": {"type": "gpu", "replicas": 1, "resources": {
        "requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}}}},
        ["/workerGroups/tpu", "gpus"]),
    "group without limits": ({"workerGroups": {"big": {"replicas": 1, "resources": {
        "requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1"}}}}}, ["/workerGroups/big", "memory"]),
    "bad group name": ({"workerGroups": {"CPU_big": {"replicas": 1}}}, ["CPU_big"]),
    "shell in override": ({"job": {"overrides": ["workload=x; rm -rf /"]}}, ["/job/overrides/0", "rm -rf"]),
    "privileged": ({"containerSecurityContext": {"allowPrivilegeEscalation": True}},
                   ["/containerSecurityContext/allowPrivilegeEscalation"]),
    "root": ({"podSecurityContext": {"runAsNonRoot": False}}, ["/podSecurityContext/runAsNonRoot"]),
    "objectStore without uri": ({"storage": {"type": "objectStore"}}, ["/storage/objectStore/uri"]),
    # templates (combinations the schema cannot express)
    "min > max": ({"workerGroups": {"cpu": {"minReplicas": 5, "maxReplicas": 3, "replicas": 4}}},
                  ["workerGroups.cpu", "minReplicas=5", "maxReplicas=3"]),
    "replicas outside min..max": ({"workerGroups": {"cpu": {"replicas": 9}}}, ["workerGroups.cpu.replicas=9"]),
    "cpu group with gpus": ({"workerGroups": {"cpu": {"gpus": 2}}}, ["workerGroups.cpu.gpus=2", "type: gpu"]),
    "train group missing": ({"train": {"workerGroup": "nope"}}, ['train.workerGroup="nope"', "cpu, gpu"]),
    "train group disabled": ({"train": {"workerGroup": "gpu"}}, ['train.workerGroup="gpu"', "enabled=false"]),
    "train group empty": ({"workerGroups": {"cpu": {"replicas": 0}}}, ["workerGroups.cpu.replicas=0"]),
    # cluster.cpus_per_worker is an int in training/settings.py: 1.5 would render and the job die.
    "fractional cpus per worker": ({"train": {"cpusPerWorker": 1.5}}, ["/train/cpusPerWorker", "want integer"]),
    "too many cpus per worker": ({"train": {"cpusPerWorker": 8}}, ["train.cpusPerWorker=8", "4 CPUs"]),
    "fractional pod": ({"workerGroups": {"cpu": {"resources": {"limits": {"cpu": "500m"}, "requests": {"cpu": "500m"}}}}},
                       ["workerGroups.cpu.resources.limits.cpu=500m"]),
    "chart-owned override": ({"job": {"overrides": ["cluster.num_workers=3"]}}, ['"cluster.num_workers=3"']),
    "tracking override": ({"job": {"overrides": ["tracking=local"]}}, ['"tracking=local"']),
    "tracking uri override": ({"job": {"overrides": ["tracking.uri=http://elsewhere:5000"]}},
                              ['"tracking.uri=http://elsewhere:5000"']),
    "deleted chart-owned override": ({"job": {"overrides": ["~cluster.dashboard"]}}, ['"~cluster.dashboard"']),
    "retries with generateName": ({"job": {"backoffLimit": 1, "generateName": True}},
                                  ["job.backoffLimit=1", "generateName", "could not resume"]),
    "suspend without shutdown": ({"job": {"suspend": True, "shutdownAfterJobFinishes": False,
                                          "ttlSecondsAfterFinished": 0}},
                                 ["job.suspend=true", "shutdownAfterJobFinishes"]),
    "ttl without shutdown": ({"job": {"shutdownAfterJobFinishes": False}}, ["job.ttlSecondsAfterFinished=300"]),
    "deletionStrategy with shutdown": ({"job": {"deletionStrategy": {"deletionRules": [
        {"policy": "DeleteCluster", "condition": {"jobStatus": "SUCCEEDED"}}]}}},
        ["job.deletionStrategy", "shutdownAfterJobFinishes=true"]),
    "backoffLimit with clusterSelector": ({"job": {"backoffLimit": 2, "clusterSelector": {"ray.io/cluster": "dev"}}},
                                          ["job.backoffLimit=2", "clusterSelector"]),
    "suspend with clusterSelector": ({"job": {"suspend": True, "clusterSelector": {"ray.io/cluster": "dev"}}},
                                     ["job.suspend=true", "clusterSelector"]),
    "sidecar with clusterSelector": ({"job": {"submissionMode": "SidecarMode", "clusterSelector": {"ray.io/cluster": "d"}}},
                                     ["SidecarMode", "clusterSelector"]),
    "clusterSelector without cluster": ({"job": {"clusterSelector": {"team": "a"}}}, ["ray.io/cluster"]),
    "interactive with retries": ({"job": {"submissionMode": "InteractiveMode", "backoffLimit": 1}},
                                 ["job.backoffLimit=1", "InteractiveMode"]),
    "job name too long": ({"job": {"name": "r" + "x" * 46 + "y"}}, ["maxLength", "48"]),
    "job name not DNS-1035": ({"job": {"name": "9lives"}}, ['"9lives"', "DNS-1035"]),
    "auth disabled silently": ({"auth": {"mode": "disabled"}}, ["auth.mode=disabled", "acknowledgeDisabled"]),
    "postgres without secret": ({"mlflow": {"backend": {"type": "postgresql"}}}, ["mlflow.backend.existingSecret"]),
    "no tracking server": ({"mlflow": {"enabled": False}}, ["mlflow.externalUri"]),
    "serving without a model": ({"serving": {"enabled": True}}, ["serving.enabled needs serving.model"]),
    "serving neither alias nor version": ({"serving": {"enabled": True, "model": "m", "alias": ""}},
                                          ["serving.alias and serving.version are both empty"]),
    "serving version not a number": ({"serving": {"version": "latest"}}, ["/serving/version", "latest"]),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_rejected_with_message_naming_the_value(case):
    import helm_python

    values, must_mention = CASES[case]
    with pytest.raises((helm_python.HelmValuesError, helm_python.HelmRenderError)) as err:
        k.render(values)
    msg = str(err.value)
    for needle in must_mention:
        assert needle in msg, f"{case}: message lacks {needle!r}:\n{msg}"


def test_lint_also_rejects_schema_errors():
    import helm_python

    report = helm_python.lint(str(k.CHART_DIR), {"workerGroups": {"cpu": {"replicas": -1}}}, strict=True,
                              kube_version="v1.30.0")
    assert any("/workerGroups/cpu/replicas" in e for e in report["errors"])


@pytest.mark.parametrize("mutate, expected", [
    (lambda j: j["spec"].update(suspend=True, shutdownAfterJobFinishes=False), "suspend=true needs shutdownAfterJobFinishes"),
    (lambda j: j["spec"].update(shutdownAfterJobFinishes=False), "ttlSecondsAfterFinished > 0 needs"),
    (lambda j: j["spec"].update(deletionStrategy={"deletionRules": [
        {"policy": "DeleteCluster", "condition": {"jobStatus": "FAILED"}}]}), "deletionStrategy excludes"),
    (lambda j: j["spec"].update(clusterSelector={"ray.io/cluster": "x"}, backoffLimit=1), "backoffLimit is not allowed"),
    (lambda j: j["metadata"].update(name="x" * 48), "KubeRay allows 47"),
    (lambda j: j["metadata"].update(name="Train-1"), "DNS-1035"),
    (lambda j: j["spec"]["rayClusterSpec"].update(rayVersion="2.50.0"), "needs Ray >= 2.52.0"),
    (lambda j: j["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["rayStartParams"].update(labels="a=b"), "labels"),
    (lambda j: j["spec"].update(submissionMode="SidecarMode"), "SidecarMode does not support submitterPodTemplate"),
    (lambda j: j["spec"]["rayClusterSpec"].update(upgradeStrategy={"type": "Recreate"}), "upgradeStrategy cannot be set"),
])
def test_post_apply_rules_catch_what_the_operator_rejects(mutate, expected):
    """The rule checker itself: each KubeRay after-apply rule fires on a rendered RayJob."""
    import copy

    job = copy.deepcopy(k.one(k.render_objects({}), "RayJob"))
    assert not k.kuberay_rule_violations(job)
    mutate(job)
    found = k.kuberay_rule_violations(job)
    assert any(expected in f for f in found), found


@pytest.mark.parametrize("mutate, expected", [
    (lambda j: j["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
     .update(resourcez={}), "'resourcez' was unexpected"),
    (lambda j: j["spec"]["rayClusterSpec"]["headGroupSpec"].update(rayStartParams={"num-cpus": 1}), "not of type 'string'"),
    (lambda j: j["spec"].update(deletionStrategy={"onSuccess": {"policy": "DeleteCluster"}}), "requires either BOTH"),
    (lambda j: j["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
     ["resources"]["limits"].update(memory="8Gb"), "8Gb"),
    (lambda j: j["spec"].update(managedBy="me"), "managedBy"),
])
def test_crd_validation_catches_typos_and_cel_rules(mutate, expected):
    import copy

    job = copy.deepcopy(k.one(k.render_objects({}), "RayJob"))
    mutate(job)
    errors = k.validation_errors(job)
    assert any(expected in e for e in errors), errors

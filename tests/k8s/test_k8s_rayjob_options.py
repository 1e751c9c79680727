"""RayJob spec options: preRunningDeadlineSeconds (KubeRay >= 1.6) and the Kueue setup
(queue-name label, created suspended), rendered and validated against the KubeRay CRDs."""

from __future__ import annotations

import pytest

import k8s_support as k


def test_pre_running_deadline_is_unset_by_default(scenario_renders):
    assert "preRunningDeadlineSeconds" not in k.one(k.render_objects({}), "RayJob")["spec"]
    assert "preRunningDeadlineSeconds" in k.crd_schema("RayJob")["properties"]["spec"]["properties"]


@pytest.mark.parametrize("schedule", [None, "CronJob", "RayCronJob"])
def test_pre_running_deadline_reaches_every_rayjob_spec(schedule):
    values = {"job": {"preRunningDeadlineSeconds": 900}}
    if schedule:
        values["schedule"] = {"enabled": True, "kind": schedule}
        if schedule == "RayCronJob":
            values["job"].update(shutdownAfterJobFinishes=False, ttlSecondsAfterFinished=0,
                                 deletionStrategy={"deletionRules": [
                                     {"policy": "DeleteSelf", "condition": {"jobStatus": "SUCCEEDED",
                                                                            "ttlSeconds": 60}}]})
    objs = k.render_objects(values)
    assert k.one(objs, "RayJob")["spec"]["preRunningDeadlineSeconds"] == 900
    for cron in k.by_kind(objs, "RayCronJob"):
        assert cron["spec"]["jobTemplate"]["preRunningDeadlineSeconds"] == 900
    errors = [e for o in objs for e in k.validation_errors(o)]
    assert not errors, errors


def test_bert_preset_sets_a_pre_running_deadline(scenario_renders):
    spec = k.one(scenario_renders["bert-gpu.yaml"], "RayJob")["spec"]
    assert 0 < spec["preRunningDeadlineSeconds"] < spec["activeDeadlineSeconds"]


def test_pre_running_deadline_rejects_a_negative_value():
    import helm_python

    with pytest.raises(helm_python.HelmValuesError, match="/job/preRunningDeadlineSeconds"):
        k.render({"job": {"preRunningDeadlineSeconds": -1}})


def test_kueue_scenario_queues_a_suspended_rayjob(scenario_renders):
    objs = scenario_renders["kueue-values.yaml"]
    job = k.one(objs, "RayJob")
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert job["spec"]["suspend"] is True
    assert job["spec"]["shutdownAfterJobFinishes"] is True, "KubeRay refuses suspend without it"
    assert "clusterSelector" not in job["spec"], "Kueue admits the cluster the RayJob creates"
    errors = [e for o in objs for v in k.KUBE_VERSIONS for e in k.validation_errors(o, v)]
    assert not errors, "\n".join(dict.fromkeys(errors))
    # Scheduled runs (the CronJob launcher's RayJob template) are queued the same way.
    values = {**k.load_values(k.CI_VALUES_DIR / "kueue-values.yaml"), "schedule": {"enabled": True}}
    import yaml

    cm = next(o for o in k.render_objects(values) if o["kind"] == "ConfigMap" and "rayjob.yaml" in o.get("data", {}))
    template = yaml.safe_load(cm["data"]["rayjob.yaml"])
    assert template["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert template["spec"]["suspend"] is True

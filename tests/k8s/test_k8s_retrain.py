"""Scheduled retraining in the chart: the launcher CronJob with its minimal RBAC, and KubeRay's
alpha RayCronJob; both validated like the rest of the chart (real Helm, kubernetes-validate,
KubeRay CRDs). tests/test_launch.py runs the CronJob's exact launcher arguments against a
stand-in API server."""

from __future__ import annotations

import pytest
import yaml

import k8s_support as k
from training.ops.launch import cli, naming, render

CRON = k.CI_VALUES_DIR / "schedule-cronjob-values.yaml"
RAYCRON = k.CI_VALUES_DIR / "schedule-raycronjob-values.yaml"


def cron_objects(**extra):
    values = k.load_values(CRON)
    for key, val in extra.items():
        values[key] = {**values.get(key, {}), **val}
    return k.render_objects(values)


def named(objs, kind, suffix="-retrain"):
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"].endswith(suffix))


def test_off_by_default():
    kinds = {o["kind"] for o in k.render_objects({})}
    assert not kinds & {"CronJob", "RayCronJob", "ConfigMap"}


@pytest.mark.parametrize("kube", k.KUBE_VERSIONS)
def test_cronjob_objects_are_valid(kube):
    objs = cron_objects()
    errors = [e for o in objs for e in k.validation_errors(o, kube)]
    assert not errors, "\n".join(errors)


def test_cronjob_policy():
    cron = k.one(cron_objects(), "CronJob")
    spec = cron["spec"]
    assert spec["schedule"] == "0 3 * * 1" and spec["timeZone"] == "Europe/Berlin"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["successfulJobsHistoryLimit"] == 3 and spec["failedJobsHistoryLimit"] == 3
    assert spec["startingDeadlineSeconds"] == 3600 and spec["suspend"] is False
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0
    assert job["activeDeadlineSeconds"] == 86400 + 300  # the launcher's timeout, then room to delete
    assert "activeDeadlineSeconds" not in k.one(cron_objects(schedule={"timeoutSeconds": 0}),
                                                 "CronJob")["spec"]["jobTemplate"]["spec"]


def test_rbac_allows_only_rayjobs_in_the_namespace():
    objs = cron_objects()
    sa, role, binding = named(objs, "ServiceAccount"), named(objs, "Role"), named(objs, "RoleBinding")
    assert role["rules"] == [{"apiGroups": ["ray.io"], "resources": ["rayjobs"],
                              "verbs": ["create", "get", "list", "watch", "delete"]}]
    assert not k.by_kind(objs, "ClusterRole") and not k.by_kind(objs, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": k.NAMESPACE}]
    # Nothing else binds that ServiceAccount.
    others = [b for b in k.by_kind(objs, "RoleBinding") if b is not binding]
    assert all(s.get("name") != sa["metadata"]["name"] for b in others for s in b["subjects"])
    pod = k.one(objs, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is True and sa["automountServiceAccountToken"] is False


def test_launcher_container_runs_the_configmap_rayjob_status_only():
    objs = cron_objects()
    pod = k.one(objs, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["command"] == ["python", "-m", "training.ops.launch"]
    assert "--no-logs" in c["args"]  # the Role grants no pods/log
    assert "--keep-finished=3" in c["args"] and "--timeout=86400" in c["args"]
    manifest = next(a.split("=", 1)[1] for a in c["args"] if a.startswith("--manifest="))
    mount = next(m for m in c["volumeMounts"] if manifest.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    cm = named(objs, "ConfigMap")
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    assert manifest.rsplit("/", 1)[1] in cm["data"]
    cli.parser().parse_args(c["args"])  # the arguments the launcher accepts
    assert c["securityContext"]["readOnlyRootFilesystem"] is True and c["resources"]["limits"]


def test_configmap_rayjob_is_valid_and_the_releases_spec():
    objs = cron_objects()
    job = yaml.safe_load(named(objs, "ConfigMap")["data"]["rayjob.yaml"])
    prepared = render.prepare(job, naming.new_run_id())
    assert not k.validation_errors(prepared), k.validation_errors(prepared)
    assert prepared["metadata"]["name"].startswith("demo-ray-training-")
    assert prepared["metadata"]["labels"]["ray-training/trigger"] == "schedule"
    assert "workload=xgboost promote.enabled=true promote.margin=0.01" in job["spec"]["entrypoint"]
    # With the release's RayJob on too, both carry the same spec (one template).
    both = cron_objects(job={"enabled": True})
    released = k.one(both, "RayJob")
    scheduled = yaml.safe_load(named(both, "ConfigMap")["data"]["rayjob.yaml"])
    assert scheduled["spec"] == released["spec"]


def test_long_release_names_still_fit():
    values = k.load_values(CRON)
    objs = k.render_objects(values, name="a-very-long-release-name-for-team-forecasting")
    job = yaml.safe_load(named(objs, "ConfigMap")["data"]["rayjob.yaml"])
    name = render.prepare(job, naming.new_run_id())["metadata"]["name"]
    assert len(name) <= 47 and k.DNS1035.match(name)
    assert all(len(o["metadata"]["name"]) <= 63 for o in objs)
    raycron = k.one(k.render_objects(k.load_values(RAYCRON), name="a-very-long-release-name-for-team-forecasting"),
                    "RayCronJob")
    assert len(raycron["metadata"]["name"]) <= 36 and not k.kuberay_rule_violations(raycron)


def test_raycronjob_validates_against_the_crd():
    objs = k.render_objects(k.load_values(RAYCRON))
    assert not k.by_kind(objs, "CronJob")
    cron = k.one(objs, "RayCronJob")
    assert not k.validation_errors(cron), k.validation_errors(cron)
    assert cron["spec"]["schedule"] == "@daily"
    # jobTemplate is a RayJob spec: validate it as one (CRD, CEL, pod templates, operator rules).
    as_job = {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": "x"}, "spec": cron["spec"]["jobTemplate"]}
    assert not k.validation_errors(as_job), k.validation_errors(as_job)
    policies = {r["policy"] for r in cron["spec"]["jobTemplate"]["deletionStrategy"]["deletionRules"]}
    assert "DeleteSelf" in policies  # finished scheduled RayJobs clean themselves up


def test_crd_check_catches_a_raycronjob_typo():
    cron = k.one(k.render_objects(k.load_values(RAYCRON)), "RayCronJob")
    cron["spec"]["concurrencyPolicy"] = "Forbid"  # a CronJob field RayCronJob does not have
    assert any("concurrencyPolicy" in e for e in k.validation_errors(cron))


@pytest.mark.parametrize("values, error, reason", [
    ({"schedule": {"enabled": True, "kind": "Cron"}}, "HelmValuesError",
     "at '/schedule/kind': value must be one of 'CronJob', 'RayCronJob'"),
    ({"schedule": {"enabled": True, "cron": "every monday"}}, "HelmValuesError",
     "at '/schedule/cron': 'every monday' does not match pattern"),
    ({"schedule": {"enabled": True, "keepFinished": -1}}, "HelmValuesError",
     "at '/schedule/keepFinished': minimum: got -1, want 0"),
    ({"schedule": {"enabled": True}, "job": {"enabled": False, "suspend": True, "shutdownAfterJobFinishes": False,
                                             "ttlSecondsAfterFinished": 0}}, "HelmRenderError",
     "job.suspend=true needs job.shutdownAfterJobFinishes=true (KubeRay rejects suspending"),
    # The RayCronJob's RayJobs would be created suspended with no Kueue label: never admitted.
    ({"schedule": {"enabled": True, "kind": "RayCronJob"},
      "job": {"enabled": False, "suspend": True, "labels": {"kueue.x-k8s.io/queue-name": "team-a"}}}, "HelmRenderError",
     "job.suspend=true with schedule.kind=RayCronJob: KubeRay creates each scheduled RayJob suspended but "
     "without job.labels (no kueue.x-k8s.io/queue-name), so Kueue never admits it; use schedule.kind=CronJob"),
])
def test_bad_schedule_values_fail_the_render(values, error, reason):
    import helm_python

    with pytest.raises(getattr(helm_python, error)) as exc:
        k.render(values)
    assert reason in str(exc.value), str(exc.value)

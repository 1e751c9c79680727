"""manifests/gitops: Argo CD Application/ApplicationSet valid against the Argo CD 3.6 CRD, the
per-environment values render to valid objects, and the RayJob name follows its spec.

No ApplicationSet CRD is in ../shared/schemas: the ApplicationSet is checked by expanding its
list generator (as the controller does for these simple templates) and validating each
generated Application against the Application CRD.
"""

from __future__ import annotations

import copy
import functools
import re

import pytest
import yaml

import k8s_support as k

GITOPS = k.REPO_ROOT / "manifests" / "gitops"
ENVS = sorted((GITOPS / "envs").glob("*.yaml"))
ARGO_CRD = k.SHARED_DIR / "schemas" / "argocd" / "application-crd.yaml"
REPLICA_PATHS = {("RayCluster", ".spec.workerGroupSpecs[].replicas"),
                 ("RayJob", ".spec.rayClusterSpec.workerGroupSpecs[].replicas")}


@functools.lru_cache(maxsize=1)
def application_validator():
    import jsonschema

    if not ARGO_CRD.exists():
        pytest.fail(f"missing {ARGO_CRD}: see ../shared/README.md", pytrace=False)
    doc = yaml.load(ARGO_CRD.read_text(), Loader=yaml.CSafeLoader)
    version = next(v for v in doc["spec"]["versions"] if v["name"] == "v1alpha1")
    schema = k._tighten(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
    schema["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft7Validator(schema)


def app_errors(app: dict) -> list[str]:
    errs = application_validator().iter_errors(app)
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errs]


def load(name: str) -> dict:
    return yaml.safe_load((GITOPS / name).read_text())


def expand(appset: dict) -> list[dict]:
    """The Applications the list generator makes ({{.key}} placeholders, goTemplate)."""
    out = []
    for gen in appset["spec"]["generators"]:
        for element in gen["list"]["elements"]:
            text = yaml.safe_dump(appset["spec"]["template"])
            missing = set(re.findall(r"\{\{\s*\.(\w+)\s*\}\}", text)) - set(element)
            assert not missing, f"template uses {missing}, not set by {element}"
            text = re.sub(r"\{\{\s*\.(\w+)\s*\}\}", lambda m: str(element[m.group(1)]), text)
            out.append({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", **yaml.safe_load(text)})
    return out


def applications() -> list[dict]:
    return [load("application.yaml"), *expand(load("applicationset.yaml"))]


def test_applications_validate_against_the_argocd_crd():
    apps = applications()
    assert len(apps) == 1 + len(ENVS)
    for app in apps:
        assert not app_errors(app), (app["metadata"]["name"], app_errors(app))


def test_the_crd_check_catches_mistakes():
    app = load("application.yaml")
    app["spec"]["syncPolicy"]["automated"]["prunee"] = True
    del app["spec"]["destination"]
    errors = "\n".join(app_errors(app))
    assert "'destination' is a required property" in errors and "prunee" in errors


def test_applicationset_shape():
    appset = load("applicationset.yaml")
    assert appset["apiVersion"] == "argoproj.io/v1alpha1" and appset["kind"] == "ApplicationSet"
    assert appset["spec"]["goTemplate"] is True
    envs = {e["env"] for g in appset["spec"]["generators"] for e in g["list"]["elements"]}
    assert envs == {p.stem for p in ENVS}, "one generator element per manifests/gitops/envs/*.yaml"


@pytest.mark.parametrize("app", applications(), ids=lambda a: a["metadata"]["name"])
def test_application_points_at_the_chart_and_prunes(app):
    spec = app["spec"]
    chart = k.REPO_ROOT / spec["source"]["path"]
    assert (chart / "Chart.yaml").exists()
    for f in spec["source"]["helm"]["valueFiles"]:
        assert (chart / f).resolve().is_file(), f"{f} (relative to {spec['source']['path']})"
    assert spec["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    assert "RespectIgnoreDifferences=true" in spec["syncPolicy"]["syncOptions"]
    ignored = {(d["kind"], p) for d in spec["ignoreDifferences"] if d.get("group") == "ray.io"
               for p in d.get("jqPathExpressions", [])}
    assert REPLICA_PATHS <= ignored, "autoscaler-managed replicas must be ignored"
    assert spec["source"]["helm"]["releaseName"] == "ray-training"


def render_env(env, revision=1, **extra) -> list[dict]:
    values = k.load_values(env)
    for key, val in extra.items():
        values[key] = {**values.get(key, {}), **val}
    # Argo CD renders with `helm template`: revision 1 every time.
    return k.render_objects(values, name="ray-training", namespace="ml-" + env.stem, revision=revision)


@pytest.mark.parametrize("env", ENVS, ids=lambda p: p.stem)
def test_environment_values_render_valid_objects(env):
    import helm_python

    report = helm_python.lint(str(k.CHART_DIR), k.load_values(env), strict=True, kube_version="v1.30.0")
    assert not report["errors"] and not report["messages"], report["messages"]
    objs = render_env(env)
    errors = [e for o in objs for v in k.KUBE_VERSIONS for e in k.validation_errors(o, v)]
    assert not errors, "\n".join(dict.fromkeys(errors))
    kinds = {o["kind"] for o in objs}
    assert "Secret" not in kinds and "Pod" not in kinds, "nothing random or hook-only for Argo CD to diff"
    job = k.one(objs, "RayJob")
    assert "promote.enabled=true" in job["spec"]["entrypoint"]
    # A RayJob that deletes itself would be recreated by selfHeal: a second, unwanted run.
    rules = (job["spec"].get("deletionStrategy") or {}).get("deletionRules", [])
    assert all(r["policy"] != "DeleteSelf" for r in rules)


@pytest.mark.parametrize("env", ENVS, ids=lambda p: p.stem)
def test_rayjob_name_follows_the_training_configuration(env):
    name = k.one(render_env(env), "RayJob")["metadata"]["name"]
    assert re.fullmatch(r"ray-training-[0-9a-f]{8}", name) and len(name) <= 47
    # Same git state -> same name (no rerun on every sync), whatever the render.
    assert k.one(render_env(env, revision=7), "RayJob")["metadata"]["name"] == name
    # Not part of the RayJob: same name.
    same = render_env(env, mlflow={"resources": {"requests": {"cpu": "2", "memory": "4Gi"},
                                                "limits": {"cpu": "2", "memory": "4Gi"}}})
    assert k.one(same, "RayJob")["metadata"]["name"] == name
    # A merged change to the training configuration: a new RayJob.
    values = k.load_values(env)
    changed = k.render_objects({**values, "job": {**values["job"],
                                                  "overrides": values["job"]["overrides"] + ["seed=7"]}},
                               name="ray-training", namespace="ml")
    assert k.one(changed, "RayJob")["metadata"]["name"] != name
    bigger = render_env(env, image={"tag": "0.2.0"})
    assert k.one(bigger, "RayJob")["metadata"]["name"] != name


def test_production_schedules_retraining():
    objs = render_env(GITOPS / "envs" / "production.yaml")
    cron = k.one(objs, "CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["timeZone"] == "Europe/Berlin"
    # The champion the retraining promotes is served, following the alias (no restart to sync).
    [server] = [d for d in k.by_kind(objs, "Deployment") if d["metadata"]["name"].endswith("-serving")]
    args = server["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--model=retail-demand-ensemble" in args and "--alias=champion" in args
    assert "workload=ensemble" in k.one(objs, "RayJob")["spec"]["entrypoint"]


def _render_chart_copy(tmp_path, values, chart_edit=None, **kw) -> list[dict]:
    """Render a copy of the chart (Chart.yaml edited by chart_edit) as Argo CD does."""
    import shutil

    import helm_python

    chart = tmp_path / "ray-training"
    shutil.copytree(k.CHART_DIR, chart)
    if chart_edit:
        meta = yaml.safe_load((chart / "Chart.yaml").read_text())
        chart_edit(meta)
        (chart / "Chart.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    with helm_python.Chart.load(str(chart)) as c:
        rendered = c.render(values, name="ray-training", namespace="ml", revision=1, **kw)
    return k.objects_from_rendered(rendered)


def test_config_hash_ignores_the_chart_version_but_not_the_run(tmp_path):
    """The hash covers what changes a run, not the labels that carry the chart's version: a
    chart release alone keeps the RayJob name (no rerun on the next sync); an entrypoint change,
    in the same bumped chart, is a new name."""
    values = k.load_values(ENVS[0])
    base = k.one(_render_chart_copy(tmp_path / "a", values), "RayJob")
    bumped_objs = _render_chart_copy(tmp_path / "b", values, lambda m: m.update(version="9.9.9"))
    bumped = k.one(bumped_objs, "RayJob")
    pod_labels = bumped["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["metadata"]["labels"]
    assert pod_labels["helm.sh/chart"] == "ray-training-9.9.9", "the spec does carry the version"
    assert bumped["metadata"]["name"] == base["metadata"]["name"]
    changed = dict(values, job={**values["job"], "overrides": values["job"]["overrides"] + ["seed=7"]})
    rerun = k.one(_render_chart_copy(tmp_path / "c", changed, lambda m: m.update(version="9.9.9")), "RayJob")
    assert rerun["metadata"]["name"] != base["metadata"]["name"]
    assert rerun["spec"]["entrypoint"] != base["spec"]["entrypoint"]
    # appVersion is the default image tag: a new one is a new run.
    app = k.one(_render_chart_copy(tmp_path / "d", {**values, "image": {"repository": "r", "tag": ""}},
                                   lambda m: m.update(appVersion="0.2.0")), "RayJob")
    same_app = k.one(_render_chart_copy(tmp_path / "e", {**values, "image": {"repository": "r", "tag": ""}}),
                     "RayJob")
    assert app["metadata"]["name"] != same_app["metadata"]["name"]


def test_what_helm_keeps_argo_cd_keeps_too():
    """Argo CD ignores helm.sh/resource-policy: the shared data, the model registry's volume and
    the credentials running pods hold carry Argo CD's own Delete=false (the Application deleted)
    and Prune=false (the object no longer rendered)."""
    objs = k.render_objects({"mlflow": {"auth": {"enabled": True}}})
    kept = [o for o in objs if (o["metadata"].get("annotations") or {}).get("helm.sh/resource-policy") == "keep"]
    assert sorted(k.obj_id(o) for o in kept) == [
        "PersistentVolumeClaim/demo-ray-training-mlflow", "PersistentVolumeClaim/demo-ray-training-shared",
        "Secret/demo-ray-training-mlflow-auth", "Secret/demo-ray-training-ray-auth"]
    for o in kept:
        options = o["metadata"]["annotations"]["argocd.argoproj.io/sync-options"]
        assert {opt.strip() for opt in options.split(",")} == {"Delete=false", "Prune=false"}, k.obj_id(o)

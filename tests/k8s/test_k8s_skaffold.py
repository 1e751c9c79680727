"""skaffold.yaml (and each profile, patched) against the v4beta14 schema; its paths exist."""

from __future__ import annotations

import copy
import json
import re

import pytest
import yaml

import k8s_support as k

CONFIG = yaml.safe_load((k.REPO_ROOT / "skaffold.yaml").read_text())


def validator():
    import jsonschema

    schema = json.loads(k.SKAFFOLD_SCHEMA.read_text())
    return jsonschema.Draft7Validator({**schema, "$ref": "#/definitions/SkaffoldConfig"})


def apply_patches(doc: dict, patches: list[dict]) -> dict:
    """The JSON-patch subset skaffold profiles use here (add, replace, remove)."""
    doc = copy.deepcopy(doc)
    for p in patches:
        *parents, last = [int(s) if s.isdigit() else s for s in p["path"].strip("/").split("/")]
        node = doc
        for part in parents:
            node = node[part]
        if p["op"] == "add" and isinstance(node, list):  # insert before an index, or append (-)
            node.insert(len(node) if last == "-" else last, p["value"])
        elif p["op"] in ("add", "replace"):
            if p["op"] == "replace":
                node[last]  # must exist
            node[last] = p["value"]
        elif p["op"] == "remove":
            del node[last]
        else:
            raise AssertionError(f"unsupported patch op {p['op']}")
    return doc


def effective_configs() -> dict[str, dict]:
    base = {key: v for key, v in CONFIG.items() if key != "profiles"}
    out = {"<default>": base}
    for prof in CONFIG.get("profiles", []):
        out[prof["name"]] = apply_patches(base, prof.get("patches", []))
    return out


def sanitized(image: str) -> str:
    """An artifact's name in skaffold's template variables (IMAGE_REPO_<name>, IMAGE_TAG_<name>)."""
    return re.sub(r"[^A-Za-z0-9]", "_", image)


def release_values(cfg: dict, rel: dict) -> dict:
    """The values skaffold deploys a release with: its valuesFiles, then its setValueTemplates with
    each built artifact's repository (`registry.example/<image>`) and tag (`abc123`)."""
    values: dict = {}
    for vf in rel["valuesFiles"]:
        values.update(k.load_values(k.REPO_ROOT / vf))
    built = {}
    for art in cfg["build"]["artifacts"]:
        built[f"IMAGE_REPO_{sanitized(art['image'])}"] = f"registry.example/{art['image']}"
        built[f"IMAGE_TAG_{sanitized(art['image'])}"] = "abc123"
    for key, template in rel.get("setValueTemplates", {}).items():
        var = re.fullmatch(r"\{\{\.(\w+)\}\}", template)
        assert var and var.group(1) in built, f"{key}: {template} names no artifact of the build"
        *parents, last = key.split(".")
        node = values
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = built[var.group(1)]
    return values


def test_skaffold_yaml_matches_schema():
    assert CONFIG["apiVersion"] == "skaffold/v4beta14"
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator().iter_errors(CONFIG)]
    assert not errors, errors


def test_schema_check_catches_a_typo():
    bad = copy.deepcopy(CONFIG)
    bad["deploy"]["helm"]["releases"][0]["valueFiles"] = []
    assert list(validator().iter_errors(bad))


def test_profiles():
    assert {p["name"] for p in CONFIG["profiles"]} == {"cpu", "gpu", "dev"}


@pytest.mark.parametrize("name, cfg", effective_configs().items())
def test_each_profile_is_valid_and_its_paths_exist(name, cfg):
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator().iter_errors(cfg)]
    assert not errors, errors
    for art in cfg["build"]["artifacts"]:
        ctx = k.REPO_ROOT / art.get("context", ".")
        assert (ctx / art["docker"]["dockerfile"]).is_file()
        for rule in art.get("sync", {}).get("manual", []):
            assert list(k.REPO_ROOT.glob(rule["src"])), f"sync src {rule['src']} matches nothing"
    for rel in cfg["deploy"]["helm"]["releases"]:
        assert (k.REPO_ROOT / rel["chartPath"] / "Chart.yaml").is_file()
        for vf in rel["valuesFiles"]:
            assert (k.REPO_ROOT / vf).is_file(), vf
        # skaffold's values render too (images from the build, templates resolved).
        objs = k.render_objects(release_values(cfg, rel), name=rel["name"])
        names = {(o["kind"], o["metadata"].get("name")) for o in objs}
        for pf in cfg.get("portForward", []):
            assert (pf["resourceType"].capitalize(), pf["resourceName"]) in names, pf


def test_gpu_profile_builds_the_gpu_image_for_the_ray_pods_only():
    """The Ray pods run the GPU build; MLflow, the submitter and `helm test` the CPU build, which
    needs no CUDA (the GPU image is many GB more to pull on every node that runs them)."""
    gpu = effective_configs()["gpu"]
    cpu, gpu_art = gpu["build"]["artifacts"]
    assert "buildArgs" not in cpu["docker"]
    args = gpu_art["docker"]["buildArgs"]
    assert args["BASE_IMAGE"] == "rayproject/ray:2.60.0-py311-gpu" and args["EXTRAS"] == "bert"
    rel = gpu["deploy"]["helm"]["releases"][0]
    objs = k.render_objects(release_values(gpu, rel), name=rel["name"])
    images = {(k.obj_id(o), c["name"]): c["image"] for o in objs for _, pod in k.pod_specs(o)
              for c in k.containers(pod)}
    ray = {key: image for key, image in images.items() if key[1] in ("ray-head", "ray-worker")}
    assert ray and set(ray.values()) == {f"registry.example/{gpu_art['image']}:abc123"}
    rest = {key: image for key, image in images.items() if key not in ray}
    assert {c for _, c in rest} >= {"mlflow", "ray-job-submitter", "check"}
    assert set(rest.values()) == {f"registry.example/{cpu['image']}:abc123"}, rest


def test_dev_sync_can_write_into_every_container_of_the_synced_image():
    """skaffold syncs into every running container of the image it built, and one failed copy
    fails the whole sync ("Skipping deploy due to sync error"): in each, the sync destination is
    writable (an emptyDir over it, or a writable root filesystem). The dev preset as skaffold
    deploys it, then with a RayJob submitted to its cluster (the submitter pod) and the autoscaler."""
    dev = effective_configs()["dev"]
    rel = dev["deploy"]["helm"]["releases"][0]
    [art] = dev["build"]["artifacts"]
    synced = f"registry.example/{art['image']}:abc123"
    [dest] = {r["dest"] for r in art["sync"]["manual"]}
    base = release_values(dev, rel)
    with_job = {**base, "job": {"enabled": True, "clusterSelector": {"ray.io/cluster": "ray-training"}},
                "autoscaling": {"enabled": True}}
    for values, expected in ((base, {"ray-head", "ray-worker", "mlflow", "check"}),
                             (with_job, {"ray-head", "ray-worker", "mlflow", "check", "ray-job-submitter"})):
        objs = k.render_objects(values, name=rel["name"])
        targets = [(k.obj_id(o), pod, c) for o in objs for _, pod in k.pod_specs(o)
                   for c in pod["containers"] if c["image"] == synced]
        assert {c["name"] for _, _, c in targets} == expected
        for where, pod, c in targets:
            empty_dirs = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
            covered = any(m["name"] in empty_dirs and (dest == m["mountPath"] or dest.startswith(m["mountPath"] + "/"))
                          for m in c.get("volumeMounts", []))
            assert covered or c["securityContext"]["readOnlyRootFilesystem"] is False, (where, c["name"])
    # KubeRay adds the autoscaler beside the head, with the head's image.
    cluster = k.one(k.render_objects(with_job, name=rel["name"]), "RayCluster")
    assert cluster["spec"]["autoscalerOptions"]["securityContext"]["readOnlyRootFilesystem"] is False


def test_dev_cluster_takes_a_rebuilt_image():
    """`skaffold dev` redeploys with the new image's tag; KubeRay's default upgradeStrategy (None)
    would leave the running pods on the old one."""
    dev = effective_configs()["dev"]
    rel = dev["deploy"]["helm"]["releases"][0]
    objs = k.render_objects(release_values(dev, rel), name=rel["name"])
    cluster = k.one(objs, "RayCluster")
    assert cluster["spec"]["upgradeStrategy"] == {"type": "Recreate"}
    assert not k.validation_errors(cluster)
    # Not in a RayJob's own cluster, where KubeRay rejects it.
    objs = k.render_objects({**release_values(dev, rel), "job": {"enabled": True}}, name=rel["name"])
    assert "upgradeStrategy" not in k.one(objs, "RayJob")["spec"]["rayClusterSpec"]
    assert not [e for o in objs for e in k.validation_errors(o)]


def test_dev_profile_syncs_into_the_image_app_dir():
    from dockerfile_parse import DockerfileParser

    df = DockerfileParser(path=str(k.REPO_ROOT / "Dockerfile"))
    rules = effective_configs()["dev"]["build"]["artifacts"][0]["sync"]["manual"]
    assert {r["dest"] for r in rules} == {df.envs["PYTHONPATH"]}
    assert {r["src"] for r in rules} == {"training/**"}  # the config tree is training/conf/

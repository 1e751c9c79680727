"""skaffold.yaml (and each profile, patched) against the v4beta14 schema; its paths exist."""

from __future__ import annotations

import copy
import json

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
        if p["op"] in ("add", "replace"):
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
        # skaffold's values render too (image from the build, tag placeholder resolved).
        values = {}
        for vf in rel["valuesFiles"]:
            values.update(k.load_values(k.REPO_ROOT / vf))
        values.setdefault("image", {}).update(repository="registry.example/ray-training", tag="abc123")
        objs = k.render_objects(values, name=rel["name"])
        names = {(o["kind"], o["metadata"].get("name")) for o in objs}
        for pf in cfg.get("portForward", []):
            assert (pf["resourceType"].capitalize(), pf["resourceName"]) in names, pf


def test_gpu_profile_builds_the_gpu_image():
    gpu = effective_configs()["gpu"]
    args = gpu["build"]["artifacts"][0]["docker"]["buildArgs"]
    assert args["BASE_IMAGE"] == "rayproject/ray:2.60.0-py311-gpu" and args["EXTRAS"] == "bert"


def test_dev_profile_syncs_into_the_image_app_dir():
    from dockerfile_parse import DockerfileParser

    df = DockerfileParser(path=str(k.REPO_ROOT / "Dockerfile"))
    rules = effective_configs()["dev"]["build"]["artifacts"][0]["sync"]["manual"]
    assert {r["dest"] for r in rules} == {df.envs["PYTHONPATH"]}
    assert {r["src"] for r in rules} == {"training/**"}  # the config tree is training/conf/

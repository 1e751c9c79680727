"""manifests/ is the chart rendered per preset, valid, and ready for `kubectl create -f`."""

from __future__ import annotations

import importlib.util

import pytest
import yaml

import k8s_support as k

PRESETS = sorted(k.PRESETS_DIR.glob("*.yaml"))


def _generator():
    spec = importlib.util.spec_from_file_location("render_manifests", k.REPO_ROOT / "scripts" / "render_manifests.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_one_manifest_per_preset():
    assert {"xgboost-ensemble-cpu.yaml", "tune-cpu.yaml", "bert-gpu.yaml"} <= {p.name for p in PRESETS}
    assert sorted(p.name for p in k.MANIFESTS_DIR.glob("*.yaml")) == [p.name for p in PRESETS]


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_manifest_matches_the_chart(preset):
    committed = (k.MANIFESTS_DIR / preset.name).read_text()
    assert committed == _generator().render_preset(preset), \
        f"manifests/{preset.name} drifted from charts/ray-training: run `make manifests` and commit"


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_manifest_objects_are_valid(preset):
    objs = [d for d in yaml.safe_load_all((k.MANIFESTS_DIR / preset.name).read_text()) if d]
    errors = [e for o in objs for v in k.KUBE_VERSIONS for e in k.validation_errors(o, v)]
    assert not errors, "\n".join(dict.fromkeys(errors))
    for o in objs:
        assert "namespace" not in o["metadata"], "kubectl -n picks the namespace"
        assert not any(a.startswith("helm.sh/hook") for a in o["metadata"].get("annotations", {}))
    jobs = k.by_kind(objs, "RayJob")
    for job in jobs:  # each `kubectl create` is a new run, and KubeRay makes the token
        assert job["metadata"]["generateName"] and "name" not in job["metadata"]
        assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "rayjob"
        assert job["spec"]["rayClusterSpec"]["authOptions"] == {"mode": "token"}
    assert not k.by_kind(objs, "Secret")


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_header_commands_match_the_file(preset):
    """The `-l app.kubernetes.io/component=rayjob` command for next runs only where there is a
    RayJob to select; a file without one (dev-cluster) says how its cluster is used instead."""
    text = (k.MANIFESTS_DIR / preset.name).read_text()
    header = text[:text.index("\n---\n")]
    has_job = bool(k.by_kind([d for d in yaml.safe_load_all(text) if d], "RayJob"))
    assert ("component=rayjob" in header) == has_job, header
    if not has_job:
        assert f"# Create:     kubectl create -f manifests/{preset.name}" in header
        assert "ray job submit" in header

"""Every preset's RayJob entrypoint is a config the training package accepts.

The manifests in manifests/ are the chart rendered per preset (a drift test in tests/k8s keeps
them equal); here each entrypoint's Hydra overrides go through the same `config.load` a run
uses, so a preset can never ship a workload, data option or key the package rejects.
"""

import shlex

import pytest
import yaml

from tests.conftest import REPO
from training import config

MANIFESTS = sorted((REPO / "manifests").glob("*.yaml"))
# Presets that run no job: a long-lived RayCluster that users submit to themselves.
CLUSTER_ONLY = {"dev-cluster"}


def _docs(path):
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _entrypoints(path):
    return [doc["spec"]["entrypoint"] for doc in _docs(path) if doc.get("kind") == "RayJob"]


JOB_MANIFESTS = [m for m in MANIFESTS if m.stem not in CLUSTER_ONLY]


@pytest.mark.parametrize("manifest", JOB_MANIFESTS, ids=[m.stem for m in JOB_MANIFESTS])
def test_preset_entrypoint_composes(manifest, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")  # the chart sets it in the pod env
    entrypoints = _entrypoints(manifest)
    assert entrypoints, f"{manifest.name} has no RayJob"
    for entrypoint in entrypoints:
        argv = shlex.split(entrypoint)
        assert argv[:3] == ["python", "-m", "training"], entrypoint
        cfg = config.load(argv[3:])
        assert cfg.cluster.mode.value == "address" and cfg.tracking.backend.value == "server"


def test_cluster_only_presets_render_a_raycluster_and_no_job():
    assert CLUSTER_ONLY <= {m.stem for m in MANIFESTS}
    for stem in CLUSTER_ONLY:
        kinds = [doc["kind"] for doc in _docs(REPO / "manifests" / f"{stem}.yaml")]
        assert "RayCluster" in kinds and "RayJob" not in kinds and "RayCronJob" not in kinds, kinds

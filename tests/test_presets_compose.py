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


def _entrypoints(path):
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == "RayJob":
            yield doc["spec"]["entrypoint"]


@pytest.mark.parametrize("manifest", MANIFESTS, ids=[m.stem for m in MANIFESTS])
def test_preset_entrypoint_composes(manifest, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")  # the chart sets it in the pod env
    entrypoints = list(_entrypoints(manifest))
    if not entrypoints:
        pytest.skip(f"{manifest.name} has no RayJob (a long-lived RayCluster only)")
    for entrypoint in entrypoints:
        argv = shlex.split(entrypoint)
        assert argv[:3] == ["python", "-m", "training"], entrypoint
        cfg = config.load(argv[3:])
        assert cfg.cluster.mode.value == "address" and cfg.tracking.backend.value == "server"

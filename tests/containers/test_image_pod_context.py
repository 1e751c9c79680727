"""The image's own entrypoint (`python -m training`, a local run) inside the rendered head pod's spec:
read-only root filesystem, uid 1000, capabilities dropped, only the pod's volumes writable, the pod's
env. Nothing may need a writable home or root filesystem: without the chart's HOME on a volume, Ray
fails writing ~/.ray (`OSError: [Errno 30] Read-only file system: '/home/ray/.ray'`)."""

from __future__ import annotations

from pathlib import Path

import pytest

import k8s_support as k
from pods import Release, wait

pytestmark = pytest.mark.slow

VALUES = Path(__file__).resolve().parent / "pods-values.yaml"


def test_a_local_run_in_the_head_pod_spec_registers_a_model(image, tmp_path):
    objs = k.render_objects(k.load_values(VALUES))
    pod = k.one(objs, "RayJob")["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    rel = Release(objs, tmp_path)
    try:
        env = rel.env_of(container)
        env.pop("MLFLOW_TRACKING_URI")  # a local run: MLflow's SQLite store in the working directory
        run = rel.run_pod("local", {**pod, "restartPolicy": "Never"},
                          ["python", "-m", "training", "workload=xgboost", "data.synthetic.rows=2000",
                           "workload.members.0.num_boost_round=5"], env, rel.address())
        wait(lambda: not rel.running(run), 600, "the local run", rel)
        out = rel.logs(run)
        assert "Model version: models:/retail-demand-xgboost/1" in out, out[-3000:]
        assert "Read-only file system" not in out
        assert rel.diff(run) == []
    finally:
        rel.stop()

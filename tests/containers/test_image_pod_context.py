"""The image's own entrypoint (`python -m training`, a local run) inside the rendered head pod's spec:
read-only root filesystem, uid 1000, capabilities dropped, only the pod's volumes writable, the pod's
env. Nothing may need a writable home or root filesystem: without the chart's HOME on a volume, Ray
fails writing ~/.ray (`OSError: [Errno 30] Read-only file system: '/home/ray/.ray'`). The run
succeeding under that read-only root is what shows it writes nothing outside the pod's volumes.

In the same spec: the image carries current bytecode for every source file of its code (no process
of a pod could write it there, and each would compile training/ again on every start)."""

from __future__ import annotations

from pathlib import Path

import pytest

import k8s_support as k
from pods import Release, wait

pytestmark = pytest.mark.slow

VALUES = Path(__file__).resolve().parent / "pods-values.yaml"
# Every source file under the image's code (its PYTHONPATH) has a timestamp .pyc matching it.
BYTECODE = """
import importlib.util, pathlib, struct, sys
sources = sorted(pathlib.Path("/home/ray/app/training").rglob("*.py"))
stale = []
for src in sources:
    pyc, st = pathlib.Path(importlib.util.cache_from_source(str(src))), src.stat()
    header = pyc.read_bytes()[4:16] if pyc.is_file() else b""
    if header != struct.pack("<III", 0, int(st.st_mtime) & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF):
        stale.append(str(src))
print(len(sources), "sources, without current bytecode:", stale)
sys.exit(1 if stale or not sources else 0)
"""


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
    finally:
        rel.stop()


def test_the_image_carries_current_bytecode_of_its_code(image, tmp_path):
    objs = k.render_objects(k.load_values(VALUES))
    pod = k.one(objs, "RayJob")["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    rel = Release(objs, tmp_path)
    try:
        check = rel.run_pod("bytecode", {**pod, "restartPolicy": "Never"}, ["python", "-c", BYTECODE],
                            rel.env_of(pod["containers"][0]), rel.address())
        wait(lambda: not rel.running(check), 120, "the bytecode check", rel)
        assert rel.exit_code(check) == 0, rel.logs(check)[-3000:]
    finally:
        rel.stop()

"""Driver failure and RayJob retry: a killed driver's run resumes from its checkpoints when rerun
with the same run_name; a new run name never picks them up.

The driver is a real `python -m training` process with its own local Ray, killed with SIGKILL
(with its Ray processes, as when a RayJob's submitter pod dies) once Ray Train has registered a
member's first checkpoint.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, checkpoint_registered, registered_versions, run_cli

pytestmark = pytest.mark.slow

ARGS = ["workload=xgboost", "data.synthetic.rows=20000", "workload.members.0.num_boost_round=400",
        "workload.checkpoint_every=50", "cluster.num_workers=1", "run_name=retry-me"]


def _kill_after_first_registered_checkpoint(cwd):
    proc = subprocess.Popen([sys.executable, "-m", "training", *ARGS], cwd=cwd, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    run_dir = cwd / "ray_results" / "retry-me-xgboost"
    deadline = time.monotonic() + 240
    while not checkpoint_registered(run_dir):
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


def test_rerun_with_the_same_run_name_resumes_and_registers_once(tmp_path):
    _kill_after_first_registered_checkpoint(tmp_path)
    assert registered_versions(tmp_path) == []  # the killed run registered nothing
    proc = run_cli(ARGS, tmp_path, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[xgboost] resuming from checkpoint at round" in proc.stdout
    assert "[xgboost] round 400/400" in proc.stdout
    assert [int(v.version) for v in registered_versions(tmp_path)] == [1]
    # A new run name starts from round 0 even though retry-me's checkpoints are in the same storage.
    other = run_cli([a.replace("run_name=retry-me", "run_name=fresh") for a in ARGS], tmp_path, timeout=400)
    assert other.returncode == 0, other.stderr[-3000:]
    assert "resuming from checkpoint" not in other.stdout

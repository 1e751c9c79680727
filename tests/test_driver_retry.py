"""Driver failure and RayJob retry: a killed driver's run resumes from its checkpoints when rerun
with the same run_name. (That a new run name never picks up another run's checkpoints in the same
storage is shown by the fault drills of tests/test_fault_tolerance.py: the drilled run, under a
new name, boosts from round 0 past the drill's round.)

The driver is a real `python -m training` process with its own local Ray, killed with SIGKILL
(with its Ray processes, as when a RayJob's submitter pod dies) once Ray Train has registered a
member's first checkpoint.
"""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, checkpoint_registered, registered_versions, run_cli

pytestmark = pytest.mark.slow

ARGS = ["workload=xgboost", "data.synthetic.rows=20000", "workload.members.0.num_boost_round=200",
        "workload.checkpoint_every=50", "cluster.num_workers=1", "run_name=retry-me"]


def _driver(cwd, args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "training", *args], cwd=cwd, start_new_session=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), **kw)


def _curves(cwd) -> dict:
    """The member's child runs (run id -> its valid_rmse_curve points), read from the run's store."""
    from mlflow.tracking import MlflowClient

    db = cwd / "mlruns" / "mlflow.db"
    if not db.exists():
        return {}
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("ray-training")
    runs = client.search_runs([exp.experiment_id], "attributes.run_name = 'xgboost'") if exp else []
    return {r.info.run_id: client.get_metric_history(r.info.run_id, "valid_rmse_curve") for r in runs}


def _kill_after_first_registered_checkpoint(cwd) -> list:
    """The curve points MLflow holds while the driver is mid-training (its processes stopped with
    SIGSTOP the moment the first checkpoint is registered, read, then killed)."""
    proc = _driver(cwd, ARGS, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = cwd / "ray_results" / "retry-me-xgboost"
    deadline = time.monotonic() + 240
    while not checkpoint_registered(run_dir):
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGSTOP)
    try:
        [live] = _curves(cwd).values()  # rank 0 writes its points before each report
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    assert 50 <= len(live) < 200, len(live)
    return live


def test_rerun_with_the_same_run_name_resumes_and_registers_once(tmp_path):
    live = _kill_after_first_registered_checkpoint(tmp_path)
    assert registered_versions(tmp_path) == []  # the killed run registered nothing
    # The validation curve logged while the killed driver trained outlives it.
    [kept] = _curves(tmp_path).values()
    assert [m.step for m in live] == list(range(1, len(live) + 1))
    assert {(m.step, m.value) for m in live} <= {(m.step, m.value) for m in kept}
    proc = run_cli(ARGS, tmp_path, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = re.search(r"\[xgboost\] resuming from checkpoint at round (\d+)", proc.stdout)
    assert resumed, proc.stdout[-3000:]
    # From a checkpoint the controller had registered: round 50 or a later multiple of 50.
    assert int(resumed.group(1)) >= 50 and int(resumed.group(1)) % 50 == 0
    assert "[xgboost] round 200/200" in proc.stdout
    assert [int(v.version) for v in registered_versions(tmp_path)] == [1]
    # The rerun's own child run holds the whole curve, every round once: the resumed rounds
    # logged live, the earlier ones added by the driver at the end.
    rerun = [c for c in _curves(tmp_path).values() if len(c) == 200]
    assert len(rerun) == 1 and sorted(m.step for m in rerun[0]) == list(range(1, 201))
    # The killed attempt's runs do not stay RUNNING for ever: they end KILLED, and its parent
    # names the run that continued it.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    every = client.search_runs([client.get_experiment_by_name("ray-training").experiment_id])
    parents = {r.info.status: r for r in every if r.info.run_name == "retry-me"}
    assert set(parents) == {"KILLED", "FINISHED"}, [(r.info.run_name, r.info.status) for r in every]
    assert parents["KILLED"].data.tags["continued_by"] == parents["FINISHED"].info.run_id
    assert not [r.info.run_name for r in every if r.info.status == "RUNNING"]
    # Once more, finished now (a RayJob retried after the run had registered, a command run
    # twice): every member is at its last round, so it would register the same model again.
    again = run_cli(ARGS, tmp_path, timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    assert re.search(r"\[training\] run retry-me finished before with this config and registered "
                     r"models:/[\w-]+/1: nothing to train", again.stdout), again.stdout[-3000:]
    assert "[xgboost] round" not in again.stdout and [int(v.version) for v in registered_versions(tmp_path)] == [1]
    # The same name with other rows: its checkpoints hold a model of the first rows, which a
    # rerun would carry over and register as this config's.
    other = run_cli([*ARGS, "data.split_seed=1"], tmp_path, timeout=400)
    assert other.returncode == 2, other.stderr[-3000:]
    assert other.stderr.strip().splitlines()[-1] == (
        "error: run_name=retry-me was run before with another data.split_seed: a rerun continues that run's "
        "checkpoints, trained on its data and settings; give this config a new run_name")
    assert [int(v.version) for v in registered_versions(tmp_path)] == [1]
    # Fewer rounds: the finished run's checkpoints hold 200, which a rerun would register as 100.
    shorter = run_cli([*ARGS, "workload.members.0.num_boost_round=100"], tmp_path, timeout=400)
    assert shorter.returncode == 2, shorter.stderr[-3000:]
    assert shorter.stderr.strip().splitlines()[-1] == (
        "error: run_name=retry-me finished with more rounds for xgboost (200, now 100): its checkpoints hold the "
        "longer models, which a rerun would register as they are; a rerun may add rounds, not remove them: give "
        "this config a new run_name")
    assert [int(v.version) for v in registered_versions(tmp_path)] == [1]

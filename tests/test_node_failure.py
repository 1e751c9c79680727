"""Node failure on a real multi-node Ray cluster on this machine (a head and 1-CPU worker nodes,
each its own `ray start` process group, token auth on as in the chart).

A worker node is killed (SIGKILL to its whole process group, as when a pod's node disappears)
after Ray Train has registered the run's first checkpoint. With capacity back, the run resumes from that checkpoint and
finishes; with no capacity, it fails with a clear message after the configured retries.
"""

import subprocess
import sys

import pytest

from tests.conftest import REPO, checkpoint_registered, registered_versions
from tests.ray_cluster import RayNodes, wait_for

pytestmark = pytest.mark.slow
NAMES = iter("cdefgh")  # replacement nodes' names, as a new pod gets a new name
# Rounds enough that the run is still training when the lost node's workers die. The node is
# killed at the first registered checkpoint (round 30); with 300 rounds of this small data, a
# run on an idle machine once finished all of them before the loss took effect.
ROUNDS = 1000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One cluster for both drills (starting a head and its nodes is most of a drill's set-up).
    The head holds no CPUs: training workers and data tasks run on the worker nodes only."""
    c = RayNodes(tmp_path_factory.mktemp("nodes"), pythonpath=str(REPO))
    try:
        c.add_node("node-a")
        c.add_node("node-b")
        yield c
    finally:
        c.stop()


def _two_worker_nodes(cluster: RayNodes) -> str:
    """Give the cluster a second worker node again if a drill before took it away; return the
    node to lose: the newest one other than node-a."""
    if len(cluster.nodes) < 2:
        cluster.add_node(f"node-{next(NAMES)}")
    return [name for name in cluster.nodes if name != "node-a"][-1]


def _driver(cluster: RayNodes, cwd, run_name: str, *extra: str, env=None) -> subprocess.Popen:
    args = ["workload=xgboost", "data.synthetic.rows=8000", f"workload.members.0.num_boost_round={ROUNDS}",
            "workload.checkpoint_every=30", "cluster=address", f"cluster.address=127.0.0.1:{cluster.gcs}",
            "cluster.num_workers=2", "cluster.resource_wait_s=60", f"run_name={run_name}", *extra]
    out = open(cwd / f"driver-{run_name}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "training", *args], cwd=cwd, env=env or cluster.env,
                            stdout=out, stderr=subprocess.STDOUT, text=True)


def _wait_for_checkpoint(cwd, run_name: str, driver: subprocess.Popen) -> None:
    run_dir = cwd / "ray_results" / f"{run_name}-xgboost"
    wait_for(lambda: driver.poll() is not None or checkpoint_registered(run_dir), 300,
             "the first registered checkpoint", cwd)
    assert driver.poll() is None, (cwd / f"driver-{run_name}.log").read_text()[-3000:]


def test_run_resumes_when_capacity_returns(cluster, tmp_path):
    victim = _two_worker_nodes(cluster)
    driver = _driver(cluster, tmp_path, "node-loss", "cluster.max_failures=3")
    _wait_for_checkpoint(tmp_path, "node-loss", driver)
    cluster.kill_node(victim)
    # The replacement node (a new pod), as soon as the old one is gone. It has a CPU to spare: blocks of the materialized dataset
    # that lived on the lost node are rebuilt by Ray tasks, which need a CPU the training workers
    # do not hold (with every CPU reserved for training, the restart waits for them forever).
    cluster.add_node(f"node-{next(NAMES)}", cpus=2)
    rc = driver.wait(600)
    log = (tmp_path / "driver-node-loss.log").read_text()
    assert rc == 0, log[-4000:]
    assert "[xgboost] resuming from checkpoint at round" in log
    assert f"[xgboost] round {ROUNDS}/{ROUNDS}" in log
    assert " got rank " not in log  # each worker joins XGBoost's collective without a line
    assert [int(v.version) for v in registered_versions(tmp_path)] == [1]


def test_run_fails_clearly_when_capacity_never_returns(cluster, tmp_path):
    victim = _two_worker_nodes(cluster)
    # Each restart waits this long for its workers before counting as a failed attempt.
    env = dict(cluster.env, RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S="10")
    driver = _driver(cluster, tmp_path, "node-gone", "cluster.max_failures=1", env=env)
    _wait_for_checkpoint(tmp_path, "node-gone", driver)
    cluster.kill_node(victim)
    rc = driver.wait(600)
    log = (tmp_path / "driver-node-gone.log").read_text()
    assert rc == 1, log[-4000:]
    assert "error: MemberTrainingError: member 'xgboost' failed after 1 retries" in log
    assert registered_versions(tmp_path) == []

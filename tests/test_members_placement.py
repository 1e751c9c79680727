"""How members are placed on the cluster: queued, or started together sharing the CPUs.

Pure scheduling arithmetic (no Ray); tests/test_workloads.py checks on a real Ray that the
members of a shared placement really train at the same time."""

import pytest

from training.config import ClusterConfig, GBDTWorkloadConfig, MemberConfig
from training.workloads.members import placement


def _workload(n, **kw):
    return GBDTWorkloadConfig(name="ensemble", members=[MemberConfig(name=f"m{i}") for i in range(n)], **kw)


def test_members_that_fit_train_side_by_side_with_their_full_request():
    plan = placement(_workload(2), ClusterConfig(num_workers=1, cpus_per_worker=1), fit=2, members=2)
    assert (plan.at_once, plan.cpus_per_worker, plan.threads, plan.shared) == (2, 1, 1, False)


def test_more_members_than_fit_share_the_cpus_and_start_together():
    """3 one-CPU members on 2 CPUs: each asks for 0.66 CPU, the requests sum within the cluster."""
    plan = placement(_workload(3), ClusterConfig(num_workers=1, cpus_per_worker=1), fit=2, members=3)
    assert plan.shared and plan.at_once == 3 and plan.threads == 1
    assert plan.cpus_per_worker == pytest.approx(0.66)
    assert 3 * plan.cpus_per_worker <= 2
    assert "all 3 at once sharing the CPUs" in plan.describe(ClusterConfig(num_workers=1), 3)


def test_threads_follow_the_share():
    """4-CPU workers, one member fits: three members get 1.33 CPU and 1 thread each, so the
    OpenMP threads of all members together never exceed the cores."""
    plan = placement(_workload(3), ClusterConfig(num_workers=2, cpus_per_worker=4), fit=1, members=3)
    assert plan.cpus_per_worker == pytest.approx(1.33) and plan.threads == 1
    plan = placement(_workload(2), ClusterConfig(num_workers=1, cpus_per_worker=8), fit=1, members=2)
    assert plan.cpus_per_worker == 4 and plan.threads == 4


@pytest.mark.parametrize("workload, cluster, expected", [
    # An explicit limit is obeyed as given (e.g. 1 = strictly one after another).
    (_workload(3, max_concurrent_members=1), ClusterConfig(num_workers=1), (1, 1, False)),
    (_workload(3, max_concurrent_members=2), ClusterConfig(num_workers=1), (2, 1, False)),
    # Sharing turned off: the third member waits for a free slot.
    (_workload(3, share_cpus=False), ClusterConfig(num_workers=1), (2, 1, False)),
    # GPU members never share: a GPU is not time-sliced between trainers.
    (_workload(3), ClusterConfig(num_workers=1, gpus_per_worker=1), (2, 1, False)),
])
def test_queueing_instead_of_sharing(workload, cluster, expected):
    plan = placement(workload, cluster, fit=2, members=3)
    assert (plan.at_once, plan.cpus_per_worker, plan.shared) == expected

"""A Ray Train worker SIGKILLed mid-training (the fault drill) on the session's real Ray cluster.

The run must resume from its last checkpoint, redo at most one checkpoint interval, finish as
well as an uninterrupted run, and register exactly one model version. The same drill with no
retries left fails clearly and registers nothing (tests/test_observability.py, which also checks
what that failed run leaves in MLflow).
"""

import time

import pytest

from training.gbdt import workload as gbdt
from tests.conftest import SMALL, load_config, registered_versions, small_rounds

pytestmark = pytest.mark.slow


def _worker_output(capfd, *needles: str, timeout_s: float = 20.0) -> str:
    """Workers' lines reach the driver asynchronously, and Ray holds lines that two workers
    print alike (the resume message) for its de-duplication window (5 s): read until they arrive."""
    out, deadline = "", time.monotonic() + timeout_s
    while True:
        out += capfd.readouterr().out
        if all(n in out for n in needles) or time.monotonic() > deadline:
            return out
        time.sleep(0.5)


def _cfg(workload, *extra):
    return load_config(*SMALL, *small_rounds(workload, 60), "workload.checkpoint_every=20", "cluster.num_workers=2",
                       *extra)


@pytest.mark.parametrize("workload", ["xgboost", "lightgbm"])
def test_killed_worker_resumes_from_its_last_checkpoint(ray_session, workdir, capfd, workload):
    """Also each single-model workload end to end on 2 workers (the clean run), and a second
    invocation in the same directory: its own run name, the next version of the same model."""
    clean = gbdt.run(_cfg(workload))
    assert list(clean.metrics) == [workload] and clean.metrics[workload]["r2"] > 0.4
    capfd.readouterr()
    drilled = gbdt.run(_cfg(workload, "workload.kill_worker_at_round=30"))
    out = _worker_output(capfd, f"[{workload}] resuming from checkpoint", f"[{workload}] round 60/60")
    # The drill fires at round 30: the drilled run, under a new name, started from round 0 and did
    # not pick up the clean run's checkpoints in the same storage.
    assert f"[{workload}] fault drill: killing worker 1" in out
    # Resumed from round 20: rounds 21-30 redone, no more (one checkpoint interval).
    assert f"[{workload}] resuming from checkpoint at round 20" in out
    assert f"[{workload}] round 60/60" in out
    # The workers join XGBoost's collective or LightGBM's network without a line each.
    for noise in (" got rank ", "Connected to rank", "Trying to bind port"):
        assert noise not in out, noise
    rmse_clean, rmse_drilled = clean.metrics[workload]["rmse"], drilled.metrics[workload]["rmse"]
    assert abs(rmse_drilled - rmse_clean) / rmse_clean < 0.02, (rmse_clean, rmse_drilled)
    assert drilled.run_name != clean.run_name
    model = f"retail-demand-{workload}"
    assert (clean.model_uri, drilled.model_uri) == (f"models:/{model}/1", f"models:/{model}/2")
    assert [v.name for v in registered_versions(workdir)] == [model, model]

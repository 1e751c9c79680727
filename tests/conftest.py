"""Shared fixtures: one real Ray per test worker (2 CPUs), up while the modules that use it run;
small configs; a tmp working dir."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, List

import pytest

REPO = Path(__file__).resolve().parents[1]
# Tests assert on lines each Ray worker prints; Ray's log de-duplication holds back lines that
# several workers print alike (a resumed run's "resuming from checkpoint") and may drop them from
# a test's captured output. Set before any test module imports Ray.
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Small but real: enough rows for the split, the encoders and a learnable signal.
SMALL = ["data.synthetic.rows=6000", "data.synthetic.partitions=3", "data.synthetic.users=500",
         "workload.checkpoint_every=10"]

# The modules with a test that uses `ray_session` (set at collection, read by `_no_idle_session_ray`).
RAY_MODULES = pytest.StashKey[set]()


def pytest_collection_modifyitems(config, items):
    """The container tests run last: their image builds in the background while the rest of the
    suite runs (the sort is stable: every other test keeps its order). `make test` runs them in a
    pytest of their own after the others, with nothing beside them (see the Makefile).

    Under pytest-xdist (`make test` runs two workers, `--dist loadfile`) a test module is one unit
    of work, so that its module-scoped fixtures (clusters, servers, data) are made once. The
    workers take modules longest first (tests/module_seconds.txt, measured): the run then ends on
    short modules on both workers, not on one long module while the other worker waits.

    The modules that use the session's Ray come first, so that each worker can stop that Ray
    when it moves on to the modules that start Rays of their own (`_no_idle_session_ray`)."""
    from tests.module_seconds import load

    seconds = load()
    uses_ray = config.stash.setdefault(RAY_MODULES, set())
    uses_ray.update(_module(item) for item in items if "ray_session" in getattr(item, "fixturenames", ()))
    items.sort(key=lambda item: (item.nodeid.startswith("tests/containers/"), _module(item) not in uses_ray,
                                 -seconds.get(_module(item), 0.0)))


def _module(item) -> str:
    return item.nodeid.split("::", 1)[0]


@pytest.fixture(scope="module")
def s3_endpoint():
    """A real S3 API on 127.0.0.1 for the module (tests/s3_server.py): `127.0.0.1:<port>`."""
    from tests import s3_server

    with s3_server.serve() as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def ray_session():
    """The test session's Ray: a real local cluster with 2 CPUs, shared by every test that needs one.
    Started by the first module that asks for it; kept for the next such module."""
    import ray

    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    if not ray.is_initialized():
        from training.runtime.cluster import local_defaults, start_local

        local_defaults(2)  # what `cluster=local` sets before its Ray starts
        start_local(num_cpus=2, include_dashboard=True, log_to_driver=True, logging_level="WARNING")
    return ray


@pytest.fixture(scope="module", autouse=True)
def _no_idle_session_ray(request):
    """Stop the session's Ray before a module that has no use for it: an idle Ray still takes CPU
    (its GCS, raylet, dashboard and their timers), which the CLI runs, clusters and servers of
    the modules after it would otherwise share the cores with (docs/testing.md)."""
    if _module(request.node) not in request.config.stash.get(RAY_MODULES, set()):
        _stop_ray()


def pytest_sessionfinish(session):
    _stop_ray()


def _stop_ray() -> None:
    from training.runtime.ray_lifetime import ray_running, shutdown

    if ray_running():
        shutdown()


@pytest.fixture(scope="session")
def empty_mlflow_store(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its schema created and nothing in it, made once per session.

    A run's first use of a new store applies MLflow's schema migrations (seconds of CPU here);
    a user pays that once per store, the suite would pay it in every test."""
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}", registry_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture(autouse=True)
def _store_already_created(request):
    """Each test's tmp_path starts as a directory where MLflow has been used before: mlruns/mlflow.db
    is a copy of the empty store above, so the run under test opens it instead of migrating a new
    one. Tests marked `fresh_store` see an empty directory (tests/test_package.py checks that a
    run creates the store where there is none)."""
    if "tmp_path" not in request.fixturenames or request.node.get_closest_marker("fresh_store"):
        return
    store = request.getfixturevalue("tmp_path") / "mlruns"
    store.mkdir(exist_ok=True)
    shutil.copyfile(request.getfixturevalue("empty_mlflow_store"), store / "mlflow.db")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Runs write mlruns/, ray_results/ and data/ relative to the working directory: isolate them."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def load_config(*overrides: str):
    from training import config

    return config.load(list(overrides))


def small_rounds(workload: str, rounds: int = 30) -> List[str]:
    members = {"ensemble": 3, "xgboost": 1, "lightgbm": 1}[workload]
    return [f"workload={workload}"] + [f"workload.members.{i}.num_boost_round={rounds}" for i in range(members)]


def run_cli(args: List[str], cwd: Path, timeout: int = 300, env=None) -> subprocess.CompletedProcess:
    """`python -m training ARGS` in a fresh process, as a user would run it."""
    full_env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run([sys.executable, "-m", "training", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def ctrl_c_cli(args: List[str], cwd: Path, ready: Callable[[], bool], timeout: int = 300) -> tuple:
    """`python -m training ARGS` in a fresh process, interrupted as Ctrl-C in a terminal does it
    (SIGINT to the whole process group: the driver and the in-process Ray it started) once
    `ready()` holds. Returns (exit code, output)."""
    import signal
    import threading
    import time

    proc = subprocess.Popen([sys.executable, "-m", "training", *args], cwd=cwd, env=dict(os.environ, PYTHONPATH=str(REPO)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: List[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    reader.join(timeout=10)
    return code, "".join(lines)


def registered_versions(workdir: Path, uri: str | None = None) -> list:
    """Every model version in the run's registry (the local SQLite store by default)."""
    from mlflow.tracking import MlflowClient

    db = workdir / "mlruns" / "mlflow.db"
    if uri is None and not db.exists():
        return []
    client = MlflowClient(tracking_uri=uri or f"sqlite:///{db}", registry_uri=uri or f"sqlite:///{db}")
    return list(client.search_model_versions())


def checkpoint_registered(run_dir: Path) -> bool:
    """Ray Train has registered a checkpoint of the run stored at run_dir: its controller's snapshot
    names a latest checkpoint. A checkpoint's files alone are not enough: the controller registers
    a report when it next polls the workers, and a run killed before that restarts from the
    checkpoint before (here: from nothing)."""
    import json

    try:
        snapshot = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # not written yet, or being written
        return False
    return snapshot.get("latest_checkpoint_result") is not None


# A Ray Train fit's controller and the helper actors runtime/lean_trainer.py leaves out.
TRAIN_HELPERS = ("TrainController", "DatasetManager", "PlacementGroupCleaner")


def _actor_ids(class_name: str) -> set:
    from ray.util.state import list_actors

    from training.observability.sampler import state_address

    # The session's own Ray by address: another test process may have a Ray on this machine too.
    return {a.actor_id for a in list_actors(address=state_address(), filters=[("class_name", "=", class_name)],
                                            limit=10_000, raise_on_missing_output=False)}


def started_during(fn, *classes: str) -> tuple:
    """fn()'s result, and how many actors of each class the session's Ray started while it ran
    (read from Ray's state API)."""
    before = {c: _actor_ids(c) for c in classes}
    result = fn()
    return result, {c: len(_actor_ids(c) - before[c]) for c in classes}

"""The model server (`python -m training.ops.serve`): a real process serving versions registered in a
real MLflow store, followed through an alias move while requests keep coming.

Two XGBoost models stand in for two trained versions: one predicts 1.0 for every row, the other
2.0, so an answer says which version gave it, besides the response's version header."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import REPO
from tests.local_cluster import free_port

BODY = json.dumps({"dataframe_split": {"columns": ["x"], "data": [[0.5], [3.0]]}}).encode()


def _register(constant: float) -> str:
    """A model that predicts `constant` everywhere, registered as the next version of `m`."""
    import mlflow
    import pandas as pd
    import xgboost as xgb

    x = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
    booster = xgb.train({"base_score": constant, "max_depth": 1, "eta": 0.0}, xgb.DMatrix(x, label=[constant] * 4), 1)
    with mlflow.start_run():
        info = mlflow.xgboost.log_model(booster, name="model", registered_model_name="m", input_example=x.head(1))
    return str(info.registered_model_version)


@pytest.fixture(scope="module")
def registry(tmp_path_factory, empty_mlflow_store):
    """Two versions of model `m` in an MLflow store of this module's own, registered once: logging
    a model takes seconds of CPU, and no test here changes what the two versions are."""
    import shutil

    import mlflow
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("serve-registry")
    (root / "mlruns").mkdir()
    shutil.copyfile(empty_mlflow_store, root / "mlruns" / "mlflow.db")
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", uri)  # the servers under test inherit it
        mlflow.set_tracking_uri(uri)
        mlflow.create_experiment("serve", artifact_location=(root / "artifacts").as_uri())
        mlflow.set_experiment("serve")
        first, second = _register(1.0), _register(2.0)
        yield MlflowClient(uri), first, second


@pytest.fixture
def store(registry):
    """The module's registry with the alias `champion` on version 1, as each test starts."""
    client, first, _ = registry
    client.set_registered_model_alias("m", "champion", first)
    return registry


# The server as a shell starts it: Ctrl-C (SIGINT) at its default, not blocked. A pytest worker's
# process may have had it ignored or blocked by an earlier test's library, and a child inherits
# both across exec; Python then installs no KeyboardInterrupt handler and the interrupt is lost.
AS_FROM_A_SHELL = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                   "signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT]); "
                   "os.execv(sys.executable, [sys.executable, '-m', 'training.ops.serve', *sys.argv[1:]])")


def _server(tmp_path, *args: str, env: dict | None = None, model: str = "m") -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", AS_FROM_A_SHELL, "--model", model, "--port", str(port), *args],
                            cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO), **(env or {})),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def _ask(url: str) -> tuple[str, list]:
    request = urllib.request.Request(f"{url}/invocations", data=BODY, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:  # nosec B310: the test's own server
        return r.headers["mlflow-model-version"], json.loads(r.read())["predictions"]


def _wait_until_up(proc: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as r:  # nosec B310
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "the server did not answer /ping within 120 s"
        time.sleep(0.3)


def _dashboard_exprs() -> list:
    dash = json.loads((REPO / "charts" / "ray-training" / "dashboards" / "ray-training.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"] if "model_server_" in t["expr"]]
    assert len(exprs) >= 6
    return exprs


def _samples(text: str) -> dict:
    """Prometheus exposition text: {"name{labels}": value}."""
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


@pytest.mark.slow
def test_the_server_follows_the_alias_without_dropping_a_request(tmp_path, store):
    client, first, second = store
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    proc, url = _server(tmp_path, "--follow-s", "0.5", env={"TMPDIR": str(downloads)})
    try:
        _wait_until_up(proc, url)
        assert [p.name.split("-")[1] for p in downloads.glob("m-v*")] == [f"v{first}"]
        assert _ask(url) == (first, [1.0, 1.0])

        # Requests keep coming while the alias moves and the new version loads.
        answers, failures, stop = [], [], threading.Event()

        def keep_asking():
            while not stop.is_set():
                try:
                    answers.append(_ask(url))
                except Exception as exc:  # noqa: BLE001 (any failed request is the finding)
                    failures.append(repr(exc))

        asker = threading.Thread(target=keep_asking)
        asker.start()
        try:
            client.set_registered_model_alias("m", "champion", second)
            deadline = time.monotonic() + 60
            while not answers or answers[-1][0] != second:
                assert time.monotonic() < deadline, f"still serving {answers[-1:]} 60 s after the alias moved"
                time.sleep(0.2)
            time.sleep(1)  # and a few more answers after the switch
        finally:
            stop.set()
            asker.join(30)
        assert failures == []
        versions = [version for version, _ in answers]
        switch = versions.index(second)
        assert set(versions[:switch]) <= {first} and set(versions[switch:]) == {second}, versions
        assert {tuple(p) for v, p in answers if v == second} == {(2.0, 2.0)}
        # What Prometheus scrapes: answers per version, one switch, the version served now.
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:  # nosec B310
            metrics = _samples(r.read().decode())
        for version in (first, second):
            key = f'model_server_requests_total{{path="/invocations",status="200",version="{version}"}}'
            assert metrics[key] >= 1, metrics
        assert not [k for k in metrics if k.startswith("model_server_requests_total") and 'status="200"' not in k]
        assert metrics["model_server_switches_total"] == 1
        assert metrics['model_server_served_version{model="m"}'] == float(second)
        assert metrics[f'model_server_invocation_seconds_count{{version="{second}"}}'] >= 1
        assert metrics["model_server_follow_errors_total"] == 0
        # The chart's Grafana panels ask for what this server exports, by the labels it gives.
        exported = {key.split("{")[0] for key in metrics}
        labels = {label for key in metrics for label in re.findall(r'(\w+)="', key)}
        for expr in _dashboard_exprs():
            assert set(re.findall(r"\b(model_server_\w+)", expr)) <= exported, expr
            grouped = {x.strip() for g in re.findall(r"\bby \(([^)]*)\)", expr) for x in g.split(",")}
            filtered = set(re.findall(r"(\w+)=", expr)) - {"namespace"}  # Prometheus adds it when scraping
            assert grouped | filtered <= labels, expr
        # Only the served version's files are kept.
        assert [p.name.split("-")[1] for p in downloads.glob("m-v*")] == [f"v{second}"]
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert f"[training] serving models:/m@champion: version {first}" in out, out
    assert f"[training] serving version {second}" in out, out
    # Stopped as Kubernetes stops a pod (SIGTERM): the served version's files went with it.
    assert not list(downloads.iterdir()), list(downloads.iterdir())


@pytest.mark.slow
def test_a_version_that_fails_to_load_is_logged_and_the_current_one_keeps_serving(tmp_path, store):
    client, first, second = store
    # A version whose files are gone (its artifact store was cleaned up, say).
    broken = client.create_model_version("m", source=(tmp_path / "gone").as_uri()).version
    proc, url = _server(tmp_path, "--follow-s", "0.3")
    try:
        _wait_until_up(proc, url)
        client.set_registered_model_alias("m", "champion", broken)
        _wait_for_a_failed_load(url)
        time.sleep(1.5)  # several follow periods: the broken version is not downloaded again
        assert _metric(url, "model_server_follow_errors_total") == 1
        assert _ask(url) == (first, [1.0, 1.0])
        client.set_registered_model_alias("m", "champion", second)  # the alias moves on: followed again
        deadline = time.monotonic() + 60
        while _ask(url)[0] != second:
            assert time.monotonic() < deadline, "the next version was not served"
            time.sleep(0.3)
    finally:
        proc.terminate()  # SIGTERM, as Kubernetes stops a pod: uvicorn's shutdown, then the signal's end
        out = proc.communicate(timeout=30)[0]
    assert f"[training] still serving version {first}: " in out, out
    assert proc.returncode == -signal.SIGTERM and "Traceback" not in out, out[-3000:]


@pytest.mark.slow
def test_a_version_whose_files_come_back_is_served_at_the_next_try(tmp_path, store):
    """Its storage was down when the alias moved to it: not given up for good."""
    import mlflow.artifacts

    client, first, second = store
    late = tmp_path / "late"
    version = str(client.create_model_version("m", source=late.as_uri()).version)
    proc, url = _server(tmp_path, "--follow-s", "0.3", "--retry-failed-s", "2")
    try:
        _wait_until_up(proc, url)
        client.set_registered_model_alias("m", "champion", version)
        _wait_for_a_failed_load(url)
        assert _ask(url) == (first, [1.0, 1.0])
        mlflow.artifacts.download_artifacts(f"models:/m/{second}", dst_path=str(late))  # the storage is back
        deadline = time.monotonic() + 60
        while _ask(url)[0] != version:
            assert time.monotonic() < deadline, "the version was not tried again"
            time.sleep(0.3)
        assert _ask(url) == (version, [2.0, 2.0])
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert f"version {version} is tried again in 2s" in out, out


def _wait_for_a_failed_load(url: str) -> None:
    deadline = time.monotonic() + 60
    while _metric(url, "model_server_follow_errors_total") < 1:
        assert time.monotonic() < deadline, "the failed load was never counted"
        time.sleep(0.3)


def _metric(url: str, name: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:  # nosec B310: the test's own server
        return _samples(r.read().decode())[name]


@pytest.mark.slow
def test_a_pinned_version_is_served_and_never_followed(tmp_path, store):
    client, first, second = store
    proc, url = _server(tmp_path, "--version", second, "--follow-s", "0.2")
    try:
        _wait_until_up(proc, url)
        client.set_registered_model_alias("m", "champion", second)
        client.set_registered_model_alias("m", "champion", first)
        time.sleep(1)  # several follow periods, had it followed
        assert _ask(url) == (second, [2.0, 2.0])
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C while it serves
        out = proc.communicate(timeout=30)[0]
        assert proc.returncode == 130 and "Traceback" not in out, out[-3000:]
        assert out.strip().splitlines()[-1] == "[training] stopped (interrupted)", out[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


@pytest.mark.parametrize("args, message", [
    (["--alias", "nope"], "error: nothing to serve at models:/m@nope: "),
    (["--version", "9"], "error: nothing to serve at models:/m/9: "),
    (["--follow-s", "-1"], "error: --follow-s=-1: must be 0 (never) or a number of seconds"),
    (["--port", "70000"], "error: --port 70000: must be 1-65535"),
])
def test_nothing_to_serve_is_one_line_and_exit_2(tmp_path, store, args, message):
    proc = subprocess.run([sys.executable, "-m", "training.ops.serve", "--model", "m", *args], cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), proc.stderr


def test_a_busy_port_is_one_line_before_the_model_is_fetched(tmp_path, store):
    """Another process listens on the port: the server says so at once, exit 2, and has not
    downloaded the champion (its download folder, named after the version, never appears)."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        env = dict(os.environ, PYTHONPATH=str(REPO), TMPDIR=str(tmp_path))
        proc = subprocess.run([sys.executable, "-m", "training.ops.serve", "--model", "m", "--port", str(port)],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"error: cannot listen on 127.0.0.1:{port}: Address already in use"], proc.stderr
    assert not list(tmp_path.glob("m-v*")), list(tmp_path.iterdir())


# A model that takes as long to load as the server's user cares to wait: its load starts, says so
# in a file, and goes on until it is interrupted.
SLOW_TO_LOAD = """
import os, pathlib, time
import mlflow

class SlowToLoad(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        if os.environ.get("LOADING_MARKER"):  # not while it is logged
            pathlib.Path(os.environ["LOADING_MARKER"]).touch()
            time.sleep(600)

    def predict(self, context, model_input, params=None):
        return model_input

mlflow.models.set_model(SlowToLoad())
"""


def test_ctrl_c_while_the_model_loads_is_one_line_and_leaves_no_download(tmp_path, store):
    """Ctrl-C before the server serves (a large model downloading or loading): one line, exit
    130, and the version's download folder removed."""
    import mlflow

    code = tmp_path / "slow_to_load.py"
    code.write_text(SLOW_TO_LOAD)
    with mlflow.start_run():
        version = mlflow.pyfunc.log_model(name="model", python_model=str(code),
                                          registered_model_name="slow").registered_model_version
    marker, downloads = tmp_path / "loading", tmp_path / "downloads"
    downloads.mkdir()
    proc, _ = _server(tmp_path, "--version", str(version), model="slow",
                      env={"LOADING_MARKER": str(marker), "TMPDIR": str(downloads)})
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()[-3000:]
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)
        out = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out[-3000:]
    assert out.strip().splitlines()[-1] == "error: interrupted", out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert not list(downloads.glob(f"slow-v{version}-*")), list(downloads.iterdir())

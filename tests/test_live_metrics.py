"""Live metrics (training/runtime/live.py): points reach the MLflow run during training, written
by a thread of their own, so that a slow or unreachable tracking store never holds up a round.

The stores are real: an MLflow SQLite store, and for the slow and refusing cases an HTTP server
on this machine that answers MLflow's REST call for a batch of metrics (`runs/log-batch`) only
when the test lets it, or a port nothing listens on."""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from training.runtime.live import LiveMetrics


def test_points_reach_the_run_each_step_once_and_flush_waits_for_them(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("live"))
    live = LiveMetrics(uri, run.info.run_id, "test")
    for step in range(1, 31):
        live.add("valid_rmse_curve", step, 10.0 / step)
    live.flush()   # a report: everything added so far is in the store when it returns
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "valid_rmse_curve")) == list(range(1, 31))
    live.add("valid_rmse_curve", 31, 0.1)
    live.close()
    points = client.get_metric_history(run.info.run_id, "valid_rmse_curve")
    assert sorted(m.step for m in points) == list(range(1, 32))
    assert {m.step: m.value for m in points}[31] == 0.1


class _HeldServer(ThreadingHTTPServer):
    """Answers every log-batch call with MLflow's empty success, once `release` is set."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.release, self.received = threading.Event(), []


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.received.append((self.path, body))
        self.server.release.wait(60)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def held_server():
    server = _HeldServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()


def test_a_slow_tracking_server_never_holds_up_the_training_loop(held_server):
    live = LiveMetrics(f"http://127.0.0.1:{held_server.server_port}", "run-1", "test")
    adder = threading.Thread(target=lambda: [live.add("loss", s, 1.0 / s) for s in range(1, 4)])
    adder.start()
    adder.join(30)
    # The first point went out at once, and the server holds that call; adding more did not wait.
    assert not adder.is_alive(), "add() waited for the tracking server"
    held_server.release.set()
    live.close()
    steps = sorted(m["step"] for path, body in held_server.received for m in body["metrics"])
    assert all(path.endswith("/runs/log-batch") for path, _ in held_server.received)
    assert steps == [1, 2, 3]


def test_an_unreachable_server_turns_live_logging_off_with_one_line(capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with socket.socket() as s:   # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    live = LiveMetrics(f"http://127.0.0.1:{port}", "run-1", "xgb")
    live.add("loss", 1, 1.0)
    live.flush()
    live.add("loss", 2, 0.5)   # off now: training goes on, nothing raises
    live.close()
    lines = [l for l in capsys.readouterr().out.splitlines() if "live MLflow logging off" in l]
    assert len(lines) == 1 and lines[0].startswith("[xgb] live MLflow logging off (")
    assert lines[0].endswith("the driver logs the metrics at the end")
    assert not live.enabled


def test_a_restarted_worker_adds_no_second_point_at_a_step_the_curve_holds(tmp_path):
    """A worker group restarted from its checkpoint at step 6 trains steps 6-15 again; the lost
    group had logged 1-10 live. The curve keeps one point per step, the first."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("live")).info.run_id
    lost = LiveMetrics(uri, run_id, "test", once_per_step=True)
    for step in range(1, 11):
        lost.add("valid_rmse_curve", step, 10.0 / step)
    lost.close()
    restarted = LiveMetrics(uri, run_id, "test", once_per_step=True)
    for step in range(6, 16):
        restarted.add("valid_rmse_curve", step, 20.0 / step)
    restarted.close()
    points = client.get_metric_history(run_id, "valid_rmse_curve")
    assert sorted(m.step for m in points) == list(range(1, 16))
    assert {m.step: m.value for m in points}[8] == 10.0 / 8

"""Observability: utilisation samples, resource hours and cost, Ray logs kept in MLflow, plots.

The end-to-end tests run real GBDT workloads on the session's real local Ray (2 CPUs) and read
the results back from the real MLflow store; the unit tests check the arithmetic, redaction
and size caps on files written here.
"""

from __future__ import annotations

import csv
import json
import os
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import SMALL, load_config, registered_versions, run_cli, small_rounds
from training.settings import PriceConfig
from training.errors import UserError
from training.observability import accounting, logs
from training.observability.sampler import Sample

FAKE_SECRET = "FAKEsecretVALUE-4c1d9e"   # must never reach an artifact
PRICES = ["observability.prices.cpu_hour=1.5", "observability.prices.memory_gb_hour=0.01",
          "observability.prices.gpu_hour=3.0", "observability.prices.node_hour=0.25",
          "observability.prices.currency=EUR"]


def _sample(t, nodes=1, cpus=2.0, gpus=0.0, memory_gb=8.0):
    return Sample(t=t, nodes=nodes, cpus=cpus, cpus_free=cpus, gpus=gpus, gpus_free=gpus, memory_gb=memory_gb,
                  memory_free_gb=memory_gb, object_store_gb=1.0, object_store_free_gb=1.0)


# --- arithmetic ------------------------------------------------------------------------------


def test_hours_integrate_the_cluster_size_over_wall_time():
    """Each sample's size holds until the next; the first also covers the time before it."""
    samples = [_sample(100.0, nodes=1, cpus=2, memory_gb=8),
               _sample(1900.0, nodes=3, cpus=10, gpus=2, memory_gb=40)]
    u = accounting.usage(samples, start=0.0, end=3700.0)
    assert u.wall_s == 3700.0
    assert u.node_hours == pytest.approx((1 * 1900 + 3 * 1800) / 3600)
    assert u.cpu_hours == pytest.approx((2 * 1900 + 10 * 1800) / 3600)
    assert u.gpu_hours == pytest.approx(2 * 1800 / 3600)
    assert u.memory_gb_hours == pytest.approx((8 * 1900 + 40 * 1800) / 3600)
    # Samples after the end do not count; no samples, no hours.
    assert accounting.usage(samples + [_sample(5000.0, nodes=100)], 0.0, 3700.0) == u
    assert accounting.usage([], 0.0, 10.0).cpu_hours == 0.0


def test_cost_is_hours_times_prices():
    u = accounting.Usage(wall_s=7200, node_hours=4, cpu_hours=32, gpu_hours=2, memory_gb_hours=128)
    c = accounting.cost(u, PriceConfig(currency="EUR", cpu_hour=0.05, memory_gb_hour=0.005, gpu_hour=2.0,
                                       node_hour=0.1))
    assert c.parts == pytest.approx({"cpu": 1.6, "memory": 0.64, "gpu": 4.0, "node": 0.4})
    assert c.total == pytest.approx(6.64) and c.describe() == "6.6400 EUR"
    assert accounting.cost(u, PriceConfig(cpu_hour=0, memory_gb_hour=0, gpu_hour=0)).total == 0.0


@pytest.mark.parametrize("override, message", [
    ("observability.prices.gpu_hour=-2.5", "observability.prices.gpu_hour must be >= 0 (a price per hour), got -2.5"),
    ("observability.prices.cpu_hour=-0.01", "observability.prices.cpu_hour must be >= 0"),
    ("observability.sample_interval_s=0", "observability.sample_interval_s must be > 0, got 0.0"),
    ("observability.logs.max_total_mb=0", "observability.logs.max_total_mb must be > 0"),
])
def test_bad_observability_values_are_clear_errors(override, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(override)


@pytest.mark.fresh_store
def test_negative_price_on_the_command_line_exits_2_with_one_line(tmp_path):
    proc = run_cli(["observability.prices.memory_gb_hour=-1"], cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: observability.prices.memory_gb_hour must be >= 0 (a price per hour), "
                                   "got -1.0")
    assert not (tmp_path / "mlruns").exists()


def test_a_failing_sample_is_logged_once_and_never_raises():
    """A node that vanishes or a metrics endpoint that times out: the run goes on."""
    import logging
    import time

    from training.observability.sampler import Sampler

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("training.observability.sampler")
    logger.addHandler(handler)
    calls = []
    three_failed = threading.Event()
    try:
        def take():
            calls.append(1)
            if len(calls) >= 3:
                three_failed.set()
            raise ConnectionError("metrics endpoint of node 10.0.0.7 timed out")

        sampler = Sampler(0.01, use_state_api=False, take=take).start()
        assert three_failed.wait(30), "the sampler stopped sampling after a failure"
        assert sampler.stop() == []
    finally:
        logger.removeHandler(handler)
    assert sampler.errors >= 3
    assert len(records) == 1 and "ConnectionError: metrics endpoint of node 10.0.0.7" in records[0].getMessage()


def test_samples_reach_the_mlflow_run_while_it_is_recorded(tmp_path):
    """Utilisation samples appear in the run during the run (as `mlflow ui` would show them), each
    step once after the end, at the time the sample was taken."""
    import time

    import mlflow
    from mlflow.tracking import MlflowClient

    from training.observability.recorder import Observer
    from training.observability.sampler import Sampler
    from training.settings import ObservabilityConfig

    cfg = ObservabilityConfig()
    cfg.enabled, cfg.logs.enabled = False, False
    obs = Observer(cfg)
    obs.sampler = Sampler(0.05, use_state_api=False, take=lambda: _sample(time.time())).start()
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()
    try:
        experiment = client.create_experiment("live-samples")
        with mlflow.start_run(experiment_id=experiment) as run, obs.recording():
            deadline = time.monotonic() + 60
            while not client.get_metric_history(run.info.run_id, "cluster_cpus"):
                assert time.monotonic() < deadline, "no sample reached the run while it was recorded"
                time.sleep(0.05)
            assert mlflow.active_run() is not None  # still recording
        points = client.get_metric_history(run.info.run_id, "cluster_cpus")
        taken = obs.sampler.samples
        assert sorted(p.step for p in points) == list(range(len(taken)))
        assert {p.step: p.timestamp for p in points} == {i: int(s.t * 1000) for i, s in enumerate(taken)}
    finally:
        mlflow.set_tracking_uri(before)


def test_the_ray_logs_reach_the_run_when_the_cluster_summary_fails(ray_session, tmp_path, monkeypatch):
    """The summary asks the GCS and the state API, which may be in trouble when a run fails; the
    logs, what a post-mortem needs most, are logged all the same, the summary naming its error."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from training.observability import recorder
    from training.observability.sampler import Sampler
    from training.settings import ObservabilityConfig

    def gcs_gone(*args, **kwargs):
        raise ConnectionError("GCS at 127.0.0.1:6379 unavailable")

    monkeypatch.setattr(recorder, "cluster_summary", gcs_gone)
    cfg = ObservabilityConfig()
    cfg.enabled = False
    obs = recorder.Observer(cfg)
    obs.sampler = Sampler(0.05, use_state_api=False, take=lambda: _sample(time.time())).start()
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        client = MlflowClient()
        with mlflow.start_run(experiment_id=client.create_experiment("summary-fails")) as run, obs.recording():
            pass
        listed = [f.path for f in client.list_artifacts(run.info.run_id, "ray_logs")]
        assert "ray_logs/INDEX.txt" in listed and len(listed) > 2, listed
        summary = json.loads(mlflow.artifacts.load_text(f"{run.info.artifact_uri}/ray_logs/cluster_summary.json"))
        assert summary == {"error": "the cluster summary could not be made: ConnectionError: GCS at "
                                    "127.0.0.1:6379 unavailable"}
    finally:
        mlflow.set_tracking_uri(before)


def _sampled(looks) -> list:
    """The samples a Sampler makes of these looks at the cluster, each a dict of Sample fields
    (the last one repeated until the sampler stops)."""
    import time

    from training.observability.sampler import Sample, Sampler

    looks = iter(looks + [looks[-1]] * 100_000)
    calls = []
    all_taken = threading.Event()

    def take():
        calls.append(1)
        if len(calls) >= 3:
            all_taken.set()
        return Sample(t=time.time(), nodes=1, cpus=2, cpus_free=2, gpus=0, gpus_free=0, memory_gb=1,
                      memory_free_gb=1, object_store_gb=1, object_store_free_gb=1, **next(looks))

    sampler = Sampler(0.01, use_state_api=False, take=take).start()
    assert all_taken.wait(30)
    return sampler.stop()


def test_failures_count_from_the_runs_first_sample():
    """A cluster or driver that ran other workloads first (a notebook, this test session) carries
    their failed tasks in Ray's metrics and their actor restarts in the job's: a run reports only
    its own."""
    samples = _sampled([{"failed_tasks_cluster": 13, "restarted_actors": 2},
                        {"failed_tasks_cluster": 13, "restarted_actors": 2},
                        {"failed_tasks_cluster": 15, "restarted_actors": 3}])
    assert [(s.failed_tasks, s.restarted_actors) for s in samples[:3]] == [(0, 0), (0, 0), (2, 1)]
    assert samples[-1].metrics()["failed_tasks"] == 2 and samples[-1].metrics()["restarted_actors"] == 1


def test_failures_after_the_state_api_is_gone_add_to_its_last_count():
    """The state API counts the run's failed tasks; once it stops answering (Ctrl-C stops an
    in-process Ray's dashboard), the metrics' increase since its last answer is added, never the
    cluster's whole count (failures of earlier runs included)."""
    samples = _sampled([{"failed_tasks": 1, "failed_tasks_cluster": 40},
                        {"failed_tasks": 1, "failed_tasks_cluster": 41},
                        {"failed_tasks_cluster": 43}])
    assert [s.failed_tasks for s in samples[:3]] == [1, 1, 3]


def test_a_failure_of_an_earlier_run_listed_late_is_not_counted(ray_session):
    """Ray lists a task's failure a while after it happened, so a failed task of an earlier run in
    the same job (a notebook's, a test session's) can first appear while a later run is sampled
    (seen in this suite: a clean run reported a failed task of an earlier test). A run counts
    the failed tasks created since it began, however late they are listed, and its summary
    the actors that died since (not an earlier run's)."""
    from ray.util.state import list_actors, list_tasks

    from training.observability.sampler import StateApi, state_address

    job = ray_session.get_runtime_context().get_job_id()

    @ray_session.remote(max_retries=0)
    def fails() -> None:
        raise ValueError("planned failure")

    def listed(name: str) -> bool:
        tasks = list_tasks(filters=[("job_id", "=", job), ("name", "=", name), ("state", "=", "FAILED")],
                           raise_on_missing_output=False, timeout=10, address=state_address())
        return bool(tasks)

    def fail_and_wait_until_listed(name: str) -> None:
        with pytest.raises(ray_session.exceptions.RayTaskError):
            ray_session.get(fails.options(name=name).remote())
        deadline = time.monotonic() + 60
        while not listed(name):
            assert time.monotonic() < deadline, f"Ray never listed the failed task {name}"
            time.sleep(0.2)

    @ray_session.remote(num_cpus=0)
    class Member:
        def ready(self) -> bool:
            return True

    def kill_and_wait_until_dead(name: str) -> None:
        actor = Member.options(name=name).remote()
        ray_session.get(actor.ready.remote())
        ray_session.kill(actor)
        deadline = time.monotonic() + 60
        while not list_actors(filters=[("job_id", "=", job), ("name", "=", name), ("state", "=", "DEAD")],
                              raise_on_missing_output=False, timeout=10, address=state_address()):
            assert time.monotonic() < deadline, f"Ray never listed the actor {name} as dead"
            time.sleep(0.2)

    fail_and_wait_until_listed("earlier-run")  # created before the run below starts
    kill_and_wait_until_dead("earlier-member")
    run = StateApi(job, since_s=time.time())
    assert run.failed_tasks() == 0
    assert (run.failures(0.0)["failed_tasks"], run.failures(0.0)["dead_actors"]) == ([], 0)
    fail_and_wait_until_listed("this-run")
    kill_and_wait_until_dead("this-member")
    assert run.failed_tasks() == 1
    summary = run.failures(0.0)
    assert [t["name"] for t in summary["failed_tasks"]] == ["this-run"] and summary["dead_actors"] == 1


def test_node_metrics_parsing_per_node_and_per_gpu():
    """The exposition format and labels of a Ray 2.60 node (GPU lines as its reporter writes
    them: one series per GpuIndex, GPU memory in MB), two nodes in one text."""
    from training.observability.node_metrics import failed_task_count_from_metrics, parse_node_metrics

    tags = 'IsHeadNode="false",RayNodeType="worker",SessionName="session_x",Version="2.60.0"'
    text = "\n".join([
        "# TYPE ray_node_cpu_utilization gauge",
        f'ray_node_cpu_utilization{{{tags},ip="10.0.0.7"}} 87.5',
        f'ray_node_cpu_utilization{{{tags},ip="10.0.0.8"}} 12.0',
        "# TYPE ray_node_cpu_count gauge",
        f'ray_node_cpu_count{{{tags},ip="10.0.0.7"}} 16.0',
        f'ray_node_cpu_count{{{tags},ip="10.0.0.8"}} 2.0',
        "# TYPE ray_node_mem_used gauge",
        f'ray_node_mem_used{{{tags},ip="10.0.0.7"}} 4294967296.0',
        "# TYPE ray_node_gpus_utilization gauge",
        f'ray_node_gpus_utilization{{{tags},GpuIndex="0",ip="10.0.0.7"}} 50.0',
        f'ray_node_gpus_utilization{{{tags},GpuIndex="1",ip="10.0.0.7"}} 100.0',
        "# TYPE ray_node_gram_used gauge",
        f'ray_node_gram_used{{{tags},GpuIndex="0",ip="10.0.0.7"}} 1024.0',
        f'ray_node_gram_used{{{tags},GpuIndex="1",ip="10.0.0.7"}} 2048.0',
        "# TYPE ray_tasks gauge",
        'ray_tasks{Name="_fit",State="FAILED",ip="10.0.0.7"} 2.0',
        'ray_tasks{Name="FooterReader.__init__",State="FAILED",ip="10.0.0.7"} 31.0',
        'ray_tasks{Name="SynchronizationActor.broadcast_from_rank_zero",State="FAILED",ip="10.0.0.7"} 1.0',
        'ray_tasks{Name="_fit",State="FINISHED",ip="10.0.0.7"} 5.0',
    ]) + "\n"
    usage = parse_node_metrics(text)
    assert set(usage) == {"10.0.0.7", "10.0.0.8"}
    gpu_node = usage["10.0.0.7"]
    assert (gpu_node.cpu_percent, gpu_node.memory_used_gb) == (87.5, 4.0)
    assert (gpu_node.gpu_percent, gpu_node.gpu_memory_used_gb) == (75.0, 3.0)
    assert usage["10.0.0.8"].gpu_percent is None
    assert failed_task_count_from_metrics(text) == 2
    # The cluster's CPU share weighs each node by its CPUs: a busy 16-CPU worker and a nearly idle
    # 2-CPU head are 79% busy (16 x 87.5% + 2 x 12% of 18 CPUs), not their plain mean's 50%.
    sample = Sample(t=0.0, nodes=2, cpus=16, cpus_free=0, gpus=2, gpus_free=0, memory_gb=64, memory_free_gb=0,
                    object_store_gb=8, object_store_free_gb=8, per_node=usage)
    assert sample.cluster_cpu_percent() == pytest.approx((16 * 87.5 + 2 * 12.0) / 18)
    assert sample.cpus_busy() == pytest.approx(16 * 0.875 + 2 * 0.12)


def test_a_state_api_that_does_not_answer_at_the_start_turns_it_off_with_one_line(ray_session, monkeypatch,
                                                                                   caplog):
    """The sampler's first listing of the job's actors times out (a dashboard restarting, a
    cluster of many actors): the run goes on, counting failures from the metrics, instead of
    ending in a traceback before it trains."""
    from training.observability import sampler

    def times_out(self):
        raise TimeoutError("list_actors: the state API did not reply within 10 s")

    monkeypatch.setattr(sampler.StateApi, "_actors", times_out)
    s = sampler.Sampler(1.0, use_state_api=True)
    assert s.state is None
    assert "the state API did not answer (list_actors: the state API did not reply within 10 s)" in caplog.text


# --- logs: redaction, file selection, size caps --------------------------------------------


def test_redaction_of_secret_assignments_headers_urls_and_known_values(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw-from-the-environment")
    secrets = logs.known_secrets()
    text = "\n".join([
        "AWS_SECRET_ACCESS_KEY=abc123verysecret",
        'env: {"RAY_AUTH_TOKEN": "tok-9876543210", "PATH": "/usr/bin"}',
        "password: hunter2hunter2",
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload",
        "connecting to postgresql://mlflow:dbpass123@db:5432/mlflow",
        "login ok with pw-from-the-environment",
        "round 10/20 valid-rmse=16.6190",
    ])
    out = logs.redact(text, secrets)
    for leaked in ("abc123verysecret", "tok-9876543210", "hunter2hunter2", "eyJhbGciOiJIUzI1NiJ9",
                   "dbpass123", "pw-from-the-environment"):
        assert leaked not in out, out
    assert "round 10/20 valid-rmse=16.6190" in out and '"PATH": "/usr/bin"' in out
    assert out.count(logs.REDACTED) == 6


def test_redaction_of_python_reprs_other_schemes_and_hyphenated_names_and_not_of_lookalikes():
    text = "\n".join([
        "runtime_env: {'env_vars': {'WANDB_API_KEY': 'wandb-1234567', 'OMP_NUM_THREADS': '1'}}",
        "environ({'password': 'pw-987654', 'HOME': '/home/ray'})",
        "Authorization: Token 9944b09199c62bcf9418ad846dd0e4bb",
        "X-Api-Key: apikey-55555",
        "tokenizer=bert-base-uncased num_tokens: 51234 authenticated: True author=ray",
        "auth:",
        "Traceback (most recent call last):",
    ])
    out = logs.redact(text)
    for leaked in ("wandb-1234567", "pw-987654", "9944b09199c62bcf9418ad846dd0e4bb", "apikey-55555"):
        assert leaked not in out, out
    assert "Authorization: Token [REDACTED]" in out and "'OMP_NUM_THREADS': '1'" in out and "'/home/ray'" in out
    assert "tokenizer=bert-base-uncased num_tokens: 51234 authenticated: True author=ray" in out
    assert out.endswith("auth:\nTraceback (most recent call last):"), out


def test_every_nodes_logs_get_a_share_before_the_budget_runs_out():
    """The head's many files (newest first) and two workers' files (listing order): taken node
    after node, so a small max_total_mb still holds each worker's first files."""
    head = [(f"10.0.0.1/worker-{i}.out", 100.0 - i, 10, None) for i in range(5)]
    w2 = [("10.0.0.2/raylet.out", 0.0, -1, None), ("10.0.0.2/worker-a.err", 0.0, -1, None)]
    w3 = [("10.0.0.3/raylet.out", 0.0, -1, None)]
    order = [s[0] for s in logs.interleave_by_node(head + w2 + w3)]
    assert order[:3] == ["10.0.0.1/worker-0.out", "10.0.0.2/raylet.out", "10.0.0.3/raylet.out"]
    assert order[3:5] == ["10.0.0.1/worker-1.out", "10.0.0.2/worker-a.err"] and len(order) == 8


def test_collect_keeps_log_tails_within_caps_and_skips_non_logs(tmp_path):
    src, dst = tmp_path / "logs", tmp_path / "out"
    src.mkdir()
    (src / "worker-1.out").write_text("".join(f"line {i}\n" for i in range(200_000)) + f"token={FAKE_SECRET}\n")
    (src / "raylet.err").write_text(f"started\nAWS_SECRET_ACCESS_KEY={FAKE_SECRET}\n")
    (src / "binary.log").write_bytes(b"\x00\x01\x02" * 100)
    (src / "events.json").write_text('{"x": 1}')
    (src / "session_latest.dat").write_bytes(b"x" * 10)
    files = logs.collect(dst, max_file_mb=0.1, max_total_mb=0.15, use_state_api=False, secrets=[], log_dir=src)
    by_name = {Path(f.name).name: f for f in files}
    assert set(by_name) == {"worker-1.out", "raylet.err"}       # no binary, no JSON, no unknown suffix
    kept = {p.name: p.read_bytes() for p in dst.rglob("*") if p.is_file()}
    assert len(kept["worker-1.out"]) <= 0.1 * 1024 * 1024
    assert kept["worker-1.out"].startswith(b"line ") and b"line 199999\n" in kept["worker-1.out"]
    assert "only the end kept" in by_name["worker-1.out"].note
    assert sum(map(len, kept.values())) <= 0.15 * 1024 * 1024
    assert all(FAKE_SECRET.encode() not in data for data in kept.values())
    assert b"[REDACTED]" in kept["raylet.err"]


def test_total_cap_skips_the_oldest_files(tmp_path):
    src, dst = tmp_path / "logs", tmp_path / "out"
    src.mkdir()
    for i in range(5):
        f = src / f"worker-{i}.log"
        f.write_text("x" * 50_000 + "\n")
        os.utime(f, (1000 + i, 1000 + i))
    files = logs.collect(dst, max_file_mb=1, max_total_mb=0.12, use_state_api=False, secrets=[], log_dir=src)
    kept = [Path(f.name).name for f in files if f.kept]
    assert kept[:2] == ["worker-4.log", "worker-3.log"]     # newest first
    assert [Path(f.name).name for f in files if "max_total_mb" in f.note] == ["worker-1.log", "worker-0.log"]
    assert sum(f.kept for f in files) <= 0.12 * 1024 * 1024
    assert "worker-0.log" in logs.index(files)


# --- end to end on the real local Ray ---------------------------------------------------------


def _client(workdir):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlruns/mlflow.db")


def _artifacts(client, run_id, path=""):
    out = []
    for a in client.list_artifacts(run_id, path):
        out += _artifacts(client, run_id, a.path) if a.is_dir else [a.path]
    return out


def _plant_secret_in_ray_logs():
    """A log line with a credential, in the real session's log directory of the test Ray."""
    log_dir = logs.local_log_dir()
    assert log_dir is not None
    (log_dir / "observability-test-secret.log").write_text(
        f"starting with AWS_SECRET_ACCESS_KEY={FAKE_SECRET} and MLFLOW_TRACKING_PASSWORD={FAKE_SECRET}\n")
    return log_dir


class MetricNamesSeen:
    """Every metric name the node's Prometheus endpoint showed, scraped every 2 s from start to stop.

    Prometheus scrapes the same way. A single late scrape would miss metrics: Ray Data's gauges
    show for seconds after a dataset finishes, and the agent drops a dead process's metrics
    (the Train controller's) once it stops reporting."""

    def __init__(self, ray):
        node = [n for n in ray.nodes() if n["Alive"]][0]
        self._endpoint = (node["NodeManagerAddress"], node["MetricsExportPort"])
        self.names: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        from prometheus_client.parser import text_string_to_metric_families

        from training.observability.node_metrics import scrape

        while not self._stop.is_set():
            try:
                families = list(text_string_to_metric_families(scrape(*self._endpoint)))
            except OSError:   # the agent restarting or busy: the next scrape tries again
                families = []
            # Rebound, never changed in place: the test reads it from the main thread.
            self.names = self.names | {f.name for f in families} | {s.name for f in families for s in f.samples}
            self._stop.wait(2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def metric_names_seen(ray_session):
    with MetricNamesSeen(ray_session) as seen:
        yield seen


@pytest.fixture(scope="module")
def observed_run(ray_session, metric_names_seen, tmp_path_factory):
    """One small XGBoost run, sampled every second, CSV export on, its node's metrics scraped
    throughout; shared by the tests below.
    Returns the work dir, the result and the run's wall time as its caller saw it."""
    from training.gbdt import workload as gbdt

    workdir = tmp_path_factory.mktemp("observed")
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        _plant_secret_in_ray_logs()
        cfg = load_config(*SMALL, *small_rounds("xgboost", 20), "cluster.num_workers=1", *PRICES,
                          "observability.sample_interval_s=1", f"observability.csv_path={workdir}/samples.csv")
        t0 = time.perf_counter()
        result = gbdt.run(cfg)
        wall = time.perf_counter() - t0
    finally:
        os.chdir(cwd)
    return workdir, result, wall


@pytest.mark.slow
def test_run_records_samples_hours_and_a_cost_from_the_price_table(observed_run, capsys):
    workdir, result, wall = observed_run
    client = _client(workdir)
    run = client.get_run(result.run_id)
    m, params = run.data.metrics, run.data.params

    # Samples over time: the cluster's 2 CPUs, per-node CPU utilisation from Ray's metrics endpoint.
    cpus = client.get_metric_history(result.run_id, "cluster_cpus")
    assert len(cpus) >= 3 and {p.value for p in cpus} == {2.0}
    assert sorted(p.step for p in cpus) == list(range(len(cpus)))
    node_cpu = [k for k in m if k.startswith("node/") and k.endswith("/cpu_percent")]
    assert node_cpu and 0 <= m[node_cpu[0]] <= 100 * os.cpu_count()
    assert m["failed_tasks"] == 0 and m["restarted_actors"] == 0

    # Hours: the 2-CPU, 1-node cluster over the observed wall time.
    wall_h = m["usage_wall_s"] / 3600
    # Observed from the cluster's start to the last upload: within the run, never longer.
    assert 0.5 * result.timings["train_s"] < m["usage_wall_s"] <= wall
    assert m["usage_cpu_hours"] == pytest.approx(2 * wall_h, rel=1e-6)
    assert m["usage_node_hours"] == pytest.approx(wall_h, rel=1e-6)
    assert m["usage_gpu_hours"] == 0

    # Cost recomputed from the logged hours and the configured (logged) prices.
    price = {k: float(params[f"observability.prices.{k}"]) for k in ("cpu_hour", "memory_gb_hour", "gpu_hour",
                                                                       "node_hour")}
    assert price == {"cpu_hour": 1.5, "memory_gb_hour": 0.01, "gpu_hour": 3.0, "node_hour": 0.25}
    expected = (m["usage_cpu_hours"] * price["cpu_hour"] + m["usage_memory_gb_hours"] * price["memory_gb_hour"]
                + m["usage_gpu_hours"] * price["gpu_hour"] + m["usage_node_hours"] * price["node_hour"])
    assert m["cost_estimate"] == pytest.approx(expected, rel=1e-9) and expected > 0
    assert run.data.tags["cost_estimate"] == f"{expected:.4f} EUR"
    assert result.usage.startswith("Resources:") and f"estimated cost {expected:.4f} EUR" in result.usage

    # CSV on request: one row per sample; plots, samples and Ray logs as artifacts.
    with open(workdir / "samples.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(cpus) and float(table[-1]["cluster_cpus"]) == 2.0
    artifacts = _artifacts(client, result.run_id)
    assert {"observability/utilisation.png", "observability/samples.csv", "ray_logs/INDEX.txt",
            "ray_logs/cluster_summary.json"} <= set(artifacts)
    assert any(a.endswith(".out") and "/worker-" in a for a in artifacts)
    sizes = {a.path: a.file_size for a in client.list_artifacts(result.run_id, "observability")}
    assert sizes["observability/utilisation.png"] > 10_000
    summary = json.loads(Path(client.download_artifacts(result.run_id, "ray_logs/cluster_summary.json")).read_text())
    assert summary["cluster_resources"]["CPU"] == 2.0 and summary["cost"]["currency"] == "EUR"
    _assert_secret_redacted(client, result.run_id, artifacts)


def _assert_secret_redacted(client, run_id, artifacts):
    planted = [a for a in artifacts if a.endswith("observability-test-secret.log")]
    assert planted, "the planted log file was not uploaded"
    root = Path(client.download_artifacts(run_id, "ray_logs"))
    for f in root.rglob("*"):
        if f.is_file():
            assert FAKE_SECRET not in f.read_text(errors="replace"), f
    assert "AWS_SECRET_ACCESS_KEY=[REDACTED]" in (root / planted[0].split("ray_logs/", 1)[1]).read_text()


@pytest.mark.slow
def test_failed_run_keeps_its_logs_and_cost_and_registers_nothing(ray_session, workdir):
    """A Ray Train worker SIGKILLed with no retries left (the fault drill of
    tests/test_fault_tolerance.py with cluster.max_failures=0): the run fails clearly, registers
    nothing, and its logs, samples, hours and cost are still in MLflow."""
    from training.gbdt import workload as gbdt
    from training.gbdt.slots import MemberTrainingError

    _plant_secret_in_ray_logs()
    cfg = load_config(*SMALL, *small_rounds("xgboost", 30), "cluster.num_workers=1", "cluster.max_failures=0",
                      "workload.kill_worker_at_round=15", "observability.sample_interval_s=1", *PRICES)
    with pytest.raises(MemberTrainingError, match="member 'xgboost' failed after 0 retries"):
        gbdt.run(cfg)
    assert registered_versions(workdir) == []
    client = _client(workdir)
    runs = client.search_runs([client.get_experiment_by_name("ray-training").experiment_id])
    [run] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    [member] = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == run.info.run_id]
    assert run.info.status == "FAILED" and member.info.status == "FAILED"  # neither left RUNNING
    assert run.data.metrics["cost_estimate"] > 0 and run.data.metrics["usage_cpu_hours"] > 0
    artifacts = _artifacts(client, run.info.run_id)
    assert {"ray_logs/INDEX.txt", "ray_logs/cluster_summary.json", "observability/utilisation.png"} <= set(artifacts)
    assert "model/MLmodel" not in artifacts
    # The killed worker's own log is among them: the post-mortem needs no live cluster.
    worker_logs = [Path(client.download_artifacts(run.info.run_id, a)).read_text(errors="replace")
                   for a in artifacts if "/worker-" in a and a.endswith(".out")]
    assert any("[xgboost] round 10/30" in text for text in worker_logs)
    summary = json.loads(Path(client.download_artifacts(run.info.run_id, "ray_logs/cluster_summary.json")).read_text())
    assert summary["failed_tasks"], "the failed fit task is listed"
    _assert_secret_redacted(client, run.info.run_id, artifacts)


def test_a_run_failing_after_its_model_is_logged_registers_nothing_and_its_rerun_registers_once(
        ray_session, workdir, monkeypatch):
    """The uploads at a run's end (its Ray logs, the samples' plots) come after the model is
    logged: when they fail, the run is FAILED and no version comes from it; the rerun of that run
    registers the one version."""
    from training.gbdt import workload as gbdt
    from training.observability import recorder

    def upload_fails(self, training_failed):
        raise ConnectionError("artifact store unavailable")

    cfg = load_config(*SMALL, *small_rounds("xgboost", 10), "cluster.num_workers=1", "run_name=late-failure",
                      "observability.sample_interval_s=1")
    with monkeypatch.context() as m:
        m.setattr(recorder.Observer, "_log_to_run", upload_fails)
        with pytest.raises(ConnectionError, match="artifact store unavailable"):
            gbdt.run(cfg)
    assert registered_versions(workdir) == []
    client = _client(workdir)
    [failed] = client.search_runs([client.get_experiment_by_name("ray-training").experiment_id],
                                  "tags.mlflow.runName = 'late-failure'")
    assert failed.info.status == "FAILED"
    assert failed.outputs.model_outputs  # the model was logged, and never registered

    result = gbdt.run(cfg)
    [version] = registered_versions(workdir)
    assert result.model_uri == f"models:/{version.name}/{version.version}"
    assert client.get_run(version.run_id).info.status == "FINISHED"


@pytest.mark.slow
def test_compare_plots_cost_against_wall_time(observed_run, tmp_path, capsys):
    from training.observability import compare

    workdir, result, _ = observed_run
    uri = f"sqlite:///{workdir}/mlruns/mlflow.db"
    out = tmp_path / "cmp.png"
    assert compare.main(["--tracking-uri", uri, "--output", str(out), "--log"]) == 0
    assert out.stat().st_size > 10_000
    [(label, wall, cost, currency)] = compare.runs_with_cost("ray-training", uri)
    assert label == result.run_name and currency == "EUR"
    assert cost == pytest.approx(_client(workdir).get_run(result.run_id).data.metrics["cost_estimate"])
    logged = _client(workdir).search_runs(
        [_client(workdir).get_experiment_by_name("ray-training").experiment_id], "tags.kind = 'cost_comparison'")
    assert len(logged) == 1
    assert compare.main(["--tracking-uri", uri, "--experiment", "nope", "--output", str(out)]) == 2
    (tmp_path / "a-file").write_text("")  # an --output that cannot be written: one line, not a traceback
    capsys.readouterr()
    assert compare.main(["--tracking-uri", uri, "--output", str(tmp_path / "a-file" / "cmp.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot write --output {tmp_path / 'a-file' / 'cmp.png'}: ") and "\n" not in err, err


@pytest.mark.parametrize("argv, message", [
    (["--output", "plot.txt"], "error: --output plot.txt: name a .png, .svg, .pdf file"),
    ([], "error: no MLflow store at {cwd}/mlruns/mlflow.db: run this where the training runs were made, or pass "
         "--tracking-uri (or set MLFLOW_TRACKING_URI)"),
    (["--tracking-uri", "localhost:5000"], "error: cannot read MLflow runs at localhost:5000: "),
], ids=["not an image", "no store here", "a URI without its scheme"])
@pytest.mark.fresh_store  # no store in the working directory
def test_compare_bad_input_is_one_line_and_creates_nothing(tmp_path, monkeypatch, capsys, argv, message):
    from training.observability import compare

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert compare.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message.format(cwd=tmp_path.resolve())) and len(err.splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


# Only exported by nodes with GPUs (Ray's GPU reporter), so absent from this CPU-only scrape.
GPU_ONLY_METRICS = {"ray_node_gpus_utilization", "ray_node_gram_used"}
DASHBOARD = Path(__file__).resolve().parents[1] / "charts/ray-training/dashboards/ray-training.json"


def _dashboard_metric_names():
    import re

    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    # label_values(metric, label): the last argument is a label name, not a metric.
    exprs += [re.sub(r",\s*\w+\s*\)$", ")", v["definition"]) for v in dash["templating"]["list"]
              if v.get("definition")]
    return {name for e in exprs for name in re.findall(r"\b(ray_[a-z0-9_]+)\s*[{(,)]", e)}


@pytest.mark.slow
def test_grafana_dashboard_uses_metric_names_ray_really_exports(observed_run, metric_names_seen):
    """Every metric in the chart's dashboard was on the real node's Prometheus endpoint at some
    scrape during or after a training run (GPU-only metrics excepted, listed above)."""
    names = _dashboard_metric_names()
    assert len(names) >= 12 and GPU_ONLY_METRICS <= names
    # Processes push their metrics to the node's agent on an export interval, so a metric the run
    # produced can reach the endpoint some seconds after the run: wait until all have been seen.
    deadline = time.monotonic() + 90
    while (missing := names - GPU_ONLY_METRICS - metric_names_seen.names) and time.monotonic() < deadline:
        time.sleep(1)
    assert not missing, f"not exported by Ray 2.60: {sorted(missing)}"


def test_disabled_observability_samples_and_logs_nothing(tmp_path):
    import mlflow

    from training.settings import ObservabilityConfig
    from training.observability import observe

    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        mlflow.set_experiment("observability-disabled")   # not whichever experiment an earlier test set
        with observe(ObservabilityConfig(enabled=False)) as obs, mlflow.start_run() as run, obs.recording():
            assert obs.sampler is None
        logged = mlflow.MlflowClient().get_run(run.info.run_id)
    finally:
        mlflow.set_tracking_uri(before)
    assert logged.data.metrics == {} and "cost_estimate" not in logged.data.tags
    assert obs.summary_line() == ""


REMOTE_SCRIPT = """
import json, sys, ray
from pathlib import Path
from training.observability import logs
ray.init(address=sys.argv[1], logging_level="ERROR")
files = logs.collect(Path(sys.argv[2]), max_file_mb=0.05, max_total_mb=5, use_state_api=True)
print(json.dumps([[f.name, f.kept] for f in files]))
"""


@pytest.mark.slow
def test_other_nodes_logs_come_through_the_state_api(tmp_path):
    """A real two-node Ray cluster (token auth on) whose second node has its own address
    (127.0.0.2), as a worker pod has: a driver on the head reads that node's logs through the
    state API's log endpoints, redacted and capped like local ones."""
    import subprocess
    import sys

    from tests.local_cluster import RAY, RayNodes, node_ports, wait_until

    cluster = RayNodes(tmp_path, head_cpus=1)
    try:
        log = tmp_path / "second.log"
        second_dir = cluster.node_temp_dir()
        proc = cluster.spawn([RAY, "start", "--block", f"--address={cluster.address}", "--node-ip-address=127.0.0.2",
                              "--num-cpus=1", f"--object-store-memory={cluster.object_store}", f"--temp-dir={second_dir}",
                              *node_ports()], cluster.env, "second")
        wait_until(lambda: "Ray runtime started" in log.read_text() or proc.poll() is not None, 120, "node",
                   tmp_path)
        assert proc.poll() is None, log.read_text()[-2000:]
        # Planted on the second node only (its own temp dir, as on its own pod): the driver on the
        # head has no other way to read it than through that node's agent.
        session_logs = sorted(second_dir.glob("session_2*"))[-1] / "logs"
        (session_logs / "planted.log").write_text(f"AWS_SECRET_ACCESS_KEY={FAKE_SECRET}\nhello\n")
        out = tmp_path / "collected"
        done = subprocess.run([sys.executable, "-c", REMOTE_SCRIPT, cluster.address, str(out)],
                              env=dict(cluster.env, PYTHONPATH=str(Path(__file__).resolve().parents[1])),
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    finally:
        cluster.stop()
    files = dict(json.loads(done.stdout.strip().splitlines()[-1]))
    remote = {name for name in files if name.startswith("127.0.0.2/")}
    assert "127.0.0.2/raylet.out" in remote and "127.0.0.2/planted.log" in remote
    assert (out / "127.0.0.2/planted.log").read_text() == "AWS_SECRET_ACCESS_KEY=[REDACTED]\nhello\n"
    assert all(size <= 0.05 * 1024 * 1024 for size in files.values())

"""training.ops.launch: RayJob naming, --dry-run, and following a RayJob through the Kubernetes API.

No Kubernetes API server can run on the CI machine (no container engine, no kube-apiserver
binary), so the launcher's calls go to tests/kube_standin.py: a small local HTTP server that
serves the RayJob create/get/list/watch/delete and pod list/log endpoints in the API server's
wire format, with status transitions as KubeRay 1.7 reports them. The launcher uses the real
`kubernetes` client and a generated kubeconfig; what it sends is validated against the KubeRay
RayJob CRD (tests/k8s/k8s_support.py). A real cluster still has to show the operator's side.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from training.ops.launch import cli, naming

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "k8s"))

import k8s_support as k  # noqa: E402
import kube_standin as kube  # noqa: E402

NS = "ml"


@pytest.fixture(autouse=True)
def _no_in_cluster(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def status_lines(out: str):
    return [ln.split("] ", 1)[1] for ln in out.splitlines() if ln.startswith("[") and "jobDeploymentStatus" in ln]


# --- naming and --dry-run (no cluster) -------------------------------------------------------

@pytest.mark.parametrize("prefix", ["ray-training-", "demo-ray-training-", "A_Team.Forecasting-Release-With-A-Long-Name-",
                                    "9lives", "", "x" * 80])
def test_job_names_are_unique_valid_and_fit_kuberay(prefix):
    names = {naming.job_name(prefix, naming.new_run_id()) for _ in range(200)}
    assert len(names) == 200
    for name in names:
        assert len(name) <= 47 and k.DNS1035.match(name), name


def test_dry_run_prints_a_valid_rayjob_with_the_local_overrides(capsys):
    code, out, err = run(capsys, "--dry-run", "workload=xgboost", "data.synthetic.rows=5000")
    assert code == 0, err
    job = yaml.safe_load(out)
    name, labels = job["metadata"]["name"], job["metadata"]["labels"]
    assert name.startswith("ray-training-") and len(name) <= 47 and k.DNS1035.match(name)
    assert name == f"ray-training-{labels[naming.RUN_ID_LABEL]}"
    assert labels[naming.LAUNCHER_LABEL] == "training.launch"
    entry = job["spec"]["entrypoint"]
    assert "tracking=server workload=xgboost data.synthetic.rows=5000" in entry
    assert entry.endswith(f"run_name={name}")  # the MLflow run carries the RayJob's name
    assert not k.validation_errors(job), k.validation_errors(job)
    # The release's objects (ServiceAccount, MLflow, token Secret) are the ones it runs with.
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert head["serviceAccountName"] == "ray-training"
    assert job["spec"]["rayClusterSpec"]["authOptions"]["secretName"] == "ray-training-ray-auth"


def test_dry_run_takes_release_values_and_sets(capsys, tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"workerGroups": {"cpu": {"replicas": 3, "maxReplicas": 4}}}))
    code, out, err = run(capsys, "--dry-run", "--release", "train", "-f", str(values),
                         "--set", "train.cpusPerWorker=2", "workload=lightgbm")
    assert code == 0, err
    job = yaml.safe_load(out)
    assert job["metadata"]["name"].startswith("train-ray-training-")
    assert "cluster.num_workers=3 cluster.cpus_per_worker=2" in job["spec"]["entrypoint"]


def test_dry_run_with_retries_resumes_the_run_named_after_the_rayjob(capsys):
    """job.backoffLimit through the launcher: the chart's generateName render is allowed (the
    launcher names the run when it names the RayJob), and a KubeRay retry reruns the same run_name."""
    code, out, err = run(capsys, "--dry-run", "--set", "job.backoffLimit=2", "workload=xgboost")
    assert code == 0, err
    job = yaml.safe_load(out)
    assert job["spec"]["backoffLimit"] == 2
    entry = job["spec"]["entrypoint"]
    assert entry.count("run_name=") == 1 and entry.endswith(f"run_name={job['metadata']['name']}")
    assert not k.validation_errors(job), k.validation_errors(job)


@pytest.mark.parametrize("argv, message", [
    (["workload.nope=1"], "Key 'nope' not in 'GBDTWorkloadConfig'"),
    (["cluster.num_workers=3"], 'job.overrides: "cluster.num_workers=3" is derived by the chart'),
    (["--set", "workerGroups.cpu.replicas=9"], "workerGroups.cpu.replicas=9: must lie between"),
    (["run_name=mine"], "run_name is set by the launcher"),
    (["--manifest", "/nonexistent.yaml"], "--manifest /nonexistent.yaml"),
    (["--timeout", "-5"], "--timeout -5: must be >= 0 seconds (0: wait until the RayJob ends)"),
    (["--keep-finished", "-3"], "--keep-finished -3: must be >= 0 (or left out: prune nothing)"),
    (["--no-follow", "--keep-finished", "3"], "--keep-finished needs the run followed: --no-follow returns"),
    (["--no-follow", "--timeout", "60"], "--timeout needs the run followed: --no-follow returns"),
    (["--set", "image.tag=@sha"], "--set image.tag=@sha: not a YAML value"),
    (["--set", "workerGroups=4", "--set", "workerGroups.cpu.replicas=2"],
     "--set workerGroups.cpu.replicas=2: workerGroups is already set to 4, not a map"),
    (["--set", "job.submissionMode=InteractiveMode"], "submissionMode InteractiveMode waits for a job submitted by hand"),
    (["--chart", "/nonexistent/ray-training"], "--chart /nonexistent/ray-training: not a Helm chart (no Chart.yaml); "
                                               "the default is the checkout's charts/ray-training: with the installed "
                                               "package, pass --chart (or set RAY_TRAINING_CHART)"),
])
def test_bad_input_fails_before_the_cluster_with_one_line(capsys, argv, message):
    code, out, err = run(capsys, "--dry-run", *argv)
    assert code == 2
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1, err


def test_a_bad_flag_is_one_line_exit_2(capsys):
    """argparse's own error (usage, then the error) is two lines and more: one, as everywhere."""
    with pytest.raises(SystemExit) as exited:
        cli.main(["--timeout", "10m", "workload=xgboost"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip() == ("error: argument --timeout: invalid int value: '10m' "
                                               "(see python -m training.ops.launch --help)")


@pytest.mark.parametrize("name, text, message", [
    ("values.yaml", "- a\n- b\n", "--values {p}: expected a mapping of chart values, got a list"),
    ("job.yaml", "kind: RayJob\nmetadata: foo\n", "--manifest {p}: the RayJob's metadata and spec must be mappings"),
    ("job.yaml", "kind: RayJob\nspec: {entrypoint: \"python -m training 'x\"}\n",
     "--manifest {p}: spec.entrypoint is not a command line (No closing quotation)"),
    ("job.yaml", "kind: RayJob\nspec: {entrypoint: }\n",
     "--manifest {p}: spec.entrypoint must be the job's command line, got None"),
], ids=["values file of a list", "manifest metadata not a map", "entrypoint with an open quote", "no entrypoint"])
def test_a_malformed_values_file_or_manifest_is_one_line(capsys, tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    flag = "-f" if name == "values.yaml" else "--manifest"
    code, out, err = run(capsys, "--dry-run", flag, str(path))
    assert code == 2 and err.strip() == f"error: {message.format(p=path)}", err


# --- against the API stand-in ---------------------------------------------------------------

def launch_against(standin, tmp_path, capsys, *argv):
    kc = standin.kubeconfig(tmp_path, namespace=NS)
    return run(capsys, "--kubeconfig", str(kc), *argv)


def test_success_follows_status_and_logs_to_exit_0(capsys, tmp_path):
    # The operator sets each state 20 ms after the last and a read takes 0.5 s: the launcher
    # reports them all, in order, because it watches from the RayJob it created.
    with kube.StandIn(kube.SUCCESS, step_s=0.02, get_delay_s=0.5) as api:
        code, out, err = launch_against(api, tmp_path, capsys, "workload=xgboost")
    assert code == 0, err
    sent = api.created[0]
    name = sent["metadata"]["name"]
    assert not k.validation_errors(sent), k.validation_errors(sent)   # what reached the API server
    assert f"created RayJob {NS}/{name}" in out and f"RayJob {NS}/{name} succeeded" in out
    assert status_lines(out) == ["jobDeploymentStatus=Initializing jobStatus=-",
                                 "jobDeploymentStatus=Running jobStatus=PENDING",
                                 "jobDeploymentStatus=Running jobStatus=RUNNING",
                                 "jobDeploymentStatus=Complete jobStatus=SUCCEEDED"]
    # The submitter pod's log (`ray job submit` tails the driver) came through.
    assert f"| Job '{name}-jk4q2' submitted successfully" in out
    # (the client spells the flag "true" or "True" by version; the API server's bool parsing takes both)
    assert any(r[:2] == ("GET", f"/api/v1/namespaces/{NS}/pods/{name}-sub/log") and r[2].get("follow", "").lower() == "true"
               for r in api.requests), api.requests


def test_failed_exits_1_with_kuberays_reason(capsys, tmp_path):
    with kube.StandIn(kube.APP_FAILED) as api:
        code, out, err = launch_against(api, tmp_path, capsys, "--no-logs", "workload=xgboost")
    assert code == 1
    assert "failed: AppFailed: Job entrypoint command failed with exit code 1" in err
    assert status_lines(out)[-1] == "jobDeploymentStatus=Failed jobStatus=FAILED (AppFailed)"


def test_validation_failed_exits_2_with_the_operators_message(capsys, tmp_path):
    with kube.StandIn(kube.VALIDATION_FAILED) as api:
        code, out, err = launch_against(api, tmp_path, capsys, "--no-logs", "workload=xgboost")
    assert code == 2
    assert "KubeRay rejected the RayJob: ValidationFailed: The RayJob metadata is invalid" in err


def test_a_dropped_watch_and_an_expired_one_are_re_established(capsys, tmp_path):
    """First watch breaks mid-stream (no terminating chunk), the second answers 410 Gone."""
    with kube.StandIn(kube.SUCCESS, step_s=0.3, drop_first_watch=True, gone_second_watch=True) as api:
        code, out, err = launch_against(api, tmp_path, capsys, "--no-logs", "workload=xgboost")
    assert code == 0, err
    assert api.watches >= 3
    assert status_lines(out)[-1] == "jobDeploymentStatus=Complete jobStatus=SUCCEEDED"
    # Every state is reported once, in order, despite the reconnects.
    assert len(status_lines(out)) == len(set(status_lines(out)))


def test_a_log_stream_that_breaks_mid_line_is_resumed_without_a_lost_or_repeated_line(capsys, tmp_path):
    """The submitter's log stream drops while its pod runs (a proxy's idle timeout): the launcher
    opens it again from shortly before its last line and skips what it has printed, though that
    line and the next share one timestamp."""
    with kube.StandIn(kube.SUCCESS, step_s=0.5, drop_first_log=True) as api:
        code, out, err = launch_against(api, tmp_path, capsys, "workload=xgboost")
    assert code == 0, err
    name = api.created[0]["metadata"]["name"]
    shown = [line[2:] for line in out.splitlines() if line.startswith("| ")]
    assert shown == [line.format(name=name) for line in kube.LOG_LINES], out
    reads = [q for _, path, q in api.requests if path.endswith("/log")]
    assert len(reads) >= 2 and all(q.get("timestamps", "").lower() == "true" for q in reads), reads
    assert "sinceSeconds" not in reads[0] and int(reads[1]["sinceSeconds"]) >= 30, reads


def test_timeout_deletes_the_rayjob_and_exits_3(capsys, tmp_path):
    with kube.StandIn(kube.STUCK) as api:
        code, out, err = launch_against(api, tmp_path, capsys, "--no-logs", "--timeout", "2", "workload=xgboost")
    assert code == 3
    assert api.deleted == [api.created[0]["metadata"]["name"]]
    assert "did not finish within 2s; deleted it" in err


def test_an_api_that_refuses_deletes_leaves_a_warning_or_a_clear_timeout(capsys, tmp_path):
    """RBAC without the delete verb: after a successful run, pruning says it could not and the
    run still exits 0; on a timeout, the line says the RayJob keeps running."""
    with kube.StandIn(kube.SUCCESS, refuse_delete=True) as api:
        api.add_job(NS, {"apiVersion": "ray.io/v1", "kind": "RayJob",
                         "metadata": {"name": "ray-training-old", "creationTimestamp": "2026-01-01T03:00:00Z",
                                      "labels": {naming.LAUNCHER_LABEL: naming.LAUNCHER,
                                                 "app.kubernetes.io/instance": "ray-training"}},
                         "status": {"jobDeploymentStatus": "Complete"}})
        code, out, err = launch_against(api, tmp_path, capsys, "--no-logs", "--keep-finished", "0", "workload=xgboost")
    assert code == 0 and "succeeded" in out, err
    assert "warning: could not prune finished RayJobs: cannot delete RayJob ml/" in err and "403 Forbidden" in err
    with kube.StandIn(kube.STUCK, refuse_delete=True) as api:
        code, out, err = launch_against(api, tmp_path, capsys, "--no-logs", "--timeout", "2", "workload=xgboost")
    assert code == 3 and "did not finish within 2s; it keeps running (cannot delete RayJob" in err, err


def test_an_api_lost_while_following_is_one_line_saying_the_rayjob_keeps_running(capsys, tmp_path, monkeypatch):
    from training.ops.launch import follow

    monkeypatch.setattr(follow, "RETRY_DELAYS_S", (0.1, 0.1))
    with kube.StandIn(kube.STUCK, vanish_after_create=True) as api:
        code, out, err = launch_against(api, tmp_path, capsys, "--no-logs", "workload=xgboost")
    name = api.created[0]["metadata"]["name"]
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: lost the Kubernetes API while following {NS}/{name}: ") and err.strip().endswith(
        f"; RayJob {NS}/{name} keeps running (kubectl -n {NS} delete rayjob {name} to stop it)"), err


def test_with_timeout_an_api_lost_while_following_still_ends_as_a_timeout(capsys, tmp_path):
    """--timeout passes while the API does not answer: exit 3, as documented, and the line says
    the RayJob could not be deleted."""
    with kube.StandIn(kube.STUCK, vanish_after_create=True) as api:
        code, out, err = launch_against(api, tmp_path, capsys, "--no-logs", "--timeout", "2", "workload=xgboost")
    name = api.created[0]["metadata"]["name"]
    assert code == 3, err
    assert f"error: RayJob {NS}/{name} did not finish within 2s; it keeps running (cannot delete RayJob" in err, err


def test_a_role_without_watch_is_one_line_not_a_loop_of_requests(capsys, tmp_path):
    with kube.StandIn(kube.STUCK, refuse_watch=True) as api:
        code, out, err = launch_against(api, tmp_path, capsys, "--no-logs", "--timeout", "5", "workload=xgboost")
    name = api.created[0]["metadata"]["name"]
    assert code == 2 and err.startswith(f"error: not allowed to watch RayJob {NS}/{name}: "), err
    assert "keeps running" in err and api.watches == 0 and len(api.requests) < 5, api.requests


def test_sigterm_while_following_says_the_rayjob_keeps_running(tmp_path):
    """A launcher pod stopped or a CI job cancelled (SIGTERM), in its own process."""
    with kube.StandIn(kube.STUCK) as api:
        proc = subprocess.Popen([sys.executable, "-m", "training.ops.launch", "--no-logs", "--kubeconfig",
                                 str(api.kubeconfig(tmp_path, namespace=NS)), "workload=xgboost"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=Path(__file__).resolve().parents[1])
        first = proc.stdout.readline()
        assert first.startswith(f"created RayJob {NS}/"), first + proc.stderr.read()
        while api.watches == 0:  # following
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    name = api.created[0]["metadata"]["name"]
    assert proc.returncode == 143, err
    assert err.strip() == (f"error: terminated (SIGTERM); RayJob {NS}/{name} keeps running "
                           f"(kubectl -n {NS} delete rayjob {name} to stop it)"), err
    assert api.deleted == []


def test_no_follow_creates_and_returns(capsys, tmp_path):
    with kube.StandIn(kube.STUCK) as api:
        code, out, err = launch_against(api, tmp_path, capsys, "--no-follow", "workload=xgboost")
    assert code == 0 and len(api.created) == 1
    assert f"kubectl -n {NS} get rayjob" in out


def test_in_a_pod_with_kubeconfig_set_the_launch_goes_where_it_points(capsys, tmp_path, monkeypatch):
    """A CI runner or a notebook that runs in a pod: $KUBECONFIG wins over the pod's own account,
    as with kubectl (this process has no service account token, so in-cluster would fail)."""
    with kube.StandIn(kube.STUCK) as api:
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig(tmp_path, namespace=NS)))
        code, out, err = run(capsys, "--no-follow", "workload=xgboost")
    assert code == 0 and len(api.created) == 1, err


def test_scheduled_launch_from_the_cronjob_manifest(capsys, tmp_path):
    """What the retraining CronJob runs: the ConfigMap's RayJob, status only, old runs pruned,
    and only RayJob endpoints called (its Role allows nothing else)."""
    objs = k.render_objects(k.load_values(k.CI_VALUES_DIR / "schedule-cronjob-values.yaml"))
    cm = next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-retrain"))
    manifest = tmp_path / "rayjob.yaml"
    manifest.write_text(cm["data"]["rayjob.yaml"])
    with kube.StandIn(kube.SUCCESS) as api:
        for i, state in enumerate(["Complete", "Failed", "Complete"]):
            api.add_job(NS, {"apiVersion": "ray.io/v1", "kind": "RayJob",
                             "metadata": {"name": f"demo-ray-training-old{i}",
                                          "creationTimestamp": f"2026-01-0{i + 1}T03:00:00Z",
                                          "labels": {naming.LAUNCHER_LABEL: naming.LAUNCHER,
                                                     "app.kubernetes.io/instance": "demo"}},
                             "status": {"jobDeploymentStatus": state}})
        api.add_job(NS, {"apiVersion": "ray.io/v1", "kind": "RayJob",  # not the launcher's: untouched
                         "metadata": {"name": "someone-elses", "labels": {"app.kubernetes.io/instance": "demo"}},
                         "status": {"jobDeploymentStatus": "Complete"}})
        args = [a.split("=", 1) for a in k.one(objs, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
                ["containers"][0]["args"]]
        argv = [p for a in args for p in a if p != "/etc/ray-training/rayjob.yaml"]
        argv[argv.index("--manifest") + 1:argv.index("--manifest") + 1] = [str(manifest)]
        assert "--no-logs" in argv and "--keep-finished" in argv
        code, out, err = launch_against(api, tmp_path, capsys, *argv)
    assert code == 0, err
    sent = api.created[0]
    assert sent["metadata"]["labels"]["ray-training/trigger"] == "schedule"
    assert not k.validation_errors(sent), k.validation_errors(sent)
    # keepFinished=3 in that values file: this run + the two newest old ones stay.
    assert api.deleted == ["demo-ray-training-old0"]
    assert all(path.startswith("/apis/ray.io/v1/namespaces/ml/rayjobs") for _, path, _ in api.requests)


def test_a_manifest_without_a_release_label_prunes_nothing(capsys, tmp_path):
    """--keep-finished selects the release's RayJobs by app.kubernetes.io/instance; a hand-made
    manifest without it must not take another release's finished RayJobs with it."""
    job = k.one(k.render_objects({}), "RayJob")
    del job["metadata"]["labels"]["app.kubernetes.io/instance"]
    manifest = tmp_path / "rayjob.yaml"
    manifest.write_text(yaml.safe_dump(job))
    with kube.StandIn(kube.SUCCESS) as api:
        api.add_job(NS, {"apiVersion": "ray.io/v1", "kind": "RayJob",
                         "metadata": {"name": "other-release-old", "creationTimestamp": "2026-01-01T03:00:00Z",
                                      "labels": {naming.LAUNCHER_LABEL: naming.LAUNCHER,
                                                 "app.kubernetes.io/instance": "other"}},
                         "status": {"jobDeploymentStatus": "Complete"}})
        code, out, err = launch_against(api, tmp_path, capsys, "--no-logs", "--keep-finished", "0",
                                        "--manifest", str(manifest))
    assert code == 0 and "succeeded" in out, err
    assert api.deleted == [] and "warning: not pruning: the RayJob has no app.kubernetes.io/instance label" in err


def test_unreachable_api_is_one_line_exit_2(capsys, tmp_path):
    kc = tmp_path / "kc"
    kc.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "x", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "x", "user": "u"}}]}))
    code, out, err = run(capsys, "--kubeconfig", str(kc), "workload=xgboost")
    assert code == 2 and err.startswith("error: cannot reach the Kubernetes API"), err


def test_a_kubeconfig_that_is_not_yaml_is_one_line_exit_2(capsys, tmp_path):
    kc = tmp_path / "kc"
    kc.write_text("apiVersion: v1\nclusters: [\n  - name: x\n")
    code, out, err = run(capsys, "--kubeconfig", str(kc), "workload=xgboost")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: the Kubernetes config {kc} is not valid YAML (line "), err


# --- Ctrl-C before the run is followed -------------------------------------------------------

def run_interrupted(capsys, *argv):
    """`run` as in the launcher's own process, where Ctrl-C raises KeyboardInterrupt (a handler an
    earlier test left in this process, such as a Ray Tune search's, is set aside); a Ctrl-C the
    launcher lets through fails the test, not the whole session."""
    import signal

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return run(capsys, *argv)
    except KeyboardInterrupt:
        pytest.fail("the launcher let Ctrl-C through (a traceback for the user)")
    finally:
        signal.signal(signal.SIGINT, before)


def _interrupt_main_thread() -> None:
    """Ctrl-C as the terminal delivers it, to the thread that waits on the API (the main one)."""
    import signal
    import threading

    signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)


def test_ctrl_c_while_creating_says_the_rayjob_may_exist(capsys, tmp_path):
    """The create request has reached the API server when the user interrupts: whether the RayJob
    exists is not known, so the line says how to look, not that nothing was made."""
    with kube.StandIn(kube.SUCCESS, on_create=_interrupt_main_thread) as api:
        code, out, err = run_interrupted(capsys, "--kubeconfig", str(api.kubeconfig(tmp_path, namespace=NS)),
                                         "--no-logs", "workload=xgboost")
    name = api.created[0]["metadata"]["name"]
    assert code == 130
    assert err.strip() == (f"error: interrupted while creating RayJob {NS}/{name}; it may have been created "
                           f"(kubectl -n {NS} get rayjob {name})"), err
    assert "created RayJob" not in out


def test_ctrl_c_while_connecting_is_one_line_and_creates_nothing(capsys, tmp_path):
    """Interrupted while the kubeconfig is read (a FIFO here, which holds the read until the test
    interrupts it, as a slow credential source would): one line, no traceback, nothing sent."""
    import os
    import threading

    fifo = tmp_path / "kubeconfig"
    os.mkfifo(fifo)

    def interrupt_once_read():
        with open(fifo, "w"):  # returns once the launcher has opened it to read
            _interrupt_main_thread()

    writer = threading.Thread(target=interrupt_once_read, daemon=True)
    writer.start()
    code, out, err = run_interrupted(capsys, "--kubeconfig", str(fifo), "workload=xgboost")
    writer.join(timeout=10)
    assert code == 130 and err.strip() == "error: interrupted; no RayJob was created", err

"""`python -m training.launch [options] [OVERRIDES...]`: run a workload as a KubeRay RayJob and follow it.

The RayJob comes from the chart (charts/ray-training, rendered with the same Hydra overrides a
local run takes) or from a manifest the chart rendered earlier (`--manifest`, what the scheduled
retraining CronJob uses). Each launch gets its own run id and RayJob name; the launcher creates
it through the Kubernetes API, follows jobDeploymentStatus/jobStatus (re-watching when a watch
drops) and the submitter's log, and exits 0 on success or non-zero with KubeRay's reason.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import re
import secrets
import shlex
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, TextIO

import yaml

from training.errors import EXIT_USER_ERROR, UserError

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1          # the run failed on the cluster (KubeRay's reason is printed)
EXIT_TIMEOUT = 3         # --timeout passed; the RayJob was deleted
EXIT_INTERRUPTED = 130   # Ctrl-C: the RayJob keeps running

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayjobs"
RUN_ID_LABEL = "ray-training/run-id"
LAUNCHER_LABEL = "ray-training/launched-by"
LAUNCHER = "training.launch"
MAX_NAME = 47  # KubeRay 1.7: longer RayJob names end in ValidationFailed, not a rejection
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DEFAULT_CHART = Path(__file__).resolve().parent.parent / "charts" / "ray-training"
IN_CLUSTER_NS = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
TERMINAL_DEPLOYMENT = {"Complete", "Failed", "ValidationFailed"}


# --- naming -------------------------------------------------------------------------------

def new_run_id() -> str:
    """UTC time + 6 random base-36 characters: sortable, unique per launch, a valid label value."""
    rand = "".join(secrets.choice("0123456789abcdefghijklmnopqrstuvwxyz") for _ in range(6))
    return f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{rand}"


def job_name(prefix: str, run_id: str) -> str:
    """`<prefix>-<run id>`, cut to KubeRay's 47 characters and made a DNS-1035 label."""
    clean = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")
    if not clean or not clean[0].isalpha():
        clean = f"rt-{clean}".rstrip("-")
    clean = clean[: MAX_NAME - len(run_id) - 1].rstrip("-")
    name = f"{clean}-{run_id}"
    assert len(name) <= MAX_NAME and DNS1035.match(name), name
    return name


# --- the RayJob: from the chart or a rendered manifest --------------------------------------

def _merge(base: Dict[str, Any], extra: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_set(items: List[str]) -> Dict[str, Any]:
    """`--set a.b=value` (value parsed as YAML, like `helm --set` for scalars and [lists])."""
    values: Dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected KEY=VALUE (e.g. --set workerGroups.cpu.replicas=4)")
        node = values
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(raw) if raw else ""
    return values


def render_rayjob(chart: Path, values_files: List[Path], sets: List[str], release: str,
                  overrides: List[str]) -> Dict[str, Any]:
    """The chart's RayJob for these values and overrides (metadata.generateName = the name prefix)."""
    try:
        import helm_python
    except ImportError:
        raise UserError("rendering the chart needs helm-python-sdk (pip install '.[k8s-verify]'); "
                        "or pass --manifest with a RayJob the chart rendered") from None
    if not (chart / "Chart.yaml").is_file():
        raise UserError(f"--chart {chart}: not a Helm chart (no Chart.yaml)")
    values: Dict[str, Any] = {}
    for f in values_files:
        try:
            values = _merge(values, yaml.safe_load(Path(f).read_text()) or {})
        except (OSError, yaml.YAMLError) as exc:
            raise UserError(f"--values {f}: {str(exc).splitlines()[0]}") from None
    values = _merge(values, parse_set(sets))
    job = {"enabled": True, "generateName": True, "name": ""}
    if overrides:
        job["overrides"] = list(overrides)
    values = _merge(values, {"job": job, "tests": {"enabled": False}})
    try:
        with helm_python.Chart.load(str(chart)) as c:
            rendered = c.render(values, name=release, namespace="default")
    except Exception as exc:  # helm_python's render/values errors: one line for the user
        raise UserError(f"chart {chart.name}: {_helm_message(exc)}") from None
    for path, text in rendered.items():
        if path.endswith("templates/rayjob.yaml"):
            for doc in yaml.safe_load_all(text):
                if doc and doc.get("kind") == "RayJob":
                    return doc
    raise UserError(f"chart {chart} rendered no RayJob")


def _helm_message(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = "; ".join(lines)
    return re.sub(r"^execution error at \([^)]*\): ", "", text)


def load_manifest(path: Path) -> Dict[str, Any]:
    try:
        docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"--manifest {path}: {str(exc).splitlines()[0]}") from None
    jobs = [d for d in docs if d.get("kind") == "RayJob"]
    if len(jobs) != 1:
        raise UserError(f"--manifest {path}: expected one RayJob, found {len(jobs)}")
    return jobs[0]


def prepare(manifest: Dict[str, Any], run_id: str) -> Dict[str, Any]:
    """A copy named for this run, labelled with its run id, its training run named after the RayJob."""
    job = copy.deepcopy(manifest)
    md = job.setdefault("metadata", {})
    prefix = md.pop("generateName", None) or md.get("name") or "ray-training"
    name = job_name(prefix, run_id)
    md["name"] = name
    md.pop("namespace", None)
    md.setdefault("labels", {}).update({RUN_ID_LABEL: run_id, LAUNCHER_LABEL: LAUNCHER})
    spec = job.setdefault("spec", {})
    entry = spec.get("entrypoint", "")
    # The MLflow run shares the RayJob's name; a RayJob retry (backoffLimit) reuses it and
    # so resumes from that run's checkpoints instead of starting over.
    if entry and not any(t.startswith("run_name=") for t in shlex.split(entry)):
        spec["entrypoint"] = f"{entry} run_name={name}"
    return job


def check_overrides(overrides: List[str]) -> None:
    """The overrides compose locally (unknown keys, wrong types) before anything reaches the cluster."""
    for o in overrides:
        if o.split("=", 1)[0].lstrip("+~") == "run_name":
            raise UserError("run_name is set by the launcher (the RayJob's name); remove the override")
    from training import config

    config.load(list(overrides))


# --- the Kubernetes side --------------------------------------------------------------------

@dataclass
class Outcome:
    code: int
    message: str


def connect(kubeconfig: Optional[str], context: Optional[str], namespace: Optional[str]):
    """(ApiClient, namespace) from in-cluster config or a kubeconfig (KUBECONFIG, ~/.kube/config)."""
    from kubernetes import client, config as kconfig

    try:
        if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            kconfig.load_incluster_config()
            ns = namespace or (IN_CLUSTER_NS.read_text().strip() if IN_CLUSTER_NS.exists() else "default")
            return client.ApiClient(), ns
        api = kconfig.new_client_from_config(config_file=kubeconfig, context=context)
        if namespace:
            return api, namespace
        _, active = kconfig.list_kube_config_contexts(config_file=kubeconfig)
        if context:
            contexts, _ = kconfig.list_kube_config_contexts(config_file=kubeconfig)
            active = next((c for c in contexts if c["name"] == context), active)
        return api, (active or {}).get("context", {}).get("namespace") or "default"
    except (kconfig.ConfigException, OSError, TypeError) as exc:
        raise UserError(f"no Kubernetes config: {str(exc).splitlines()[0]} "
                        "(set KUBECONFIG, --kubeconfig or run in a pod)") from None


def _api_message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    try:
        return json.loads(body)["message"]
    except Exception:
        return f"{getattr(exc, 'status', '')} {getattr(exc, 'reason', '') or exc}".strip()


def create(api, namespace: str, job: Dict[str, Any]) -> Dict[str, Any]:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    try:
        return client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job)
    except ApiException as exc:
        hint = " (is the KubeRay operator installed?)" if exc.status == 404 else ""
        raise UserError(f"cannot create RayJob {namespace}/{job['metadata']['name']}: "
                        f"{_api_message(exc)}{hint}") from None
    except Exception as exc:  # connection refused, TLS, DNS
        raise UserError(f"cannot reach the Kubernetes API: {str(exc).splitlines()[0][:200]}") from None


def outcome(obj: Dict[str, Any]) -> Optional[Outcome]:
    """The run's result once KubeRay reports a terminal state; None while it is in progress."""
    st = obj.get("status") or {}
    dep, job = st.get("jobDeploymentStatus", ""), st.get("jobStatus", "")
    reason, message = st.get("reason", ""), (st.get("message") or "").strip()
    detail = ": ".join(p for p in (reason, message) if p)
    if dep == "Complete":
        if job == "SUCCEEDED":
            return Outcome(EXIT_OK, "succeeded")
        return Outcome(EXIT_FAILED, f"jobStatus {job or 'unknown'}" + (f" ({detail})" if detail else ""))
    if dep == "Failed":
        return Outcome(EXIT_FAILED, detail or f"jobDeploymentStatus Failed, jobStatus {job or 'unknown'}")
    if dep == "ValidationFailed":
        return Outcome(EXIT_USER_ERROR, f"KubeRay rejected the RayJob: {detail or 'ValidationFailed'}")
    return None


class Follower:
    """Follows one RayJob's status with watches (re-established when they drop) and its submitter log."""

    def __init__(self, api, namespace: str, name: str, out: Optional[TextIO] = None, watch_timeout: int = 60):
        from kubernetes import client

        self.api, self.ns, self.name, self.out = api, namespace, name, out or sys.stdout
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.watch_timeout = watch_timeout
        self.last_state: Optional[tuple] = None
        self.reconnects = 0
        self._stop = threading.Event()

    def say(self, text: str) -> None:
        print(f"[{self.name}] {text}", file=self.out, flush=True)

    def _report(self, obj: Dict[str, Any]) -> None:
        st = obj.get("status") or {}
        state = (st.get("jobDeploymentStatus", ""), st.get("jobStatus", ""))
        if state != self.last_state and any(state):
            self.last_state = state
            extra = f" ({st['reason']})" if st.get("reason") else ""
            self.say(f"jobDeploymentStatus={state[0] or '-'} jobStatus={state[1] or '-'}{extra}")

    def get(self) -> Optional[Dict[str, Any]]:
        from kubernetes.client.rest import ApiException

        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, self.name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def status(self, deadline: Optional[float]) -> Outcome:
        """Block until the RayJob is terminal (or the deadline passes): its Outcome."""
        from kubernetes import watch
        from kubernetes.client.rest import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

        obj = self._get_retrying(deadline)
        while True:
            if obj is None:
                return Outcome(EXIT_FAILED, "the RayJob was deleted before it finished")
            self._report(obj)
            done = outcome(obj)
            if done:
                return done
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return Outcome(EXIT_TIMEOUT, "timed out")
            seconds = int(max(1, min(self.watch_timeout, left if left is not None else self.watch_timeout)))
            w = watch.Watch()
            try:
                for event in w.stream(self.custom.list_namespaced_custom_object, GROUP, VERSION, self.ns, PLURAL,
                                      field_selector=f"metadata.name={self.name}",
                                      resource_version=obj["metadata"].get("resourceVersion"),
                                      timeout_seconds=seconds, _request_timeout=seconds + 30):
                    if event["type"] == "DELETED":
                        last = event["object"]
                        return outcome(last) or Outcome(EXIT_FAILED, "the RayJob was deleted before it finished")
                    obj = event["object"]
                    self._report(obj)
                    if outcome(obj):
                        w.stop()
                        return outcome(obj)
            except ApiException as exc:  # 410 Gone (resourceVersion too old) and friends: re-read, re-watch
                log.debug("watch ended: %s", exc)
            except (Urllib3Error, OSError) as exc:  # the connection dropped mid-stream
                log.debug("watch dropped: %s", exc)
            self.reconnects += 1
            obj = self._get_retrying(deadline)

    def _get_retrying(self, deadline: Optional[float]) -> Optional[Dict[str, Any]]:
        """GET with a few retries: an API server restart must not end a day-long run's launcher."""
        from kubernetes.client.rest import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

        delay = 1.0
        for attempt in range(6):
            try:
                return self.get()
            except (ApiException, Urllib3Error, OSError) as exc:
                if isinstance(exc, ApiException) and exc.status in (401, 403):
                    raise UserError(f"not allowed to read RayJob {self.ns}/{self.name}: {_api_message(exc)}") from None
                if attempt == 5 or (deadline is not None and time.monotonic() + delay > deadline):
                    raise UserError(f"lost the Kubernetes API while following {self.ns}/{self.name}: "
                                    f"{str(exc).splitlines()[0][:200]}") from None
                time.sleep(delay)
                delay = min(delay * 2, 15)
        return None

    # -- logs --------------------------------------------------------------------------------

    def follow_logs(self, submission_mode: str) -> threading.Thread:
        t = threading.Thread(target=self._logs, args=(submission_mode,), daemon=True, name="rayjob-logs")
        t.start()
        return t

    def stop_logs(self) -> None:
        self._stop.set()

    def _log_source(self, mode: str):
        """(label selector, container) of the pod that runs `ray job submit` and tails the driver."""
        if mode == "K8sJobMode":
            return f"batch.kubernetes.io/job-name={self.name}", None
        if mode == "SidecarMode":
            obj = self.get() or {}
            cluster = (obj.get("status") or {}).get("rayClusterName")
            return (f"ray.io/cluster={cluster},ray.io/node-type=head", "ray-job-submitter") if cluster else (None, None)
        return None, None

    def _logs(self, mode: str) -> None:
        from kubernetes.client.rest import ApiException

        if mode not in ("K8sJobMode", "SidecarMode"):
            self.say(f"logs: submissionMode {mode} has no submitter pod; see the Ray dashboard for the driver log")
            return
        streamed = set()
        while True:
            final = self._stop.is_set()  # the run ended: one last pass for pods not streamed yet
            try:
                selector, container = self._log_source(mode)
                pods = self.core.list_namespaced_pod(self.ns, label_selector=selector).items if selector else []
                for pod in sorted(pods, key=lambda p: p.metadata.name):
                    if pod.metadata.name in streamed or (pod.status and pod.status.phase == "Pending"):
                        continue
                    streamed.add(pod.metadata.name)
                    self._stream(pod.metadata.name, container)
            except ApiException as exc:
                if exc.status in (401, 403):
                    self.say(f"logs: not allowed ({_api_message(exc)}); following the status only")
                    return
                log.debug("logs: %s", exc)
            except Exception as exc:  # a dropped log stream is not a failed run
                log.debug("logs: %s", exc)
            if final:
                return
            self._stop.wait(1.0)

    def _stream(self, pod: str, container: Optional[str]) -> None:
        kwargs = {"container": container} if container else {}
        resp = self.core.read_namespaced_pod_log(pod, self.ns, follow=True, _preload_content=False, **kwargs)
        buf = b""
        try:
            for chunk in resp.stream(4096):
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    print(f"| {line.decode(errors='replace')}", file=self.out, flush=True)
            if buf:
                print(f"| {buf.decode(errors='replace')}", file=self.out, flush=True)
        finally:
            resp.release_conn()


def delete(api, namespace: str, name: str) -> bool:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    try:
        client.CustomObjectsApi(api).delete_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, propagation_policy="Background")
        return True
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise


def prune(api, namespace: str, job: Dict[str, Any], keep: int, out: TextIO) -> List[str]:
    """Delete finished launcher-made RayJobs of the same release beyond the `keep` newest."""
    from kubernetes import client

    instance = (job["metadata"].get("labels") or {}).get("app.kubernetes.io/instance")
    selector = f"{LAUNCHER_LABEL}={LAUNCHER}" + (f",app.kubernetes.io/instance={instance}" if instance else "")
    items = client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, label_selector=selector)["items"]
    finished = [o for o in items if outcome(o) is not None]
    finished.sort(key=lambda o: o["metadata"].get("creationTimestamp", ""), reverse=True)
    removed = []
    for o in finished[keep:]:
        if delete(api, namespace, o["metadata"]["name"]):
            removed.append(o["metadata"]["name"])
    if removed:
        print(f"pruned {len(removed)} finished RayJob(s): {', '.join(removed)}", file=out, flush=True)
    return removed


# --- the command --------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m training.launch",
        description="Run a training workload as a KubeRay RayJob and follow it to the end. Positional "
                    "arguments are the Hydra overrides a local `python -m training` run takes.",
        epilog="exit codes: 0 succeeded, 1 the run failed (KubeRay's reason printed), 2 bad input or the "
               "RayJob was rejected (ValidationFailed), 3 --timeout passed (RayJob deleted), 130 interrupted "
               "(RayJob left running)")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. workload=xgboost data.synthetic.rows=1000000")
    src = ap.add_argument_group("what to run")
    src.add_argument("--chart", type=Path, default=Path(os.environ.get("RAY_TRAINING_CHART", DEFAULT_CHART)),
                     help="chart to render the RayJob from (default: %(default)s)")
    src.add_argument("-f", "--values", action="append", type=Path, default=[], metavar="FILE",
                     help="values files, as for helm install (repeatable; the release's own values)")
    src.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a value, as for helm --set")
    src.add_argument("--release", default="ray-training",
                     help="the Helm release whose MLflow, storage and ServiceAccount the run uses (default: %(default)s)")
    src.add_argument("--manifest", type=Path, help="a RayJob the chart rendered (the retraining CronJob's "
                     "ConfigMap) instead of rendering; takes no overrides")
    k8s = ap.add_argument_group("cluster")
    k8s.add_argument("-n", "--namespace", help="default: the kubeconfig context's, or the pod's")
    k8s.add_argument("--kubeconfig", help="default: $KUBECONFIG or ~/.kube/config; in-cluster config in a pod")
    k8s.add_argument("--context")
    run = ap.add_argument_group("following")
    run.add_argument("--dry-run", action="store_true", help="print the RayJob manifest and exit")
    run.add_argument("--no-follow", action="store_true", help="create the RayJob and exit 0")
    run.add_argument("--no-logs", action="store_true", help="follow the status only (no pod/log access needed)")
    run.add_argument("--timeout", type=int, default=0, metavar="SECONDS",
                     help="give up after this long, delete the RayJob and exit 3; 0: wait (default)")
    run.add_argument("--keep-finished", type=int, default=-1, metavar="N",
                     help="after the run, delete finished launcher-made RayJobs of the release beyond the N newest")
    return ap


def build(args: argparse.Namespace, run_id: str) -> Dict[str, Any]:
    if args.manifest:
        if args.overrides or args.values or args.set:
            raise UserError("--manifest takes no overrides, --values or --set (they are rendered into it already)")
        return prepare(load_manifest(args.manifest), run_id)
    check_overrides(args.overrides)
    return prepare(render_rayjob(args.chart, args.values, args.set, args.release, args.overrides), run_id)


def launch(args: argparse.Namespace, out: Optional[TextIO] = None) -> int:
    out = out or sys.stdout
    run_id = new_run_id()
    job = build(args, run_id)
    name = job["metadata"]["name"]
    if args.dry_run:
        out.write(yaml.safe_dump(job, sort_keys=False, width=1000))
        return EXIT_OK
    api, ns = connect(args.kubeconfig, args.context, args.namespace)
    follower = Follower(api, ns, name, out)  # before create: loading the client's API classes takes a while
    create(api, ns, job)
    print(f"created RayJob {ns}/{name} (run id {run_id})", file=out, flush=True)
    if args.no_follow:
        print(f"follow it: kubectl -n {ns} get rayjob {name} -w", file=out, flush=True)
        return EXIT_OK
    logs = None if args.no_logs else follower.follow_logs(job["spec"].get("submissionMode", "K8sJobMode"))
    deadline = time.monotonic() + args.timeout if args.timeout > 0 else None
    try:
        result = follower.status(deadline)
    except KeyboardInterrupt:
        follower.stop_logs()
        print(f"error: interrupted; RayJob {ns}/{name} keeps running "
              f"(kubectl -n {ns} delete rayjob {name} to stop it)", file=sys.stderr)
        return EXIT_INTERRUPTED
    follower.stop_logs()
    if result.code == EXIT_TIMEOUT:
        delete(api, ns, name)
        print(f"error: RayJob {ns}/{name} did not finish within {args.timeout}s; deleted it", file=sys.stderr)
        return EXIT_TIMEOUT
    if logs is not None:
        logs.join(timeout=30)  # the submitter's last lines (its pod has ended with the run)
    if args.keep_finished >= 0:
        prune(api, ns, job, args.keep_finished, out)
    if result.code == EXIT_OK:
        print(f"RayJob {ns}/{name} succeeded (run id {run_id})", file=out, flush=True)
    else:
        print(f"error: RayJob {ns}/{name} failed: {result.message}", file=sys.stderr)
    return result.code


def main(argv: Optional[List[str]] = None) -> int:
    from training import report

    report.setup_logging()
    args = parser().parse_args(argv)
    try:
        return launch(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())

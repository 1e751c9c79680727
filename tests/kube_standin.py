"""A stand-in for the Kubernetes API server, for tests of training.ops.launch.

No real API server can run on the CI machine (no container engine, no kube-apiserver or
etcd binary), so this small HTTP server implements just the endpoints the launcher calls,
with the wire format the real one uses: RayJob create/get/list/watch/delete under
/apis/ray.io/v1, pod list and pod log under /api/v1. The launcher talks to it through the
real `kubernetes` Python client and a generated kubeconfig (bearer token checked).

After a RayJob is created, a thread plays the part of the KubeRay 1.7 operator: it applies a
script of status updates (jobDeploymentStatus/jobStatus/reason/message, as KubeRay reports
them), each one a MODIFIED watch event with a new resourceVersion, and runs a submitter pod
whose log the launcher can follow. It does not validate or default objects as a real API
server does; tests validate what the launcher sends against the RayJob CRD themselves.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import parse_qs, urlparse

TOKEN = "standin-token"
RAYJOBS = "/apis/ray.io/v1/namespaces/"

# How KubeRay 1.7 moves a RayJob through its states (ray-operator rayjob_controller.go).
SUCCESS = [
    {"jobDeploymentStatus": "Initializing", "rayClusterName": "{name}-raycluster-x7k2p"},
    {"jobDeploymentStatus": "Running", "jobStatus": "PENDING", "jobId": "{name}-jk4q2"},
    {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"},
    {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED", "succeeded": 1, "failed": 0},
]
APP_FAILED = SUCCESS[:3] + [
    {"jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "reason": "AppFailed", "failed": 1,
     "message": "Job entrypoint command failed with exit code 1, last available logs (truncated to 20,000 "
                "chars): error: MemberTrainingError: member xgboost failed"},
]
VALIDATION_FAILED = [
    {"jobDeploymentStatus": "ValidationFailed", "reason": "ValidationFailed",
     "message": "The RayJob metadata is invalid: RayJob name should be no more than 47 characters"},
]
STUCK = SUCCESS[:2]  # never finishes (a cluster that never gets its pods)
LOG_LINES = ["Job submission server address: http://{name}-head-svc.ml.svc.cluster.local:8265",
             "Job '{name}-jk4q2' submitted successfully",
             "[training] run {name}: workload=xgboost, 1 member(s)",
             "Job '{name}-jk4q2' succeeded"]


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        # A client that goes away mid-exchange (a launcher interrupted by Ctrl-C) is no error of
        # the server's; socketserver would print its traceback into the test's stderr.
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


class StandIn:
    def __init__(self, script: List[Dict[str, Any]], step_s: float = 0.05, drop_first_watch: bool = False,
                 gone_second_watch: bool = False, get_delay_s: float = 0.0, refuse_delete: bool = False,
                 on_create: Optional[Callable[[], None]] = None, vanish_after_create: bool = False,
                 refuse_watch: bool = False, drop_first_log: bool = False):
        self.script, self.step_s = script, step_s
        # The first follow of a pod log breaks mid-line while the pod runs (a proxy's idle
        # timeout, an API server restart): the launcher must resume it, neither losing nor
        # repeating a line.
        self.drop_first_log, self.logs_read = drop_first_log, 0
        # Called when a create's body has arrived, before it is stored or answered.
        self.on_create = on_create
        # A busy API server: a GET of one RayJob is answered this late, as the object is then.
        self.get_delay_s = get_delay_s
        # RBAC without the delete verb: every DELETE is answered 403.
        self.refuse_delete = refuse_delete
        # RBAC with get but without the watch verb: every watch is answered 403.
        self.refuse_watch = refuse_watch
        self.drop_first_watch, self.gone_second_watch = drop_first_watch, gone_second_watch
        # The API server goes away once it has answered a create: every later request, and the
        # watch streaming at that moment, has its connection dropped without an answer.
        self.vanish_after_create, self.vanished = vanish_after_create, False
        self.jobs: Dict[str, Dict[str, Any]] = {}        # "ns/name" -> object
        self.pods: Dict[str, Dict[str, Any]] = {}
        self.logs: Dict[str, List[tuple]] = {}            # "ns/pod" -> [(time written, line)]
        self.events: List[tuple] = []                     # (rv, type, object)
        self.rv = 100
        self.cond = threading.Condition()
        self.requests: List[tuple] = []                   # (method, path, query)
        self.created: List[Dict[str, Any]] = []           # bodies as the launcher sent them
        self.deleted: List[str] = []
        self.watches = 0
        self.server = _Server(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> "StandIn":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def kubeconfig(self, directory: Path, namespace: str = "ml") -> Path:
        path = directory / "kubeconfig"
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "standin",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "ci", "user": {"token": TOKEN}}],
            "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "ci", "namespace": namespace}}],
        }))
        return path

    def add_job(self, ns: str, obj: Dict[str, Any]) -> None:
        """A RayJob that already exists (e.g. finished runs of earlier schedule ticks)."""
        with self.cond:
            self._store(ns, obj)

    # -- state -------------------------------------------------------------------------------

    def _bump(self, kind: str, obj: Dict[str, Any]) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.events.append((self.rv, kind, json.loads(json.dumps(obj))))
        self.cond.notify_all()

    def _store(self, ns: str, obj: Dict[str, Any]) -> Dict[str, Any]:
        md = obj.setdefault("metadata", {})
        md.update(namespace=ns, uid=str(uuid.uuid4()), generation=1)
        md.setdefault("creationTimestamp", _now())
        self.jobs[f"{ns}/{md['name']}"] = obj
        self._bump("ADDED", obj)
        return obj

    def _operate(self, ns: str, name: str) -> None:
        """The KubeRay operator's part: the scripted status updates and a submitter pod."""
        for step in self.script:
            time.sleep(self.step_s)
            with self.cond:
                obj = self.jobs.get(f"{ns}/{name}")
                if obj is None:
                    return
                status = obj.setdefault("status", {})
                status.update({k: v.format(name=name) if isinstance(v, str) else v for k, v in step.items()})
                if step.get("jobDeploymentStatus") == "Initializing":
                    status.setdefault("startTime", _now())
                if step.get("jobDeploymentStatus") in ("Complete", "Failed"):
                    status["endTime"] = _now()
                if step.get("jobDeploymentStatus") == "Running" and f"{ns}/{name}-sub" not in self.pods:
                    self.pods[f"{ns}/{name}-sub"] = {
                        "metadata": {"name": f"{name}-sub", "namespace": ns,
                                     "labels": {"batch.kubernetes.io/job-name": name, "job-name": name}},
                        "status": {"phase": "Running"}}
                    self.logs[f"{ns}/{name}-sub"] = _stamped([line.format(name=name) for line in LOG_LINES])
                if step.get("jobDeploymentStatus") in ("Complete", "Failed") and f"{ns}/{name}-sub" in self.pods:
                    # The submitter's `ray job logs --follow` returns once the job has ended.
                    self.pods[f"{ns}/{name}-sub"]["status"]["phase"] = "Succeeded"
                self._bump("MODIFIED", obj)

    # -- HTTP --------------------------------------------------------------------------------

    def _handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _send(self, code: int, body: Any, ctype: str = "application/json") -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, reason: str, message: str) -> None:
                self._send(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                  "message": message, "reason": reason, "code": code})

            def _drop(self) -> None:
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True

            def _route(self, method: str) -> None:
                if standin.vanished:
                    return self._drop()
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                standin.requests.append((method, url.path, query))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._status(401, "Unauthorized", "Unauthorized")
                parts = url.path.strip("/").split("/")
                if url.path.startswith(RAYJOBS) and len(parts) >= 6 and parts[5] == "rayjobs":
                    ns, name = parts[4], (parts[6] if len(parts) > 6 else None)
                    return self._rayjobs(method, ns, name, query)
                if parts[:3] == ["api", "v1", "namespaces"] and len(parts) >= 5 and parts[4] == "pods":
                    return self._pods(parts[3], parts[5] if len(parts) > 5 else None, parts[6:], query)
                self._status(404, "NotFound", f"the server could not find the requested resource {url.path}")

            def do_GET(self):
                self._route("GET")

            def do_POST(self):
                self._route("POST")

            def do_DELETE(self):
                self._route("DELETE")

            # RayJobs -----------------------------------------------------------------------

            def _rayjobs(self, method: str, ns: str, name: Optional[str], q: Dict[str, str]) -> None:
                key = f"{ns}/{name}"
                if method == "POST":
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    standin.created.append(json.loads(json.dumps(body)))
                    if standin.on_create:
                        standin.on_create()
                    new = body["metadata"].get("name")
                    with standin.cond:
                        if f"{ns}/{new}" in standin.jobs:
                            return self._status(409, "AlreadyExists", f'rayjobs.ray.io "{new}" already exists')
                        obj = standin._store(ns, body)
                    threading.Thread(target=standin._operate, args=(ns, new), daemon=True).start()
                    self._send(201, obj)
                    standin.vanished = standin.vanish_after_create
                    return None
                if method == "DELETE":
                    self.rfile.read(int(self.headers.get("Content-Length") or 0))  # V1DeleteOptions
                    if standin.refuse_delete:
                        return self._status(403, "Forbidden", f'rayjobs.ray.io "{name}" is forbidden: cannot delete')
                    with standin.cond:
                        obj = standin.jobs.pop(key, None)
                        if obj is None:
                            return self._status(404, "NotFound", f'rayjobs.ray.io "{name}" not found')
                        standin.deleted.append(name)
                        standin._bump("DELETED", obj)
                    return self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
                if name:
                    time.sleep(standin.get_delay_s)
                    with standin.cond:
                        obj = standin.jobs.get(key)
                    if obj is None:
                        return self._status(404, "NotFound", f'rayjobs.ray.io "{name}" not found')
                    return self._send(200, obj)
                if q.get("watch") in ("true", "True", "1"):
                    if standin.refuse_watch:
                        return self._status(403, "Forbidden", 'rayjobs.ray.io is forbidden: User "ci" cannot watch '
                                                              f'resource "rayjobs" in the namespace "{ns}"')
                    return self._watch(ns, q)
                with standin.cond:
                    items = [o for k, o in standin.jobs.items() if k.startswith(f"{ns}/") and _matches(o, q)]
                    rv = standin.rv
                self._send(200, {"apiVersion": "ray.io/v1", "kind": "RayJobList", "items": items,
                                 "metadata": {"resourceVersion": str(rv)}})

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _watch(self, ns: str, q: Dict[str, str]) -> None:
                with standin.cond:
                    standin.watches += 1
                    nth = standin.watches
                since = int(q.get("resourceVersion") or 0)
                timeout = float(q.get("timeoutSeconds") or 30)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                if standin.gone_second_watch and nth == 2:
                    self._chunk(json.dumps({"type": "ERROR", "object": {
                        "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired",
                        "message": f"too old resource version: {since}", "code": 410}}).encode() + b"\n")
                    self._chunk(b"")
                    return
                end = time.monotonic() + timeout
                sent = 0
                while time.monotonic() < end:
                    if standin.vanished:
                        return self._drop()
                    with standin.cond:
                        new = [(rv, t, o) for rv, t, o in standin.events
                               if rv > since and o["metadata"]["namespace"] == ns and _matches(o, q)]
                        if not new:
                            standin.cond.wait(timeout=min(0.2, max(0.0, end - time.monotonic())))
                            continue
                    for rv, kind, obj in new:
                        self._chunk(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
                        since, sent = rv, sent + 1
                        if standin.drop_first_watch and nth == 1:
                            return self._drop()  # the connection breaks mid-stream: no terminating chunk
                self._chunk(b"")

            # Pods --------------------------------------------------------------------------

            def _pods(self, ns: str, pod: Optional[str], rest: List[str], q: Dict[str, str]) -> None:
                if pod is None:
                    with standin.cond:
                        items = [p for k, p in standin.pods.items() if k.startswith(f"{ns}/") and _matches(p, q)]
                    return self._send(200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
                if rest == ["log"]:
                    return self._log(ns, pod, q)
                self._status(404, "NotFound", f'pods "{pod}" not found')

            def _log(self, ns: str, pod: str, q: Dict[str, str]) -> None:
                """The kubelet's log stream: `timestamps` (RFC 3339, nanoseconds, trailing zeros
                trimmed), `sinceSeconds`, and with `follow` open until the pod's container ends."""
                with standin.cond:
                    standin.logs_read += 1
                    nth, lines = standin.logs_read, standin.logs.get(f"{ns}/{pod}", [])
                since = float(q["sinceSeconds"]) if "sinceSeconds" in q else None
                wanted = [(t, line) for t, line in lines if since is None or t >= time.time() - since]
                stamps = q.get("timestamps") in ("true", "True")
                text = "".join(f"{_rfc3339nano(t) + ' ' if stamps else ''}{line}\n" for t, line in wanted).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                if standin.drop_first_log and nth == 1:
                    cut = text.index(b"\n") + 10  # the first line and a part of the second
                    self._chunk(text[:cut])
                    return self._drop()
                self._chunk(text)
                while q.get("follow") in ("true", "True") and not standin.vanished:
                    with standin.cond:
                        if standin.pods.get(f"{ns}/{pod}", {}).get("status", {}).get("phase") != "Running":
                            break
                        standin.cond.wait(timeout=0.1)
                self._chunk(b"")

        return Handler


def _stamped(lines: List[str]) -> List[tuple]:
    """Log lines as written now; the first two within one clock tick (same timestamp), as lines
    a process prints together often are."""
    now = time.time()
    return [(now + max(0, i - 1) * 0.001, line) for i, line in enumerate(lines)]


def _rfc3339nano(t: float) -> str:
    seconds, nanos = divmod(round(t * 1e9), 10**9)
    whole = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{nanos:09d}".rstrip("0")
    return f"{whole}.{fraction}Z" if fraction else f"{whole}Z"


def _matches(obj: Dict[str, Any], q: Dict[str, str]) -> bool:
    """Equality-based labelSelector and metadata.name fieldSelector, as the launcher uses them."""
    md = obj.get("metadata", {})
    for term in filter(None, (q.get("labelSelector") or "").split(",")):
        k, _, v = term.partition("=")
        if (md.get("labels") or {}).get(k) != v:
            return False
    for term in filter(None, (q.get("fieldSelector") or "").split(",")):
        k, _, v = term.partition("=")
        if k == "metadata.name" and md.get("name") != v:
            return False
    return True

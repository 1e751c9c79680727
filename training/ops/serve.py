"""`python -m training.ops.serve` (`ray-training-serve`): serve a registered model and follow its alias.

`mlflow models serve` loads one version when it starts. A model server behind a registry alias
(`models:/<name>@champion`, moved by the promotion gate) should serve whatever the alias points
at, without a restart and without dropping requests. This server answers with MLflow's own
scoring app (the same `/invocations`, `/ping`, `/health` and `/version`, the same request and
response formats), built for the version the alias names. It asks the registry every
`--follow-s` seconds; when the alias has moved, it loads the new version beside the old one and
switches to it once loaded: requests in flight finish on the version they started on, and
every response names its version in the `mlflow-model-version` header. A version that fails to
load, or a registry that does not answer, is logged and the current version keeps serving.
GET /metrics: requests by path, status and version, /invocations latency, the served version,
switches and failed follow-ups, for Prometheus.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from typing import Any, Callable, List, Optional, Tuple

from training import errors
from training.errors import UserError

log = logging.getLogger("training")

VERSION_HEADER = b"mlflow-model-version"
RETRY_FAILED_S = 60.0
RETRY_FAILED_MAX_S = 3600.0


def parser() -> argparse.ArgumentParser:
    ap = errors.ArgumentParser(
        prog="python -m training.ops.serve",
        description="Serve a registered MLflow model over HTTP (MLflow's scoring protocol: POST /invocations, "
                    "GET /ping; Prometheus metrics at GET /metrics) and follow its alias: a new version behind "
                    "the alias is served once it has loaded, without a restart. The tracking server comes from "
                    "MLFLOW_TRACKING_URI.",
        epilog="exit codes: 2 bad input (no such model, alias or version; nothing to serve), 1 the model "
               "failed to load, 130 interrupted (Ctrl-C); SIGTERM (a pod stopped) ends it as the signal does, after "
               "uvicorn's graceful shutdown")
    ap.add_argument("--model", required=True, help="registered model name, e.g. retail-demand-ensemble")
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--alias", default="champion", help="serve the version behind this alias (default: %(default)s)")
    which.add_argument("--version", type=int, help="serve this version, and only it")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    ap.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    ap.add_argument("--follow-s", type=float, default=60.0, metavar="SECONDS",
                    help="how often to ask the registry where the alias points; 0: never (default: %(default)s)")
    ap.add_argument("--retry-failed-s", type=float, default=RETRY_FAILED_S, metavar="SECONDS",
                    help="when to try again a version the alias names that failed to download or load (its "
                         "storage may have been down), doubling after each failure up to an hour "
                         "(default: %(default)s)")
    return ap


class Registry:
    """Which version to serve, and loading it as MLflow's scoring app."""

    def __init__(self, model: str, alias: Optional[str], version: Optional[int]):
        from mlflow.tracking import MlflowClient

        self.client, self.model, self.alias, self.version = MlflowClient(), model, alias, version
        self.downloaded: Optional[str] = None

    def current(self) -> str:
        if self.version is not None:
            return str(self.client.get_model_version(self.model, str(self.version)).version)
        return str(self.client.get_model_version_by_alias(self.model, self.alias).version)

    def describe(self) -> str:
        return f"models:/{self.model}/{self.version}" if self.version is not None else \
            f"models:/{self.model}@{self.alias}"

    def load(self, version: str) -> Any:
        """MLflow's scoring app for `version`. Each version downloads into a folder of its own, and
        the one it replaces is removed, so a long-lived server does not fill its disk."""
        import mlflow.artifacts
        import mlflow.pyfunc
        from mlflow.pyfunc import scoring_server

        where = tempfile.mkdtemp(prefix=f"{self.model}-v{version}-")
        try:
            local = mlflow.artifacts.download_artifacts(f"models:/{self.model}/{version}", dst_path=where)
            app = scoring_server.init(mlflow.pyfunc.load_model(local))
        except BaseException:
            shutil.rmtree(where, ignore_errors=True)
            raise
        # The model is in memory now; its files of the version before are not needed any more.
        self.remove_download()
        self.downloaded = where
        return app

    def remove_download(self) -> None:
        """The served version's files (at the server's shutdown, or when the next one has loaded)."""
        if self.downloaded:
            shutil.rmtree(self.downloaded, ignore_errors=True)
            self.downloaded = None


class Metrics:
    """The server's Prometheus metrics, on its own port at GET /metrics."""

    # Paths the scoring app answers; anything else is counted as "other" (bounded label values).
    PATHS = ("/invocations", "/ping", "/health", "/version", "/metrics")

    def __init__(self, model: str):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("model_server_requests", "Requests answered, by path, HTTP status and model version",
                                ["path", "status", "version"], registry=self.registry)
        self.latency = Histogram("model_server_invocation_seconds", "Time to answer /invocations, by model version",
                                 ["version"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.served = Gauge("model_server_served_version", "The version being served", ["model"],
                            registry=self.registry)
        self.switches = Counter("model_server_switches", "Switches to the version the alias moved to",
                                registry=self.registry)
        self.follow_errors = Counter("model_server_follow_errors",
                                     "Registry checks or version loads that failed while following the alias",
                                     registry=self.registry)
        self.model = model

    def path(self, path: str) -> str:
        return path if path in self.PATHS else "other"

    def exposition(self) -> Tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class FollowingApp:
    """An ASGI app that hands each request to the scoring app of the version it serves now, names
    that version in the response, and counts it."""

    def __init__(self, version: str, app: Any, metrics: Metrics, on_shutdown: Callable[[], None] = lambda: None):
        self.served: Tuple[str, Any] = (version, app)
        self.metrics = metrics
        self.on_shutdown = on_shutdown
        metrics.served.labels(metrics.model).set(float(version))

    async def __call__(self, scope, receive, send):
        version, app = self.served  # one version for the whole request, even if a switch happens
        if scope["type"] == "lifespan":  # uvicorn's graceful shutdown (SIGTERM, Ctrl-C) ends here
            async def shut_down(message):
                if message["type"] == "lifespan.shutdown.complete":
                    self.on_shutdown()
                await send(message)
            return await app(scope, receive, shut_down)
        if scope["type"] != "http":
            return await app(scope, receive, send)
        path, status, started = self.metrics.path(scope["path"]), [500], time.perf_counter()
        if path == "/metrics":
            app = self._metrics

        async def named(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message = dict(message, headers=[*message.get("headers", []), (VERSION_HEADER, version.encode())])
            await send(message)

        try:
            await app(scope, receive, named)
        finally:
            self.metrics.requests.labels(path, str(status[0]), version).inc()
            if path == "/invocations":
                self.metrics.latency.labels(version).observe(time.perf_counter() - started)

    async def _metrics(self, scope, receive, send):
        body, content_type = self.metrics.exposition()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", content_type.encode())]})
        await send({"type": "http.response.body", "body": body})

    def switch(self, version: str, app: Any) -> None:
        self.served = (version, app)
        self.metrics.switches.inc()
        self.metrics.served.labels(self.metrics.model).set(float(version))


def follow(registry: Registry, app: FollowingApp, every_s: float, stop: threading.Event,
           on_error: Callable[[str], None] = log.warning, retry_failed_s: float = RETRY_FAILED_S) -> None:
    """Until `stop`: every `every_s`, serve the version the alias names now if it has moved. A
    version that failed to download or load is tried again after `retry_failed_s`, then after
    twice that, up to an hour: a broken version is not downloaded on every check, and one whose
    storage was down for a moment is served once it is back. A registry that does not answer
    changes nothing."""
    failed, retry_at, wait = None, 0.0, retry_failed_s
    while not stop.wait(every_s):
        try:
            latest = registry.current()
        except Exception as exc:  # the registry: keep serving, and keep what is known of a failed version
            _count_error(app, on_error, exc)
            continue
        if latest == app.served[0] or (latest == failed and time.monotonic() < retry_at):
            continue
        try:
            log.info("%s is version %s now (serving %s): loading it", registry.describe(), latest, app.served[0])
            app.switch(latest, registry.load(latest))
            log.info("serving version %s", latest)
            failed = None
        except Exception as exc:  # the new version: keep serving the current one
            wait = min(2 * wait, RETRY_FAILED_MAX_S) if latest == failed else retry_failed_s
            failed, retry_at = latest, time.monotonic() + wait
            _count_error(app, on_error, exc, f"; version {latest} is tried again in {wait:g}s")


def _count_error(app: FollowingApp, on_error: Callable[[str], None], exc: Exception, then: str = "") -> None:
    app.metrics.follow_errors.inc()
    reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    on_error(f"still serving version {app.served[0]}: {type(exc).__name__}: {reason}{then}")


def version_to_serve(registry: Registry) -> str:
    """The version to serve at start; a missing model, alias or version is the user's to fix."""
    from mlflow.exceptions import MlflowException

    try:
        return registry.current()
    except MlflowException as exc:
        reason = str(exc).strip().splitlines()[0][:300]
        raise UserError(f"nothing to serve at {registry.describe()}: {reason}") from None


def listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound before the model is downloaded and loaded: a busy port or an
    address this machine does not have is one line at once, not an error after the download."""
    if not 1 <= port <= 65535:
        raise UserError(f"--port {port}: must be 1-65535")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:  # its message names the address again; the reason alone
        raise UserError(f"cannot listen on {host}:{port}: {os.strerror(exc.errno) if exc.errno else exc}") from None


def main(argv: Optional[List[str]] = None) -> int:
    from training.runtime import report

    report.setup_logging()
    args = parser().parse_args(argv)
    try:
        if args.follow_s < 0:
            raise UserError(f"--follow-s={args.follow_s:g}: must be 0 (never) or a number of seconds")
        if args.retry_failed_s <= 0:
            raise UserError(f"--retry-failed-s={args.retry_failed_s:g}: must be a number of seconds above 0")
        registry = Registry(args.model, None if args.version is not None else args.alias, args.version)
        version = version_to_serve(registry)
        sock = listening_socket(args.host, args.port)
        log.info("loading %s: version %s", registry.describe(), version)
        scoring = registry.load(version)
    except (Exception, KeyboardInterrupt) as exc:  # Ctrl-C while the model downloads or loads: one line too
        return errors.show(exc)
    import uvicorn

    app = FollowingApp(version, scoring, Metrics(args.model), on_shutdown=registry.remove_download)
    log.info("serving %s: version %s on http://%s:%d", registry.describe(), version, args.host, args.port)
    stop = threading.Event()
    if args.follow_s > 0 and args.version is None:
        threading.Thread(target=follow, args=(registry, app, args.follow_s, stop),
                         kwargs={"retry_failed_s": args.retry_failed_s}, daemon=True, name="follow-alias").start()
    try:
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down gracefully on Ctrl-C, then raises it again
        log.info("stopped (interrupted)")
        return errors.EXIT_INTERRUPTED
    finally:
        stop.set()
        registry.remove_download()  # if the shutdown did not get to it
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Following a RayJob: its status through watches that are re-established when they drop,
and the submitter pod's log."""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any, Dict, Optional, TextIO

from training.errors import UserError
from training.ops.launch.kube import GROUP, PLURAL, VERSION, api_message
from training.ops.launch.outcome import EXIT_FAILED, EXIT_TIMEOUT, Outcome, outcome
from training.ops.launch.submitter_log import SubmitterLog

log = logging.getLogger(__name__)

# Waits between GETs of a RayJob that fail: an API server restart must not end a day-long run's launcher.
RETRY_DELAYS_S = (1.0, 2.0, 4.0, 8.0, 15.0)


class DeadlinePassed(Exception):
    """--timeout passed while the API did not answer."""


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

    def status(self, deadline: Optional[float], since: Optional[Dict[str, Any]] = None) -> Outcome:
        """Block until the RayJob is terminal (or the deadline passes): its Outcome.

        `since` is the object as created: watching from its resourceVersion reports every status
        the operator sets afterwards, however soon; a first GET would skip those before it."""
        try:
            return self._status(deadline, since)
        except DeadlinePassed:
            return Outcome(EXIT_TIMEOUT, "timed out")

    def _status(self, deadline: Optional[float], since: Optional[Dict[str, Any]]) -> Outcome:
        from kubernetes import watch
        from kubernetes.client.rest import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

        obj = since if since is not None else self._get_retrying(deadline)
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
            opened = time.monotonic()
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
                if exc.status in (401, 403):  # RBAC with get but not watch: no busy loop of refusals
                    raise UserError(f"not allowed to watch RayJob {self.ns}/{self.name}: {api_message(exc)}") from None
                log.debug("watch ended: %s", exc)
                if exc.status != 410 and time.monotonic() - opened < 1:  # refused at once (429, 5xx): not a loop
                    time.sleep(1)
            except (Urllib3Error, OSError) as exc:  # the connection dropped mid-stream
                log.debug("watch dropped: %s", exc)
            self.reconnects += 1
            obj = self._get_retrying(deadline)

    def _get_retrying(self, deadline: Optional[float]) -> Optional[Dict[str, Any]]:
        """GET with a few retries (RETRY_DELAYS_S); DeadlinePassed when --timeout comes first."""
        from kubernetes.client.rest import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

        for delay in (*RETRY_DELAYS_S, None):
            try:
                return self.get()
            except (ApiException, Urllib3Error, OSError) as exc:
                if isinstance(exc, ApiException) and exc.status in (401, 403):
                    raise UserError(f"not allowed to read RayJob {self.ns}/{self.name}: {api_message(exc)}") from None
                if delay is None:
                    raise UserError(f"lost the Kubernetes API while following {self.ns}/{self.name}: "
                                    f"{str(exc).splitlines()[0][:200]}") from None
                if deadline is not None and time.monotonic() + delay > deadline:
                    raise DeadlinePassed from None
                time.sleep(delay)
        return None

    # -- logs --------------------------------------------------------------------------------

    def follow_logs(self, submission_mode: str) -> Optional[threading.Thread]:
        """The submitter's log, printed in a thread of its own until stop_logs."""
        if submission_mode not in ("K8sJobMode", "SidecarMode"):
            self.say(f"logs: submissionMode {submission_mode} has no submitter pod; see the Ray dashboard "
                     "for the driver log")
            return None
        reader = SubmitterLog(self.core, self.ns, self.out, self.say, self._stop,
                              lambda: self._log_source(submission_mode))
        t = threading.Thread(target=reader.run, daemon=True, name="rayjob-logs")
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

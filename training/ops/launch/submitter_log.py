"""The submitter pod's log, printed as it is written (`| ` before each line).

A log stream can end before its pod does: an API server restarts, a proxy or load balancer cuts
a connection it thinks idle, a kubelet is restarted. The stream is then opened again and
resumed where it broke off, so a day-long run's launcher neither stops showing the driver's
lines nor shows one twice. Lines are asked for with their timestamps: the new stream starts a
little before the last line printed (`sinceSeconds`, measured on this machine's clock, so the
two clocks need not agree) and the lines up to that one are skipped.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional, Set, TextIO, Tuple

from training.ops.launch.kube import api_message

log = logging.getLogger(__name__)

# How far before the last printed line a resumed stream starts: the request's round trip and the
# log's own buffering, with room to spare (the lines before it are skipped by their timestamps).
RESUME_MARGIN_S = 30
# A pod whose container has ended: its log will not grow.
ENDED = ("Succeeded", "Failed")


@dataclass
class Cursor:
    """Where one pod's log was left: the last printed line's timestamp, how many lines carried
    that very timestamp, and when (on this machine's clock) it was printed."""

    stamp: Optional[Tuple[str, str]] = None
    at_stamp: int = 0
    printed_at: float = 0.0

    def since_seconds(self) -> Optional[int]:
        if self.stamp is None:
            return None
        return int(time.monotonic() - self.printed_at) + RESUME_MARGIN_S

    def is_new(self, stamp: Optional[Tuple[str, str]], seen_at_stamp: int) -> bool:
        """A line not printed yet: later than the cursor, or at its timestamp beyond the lines
        printed there (`seen_at_stamp` counts this stream's lines at that timestamp so far)."""
        if self.stamp is None or stamp is None:
            return True
        return stamp > self.stamp or (stamp == self.stamp and seen_at_stamp > self.at_stamp)

    def printed(self, stamp: Optional[Tuple[str, str]]) -> None:
        if stamp is not None:
            self.at_stamp = self.at_stamp + 1 if stamp == self.stamp else 1
            self.stamp = stamp
        self.printed_at = time.monotonic()


def split_stamp(line: str) -> Tuple[Optional[Tuple[str, str]], str]:
    """`2026-12-07T03:00:00.1234Z text` -> (a sortable key of the time, the text). RFC 3339 with
    nanoseconds, trailing zeros trimmed, as the kubelet writes it; a line without one is all text."""
    head, sep, text = line.partition(" ")
    if not sep or len(head) < 20 or head[10] != "T" or not head.endswith("Z"):
        return None, line
    whole, _, fraction = head[:-1].partition(".")
    return (whole, fraction.ljust(9, "0")), text


class SubmitterLog:
    """Streams the log of each pod that runs `ray job submit` for one RayJob, until `stop` is set."""

    def __init__(self, core, namespace: str, out: TextIO, say: Callable[[str], None], stop: threading.Event,
                 source: Callable[[], Tuple[Optional[str], Optional[str]]]):
        self.core, self.ns, self.out, self.say, self.stop = core, namespace, out, say, stop
        self.source = source  # () -> (label selector, container) of the submitter pod
        self.cursors: dict = {}
        self.done: Set[str] = set()

    def run(self) -> None:
        from kubernetes.client.rest import ApiException

        while True:
            final = self.stop.is_set()  # the run ended: one last pass for what is not read yet
            try:
                selector, container = self.source()
                pods = self.core.list_namespaced_pod(self.ns, label_selector=selector).items if selector else []
                for pod in sorted(pods, key=lambda p: p.metadata.name):
                    name, phase = pod.metadata.name, pod.status.phase if pod.status else None
                    if name in self.done or phase == "Pending":
                        continue
                    ended = phase in ENDED  # before this stream began: the stream reads it all
                    self.stream(name, container, final=ended or final)
                    if ended:
                        self.done.add(name)
            except ApiException as exc:
                if exc.status in (401, 403):
                    self.say(f"logs: not allowed ({api_message(exc)}); following the status only")
                    return
                log.debug("logs: %s", exc)
            except Exception as exc:  # a dropped log stream is not a failed run
                log.debug("logs: %s", exc)
            if final:
                return
            self.stop.wait(1.0)

    def stream(self, pod: str, container: Optional[str], final: bool) -> None:
        """One stream of the pod's log, from where the last one left off, until it ends. A last
        line without its newline is printed only from a `final` stream (its pod had ended): from
        any other it may be a line cut by a dropped stream, which the next stream brings whole."""
        cursor = self.cursors.setdefault(pod, Cursor())
        kwargs = {"container": container} if container else {}
        since = cursor.since_seconds()
        if since is not None:
            kwargs["since_seconds"] = since
        resp = self.core.read_namespaced_pod_log(pod, self.ns, follow=True, timestamps=True,
                                                 _preload_content=False, **kwargs)
        last, at_last = None, 0

        def show(raw: bytes) -> None:
            nonlocal last, at_last
            stamp, text = split_stamp(raw.decode(errors="replace"))
            at_last = at_last + 1 if stamp is not None and stamp == last else 1
            last = stamp
            if cursor.is_new(stamp, at_last):
                print(f"| {text}", file=self.out, flush=True)
                cursor.printed(stamp)

        buf = b""
        try:
            for chunk in resp.stream(4096):
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for raw in lines:
                    show(raw)
            if buf and final:
                show(buf)
        finally:
            resp.release_conn()

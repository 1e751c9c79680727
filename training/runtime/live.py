"""Metrics that reach MLflow while a Ray worker trains (Ray Train's pattern: log from rank 0).

A worker adds points as they come; they are written to the run at most every FLUSH_S seconds
and whenever the worker reports, so `mlflow ui` draws a curve during the run and a driver that
dies leaves the points logged so far. Live logging is a side channel: the first error turns it
off for the rest of the member with one warning, and never fails the training; the driver logs
whatever points are missing when training ends (`tracking.log_missing`).

The writing happens on a thread of its own, which imports MLflow and opens the store as soon as
the metrics object exists: in a fresh worker process that import and a SQLite store's set-up
are seconds of Python, which the training loop would otherwise wait for at its first point.
Only `flush()` (at a report) and `close()` wait for the writes.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from typing import Dict, List, Optional, Set, Tuple

FLUSH_S = 5.0
# MLflow's HTTP client retries for minutes by default: a worker would stall its training on an
# unreachable server. The driver's tracking set-up uses the same limits.
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
BATCH = 1000  # MLflow's limit of metrics per log_batch call

Point = Tuple[str, int, float, int]  # name, step, value, epoch milliseconds


class LiveMetrics:
    """Metric points for one MLflow run; a no-op without a tracking URI and run id."""

    def __init__(self, tracking_uri: Optional[str], run_id: Optional[str], label: str,
                 once_per_step: bool = False):
        """`once_per_step`: a step the run holds already is not written again (training curves,
        which a restart from a checkpoint revisits)."""
        self.uri, self.run_id, self.label = tracking_uri, run_id, label
        self.once_per_step = once_per_step
        self.enabled = bool(tracking_uri and run_id) and not _store_elsewhere(tracking_uri)
        self.pending: List[Point] = []
        self.last_flush = -math.inf  # the first point goes out at once: the curve shows up early
        self._writer = _Writer(self) if self.enabled else None

    def add(self, name: str, step: int, value: float, timestamp_ms: Optional[int] = None) -> None:
        if self.enabled:
            self.pending.append((name, step, float(value), timestamp_ms or int(time.time() * 1000)))
            if time.monotonic() - self.last_flush >= FLUSH_S:
                self._send()

    def flush(self) -> None:
        """Write the pending points and wait until they are written (a report, an epoch's end)."""
        if self._writer is not None:
            self._send()
            self._writer.batches.join()

    def close(self) -> None:
        """Write the pending points, wait for them, and end the writer (the end of training)."""
        self.flush()
        if self._writer is not None:
            self._writer.batches.put(None)
            self._writer.thread.join()
            self._writer = None

    def _send(self) -> None:
        if self.enabled and self.pending and self._writer is not None:
            self._writer.batches.put(self.pending)
            self.pending, self.last_flush = [], time.monotonic()

    def turn_off(self, exc: Exception) -> None:
        """The first error: train on, and leave the points to the driver at the end."""
        self.enabled = False
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        print(f"[{self.label}] live MLflow logging off ({reason}); the driver logs the metrics at the end",
              flush=True)


class _Writer:
    """The thread that opens the store and writes the batches it is handed, in order."""

    def __init__(self, owner: LiveMetrics):
        self.owner = owner
        self.batches: "queue.Queue[Optional[List[Point]]]" = queue.Queue()
        # Steps each series holds in the run, for series of training steps: a worker group
        # restarted from a checkpoint trains again the rounds after it, which the lost group may
        # have logged already, and the curve keeps one point per step (the first, as the
        # driver's final sweep does).
        self.logged: Optional[Dict[str, Set[int]]] = {} if owner.once_per_step else None
        self.thread = threading.Thread(target=self._run, name=f"live-metrics-{owner.label}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        client = None
        try:
            client = self._connect()
        except Exception as exc:  # a store that cannot be opened: nothing is written
            self.owner.turn_off(exc)
        while True:
            batch = self.batches.get()
            try:
                if batch is None:
                    return
                if client is not None and self.owner.enabled:
                    self._write(client, batch)
            except Exception as exc:  # an unreachable or refusing server
                self.owner.turn_off(exc)
            finally:
                self.batches.task_done()

    def _connect(self):
        from mlflow.tracking import MlflowClient

        for key, value in HTTP_LIMITS.items():
            os.environ.setdefault(key, value)
        return MlflowClient(self.owner.uri)

    def _write(self, client, batch: List[Point]) -> None:
        from mlflow.entities import Metric

        if self.logged is None:
            points = [Metric(name, v, ts, step) for name, step, v, ts in batch]
        else:
            for name in {p[0] for p in batch} - set(self.logged):
                self.logged[name] = {m.step for m in client.get_metric_history(self.owner.run_id, name)}
            points = []
            for name, step, v, ts in batch:
                if step not in self.logged[name]:
                    self.logged[name].add(step)
                    points.append(Metric(name, v, ts, step))
        for i in range(0, len(points), BATCH):
            client.log_batch(self.owner.run_id, metrics=points[i: i + BATCH])


def _store_elsewhere(uri: str) -> bool:
    """A SQLite store that is a file on the driver's machine, not this one (a worker on another
    node): opening it here would create an empty store, so this worker leaves it to the driver."""
    return uri.startswith("sqlite:///") and not os.path.exists(uri[len("sqlite:///"):])

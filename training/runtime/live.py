"""Metrics that reach MLflow while a Ray worker trains (Ray Train's pattern: log from rank 0).

A worker adds points as they come; they are written to the run at most every FLUSH_S seconds
and whenever the worker reports, so `mlflow ui` draws a curve during the run and a driver that
dies leaves the points logged so far. Live logging is a side channel: the first error turns it
off for the rest of the member with one warning, and never fails the training; the driver logs
whatever points are missing when training ends (`tracking.log_missing`).
"""

from __future__ import annotations

import math
import os
import time
from typing import List, Optional, Tuple

FLUSH_S = 5.0
# MLflow's HTTP client retries for minutes by default: a worker would stall its training on an
# unreachable server. The driver's tracking set-up uses the same limits.
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
BATCH = 1000  # MLflow's limit of metrics per log_batch call


class LiveMetrics:
    """Metric points for one MLflow run; a no-op without a tracking URI and run id."""

    def __init__(self, tracking_uri: Optional[str], run_id: Optional[str], label: str):
        self.uri, self.run_id, self.label = tracking_uri, run_id, label
        self.enabled = bool(tracking_uri and run_id) and not _store_elsewhere(tracking_uri)
        self.pending: List[Tuple[str, int, float, int]] = []
        self.last_flush = -math.inf  # the first point goes out at once: the curve shows up early
        self.client = None

    def add(self, name: str, step: int, value: float, timestamp_ms: Optional[int] = None) -> None:
        if self.enabled:
            self.pending.append((name, step, float(value), timestamp_ms or int(time.time() * 1000)))
            if time.monotonic() - self.last_flush >= FLUSH_S:
                self.flush()

    def flush(self) -> None:
        """Write the pending points now (a report, an epoch's end, the end of training)."""
        if not (self.enabled and self.pending):
            return
        from mlflow.entities import Metric

        points = [Metric(name, v, ts, step) for name, step, v, ts in self.pending]
        self.pending, self.last_flush = [], time.monotonic()
        try:
            if self.client is None:
                from mlflow.tracking import MlflowClient

                for key, value in HTTP_LIMITS.items():
                    os.environ.setdefault(key, value)
                self.client = MlflowClient(self.uri)
            for i in range(0, len(points), BATCH):
                self.client.log_batch(self.run_id, metrics=points[i: i + BATCH])
        except Exception as exc:  # an unreachable or refusing server: train on, log at the end
            self.enabled = False
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            print(f"[{self.label}] live MLflow logging off ({reason}); the driver logs the metrics at the end",
                  flush=True)


def _store_elsewhere(uri: str) -> bool:
    """A SQLite store that is a file on the driver's machine, not this one (a worker on another
    node): opening it here would create an empty store, so this worker leaves it to the driver."""
    return uri.startswith("sqlite:///") and not os.path.exists(uri[len("sqlite:///"):])

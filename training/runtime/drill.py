"""The fault drill: a Ray Train worker dies like a preempted pod would (SIGKILL, no clean-up), once
per run, after Ray Train has registered the worker's last checkpoint.

"Once per run" is a marker file in the run's storage folder, beside its checkpoints: a retry of the
run (same name and storage path), on any node, finds it and trains clean; a new run never does.

Ray Train registers a report when its controller next polls the workers; a worker killed before
that resumes from the checkpoint before. A drill exists to test resuming from a known point, so it
waits for that event (the controller's snapshot in storage naming the last report) rather than for
a time that a loaded machine can overrun. A real preemption may land either way.
"""
from __future__ import annotations

import json
import math
import os
import signal
import time
from typing import Any, Dict, Optional

# How long a drill waits for the controller before killing anyway; reaching it is a bug to see in
# the test that runs the drill (it resumes from an earlier point), not a hang.
REGISTER_WAIT_S = 120.0


def kill_once(who: str, message: str, last_report: Optional[Dict[str, Any]] = None) -> None:
    """SIGKILL this process, once per run and `who`; with `last_report`, first wait until Ray Train
    has registered the checkpoint reported with those metrics."""
    import pyarrow.fs as pafs
    import ray.train

    storage = ray.train.get_context().get_storage()
    marker = f"{storage.experiment_fs_path}/fault-drill-{who}"
    if storage.storage_filesystem.get_file_info(marker).type != pafs.FileType.NotFound:
        return
    with storage.storage_filesystem.open_output_stream(marker) as f:
        f.write(message.encode("utf-8"))
    if last_report:
        _wait_registered(storage, last_report)
    print(message, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def _wait_registered(storage, metrics: Dict[str, Any]) -> None:
    deadline = time.monotonic() + REGISTER_WAIT_S
    while time.monotonic() < deadline:
        if _same(_latest_registered(storage), metrics):
            return
        time.sleep(0.1)


def _latest_registered(storage) -> Dict[str, Any]:
    try:
        with storage.storage_filesystem.open_input_stream(storage.checkpoint_manager_snapshot_path) as f:
            snapshot = json.loads(f.read().decode("utf-8"))
    except (FileNotFoundError, OSError, ValueError):  # not written yet, or being written
        return {}
    return (snapshot.get("latest_checkpoint_result") or {}).get("metrics") or {}


def _same(registered: Dict[str, Any], reported: Dict[str, Any]) -> bool:
    for key, value in reported.items():
        got = registered.get(key)
        if isinstance(value, float) and isinstance(got, (int, float)):
            if not math.isclose(got, value, rel_tol=1e-9):
                return False
        elif got != value:
            return False
    return True

"""Run ids, RayJob names and the labels that mark a launcher-made RayJob."""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timezone

RUN_ID_LABEL = "ray-training/run-id"
LAUNCHER_LABEL = "ray-training/launched-by"
# The label value predates the move to training.ops.launch; prune selects on it, so
# RayJobs made by earlier launchers stay prunable.
LAUNCHER = "training.launch"
MAX_NAME = 47  # KubeRay 1.7: longer RayJob names end in ValidationFailed, not a rejection
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


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

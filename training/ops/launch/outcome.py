"""A RayJob's result from its KubeRay status, and the launcher's exit codes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

from training.errors import EXIT_USER_ERROR

EXIT_OK = 0
EXIT_FAILED = 1          # the run failed on the cluster (KubeRay's reason is printed)
EXIT_TIMEOUT = 3         # --timeout passed; the RayJob was deleted
EXIT_INTERRUPTED = 130   # Ctrl-C: the RayJob keeps running
EXIT_TERMINATED = 143    # SIGTERM (128 + 15): the RayJob keeps running


@dataclass
class Outcome:
    code: int
    message: str


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

"""One Ray node's Prometheus endpoint, read: utilisation per node and failed tasks.

Every Ray node serves its metrics (`MetricsExportPort` in `ray.nodes()`, from the dashboard agent,
so it is there with the dashboard off too); the sampler scrapes each node and keeps the few
families it reports.
"""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass
from typing import Dict, List, Optional

GB = 1024 ** 3


@dataclass
class NodeUsage:
    """One node's utilisation, as its metrics endpoint reports it."""
    cpu_percent: Optional[float] = None
    cpu_count: Optional[float] = None            # the machine's (or container's) CPUs, not Ray's
    memory_used_gb: Optional[float] = None
    memory_total_gb: Optional[float] = None
    gpu_percent: Optional[float] = None          # mean over the node's GPUs
    gpu_memory_used_gb: Optional[float] = None   # sum over the node's GPUs



NODE_METRICS = frozenset({"ray_node_cpu_utilization", "ray_node_cpu_count", "ray_node_mem_used", "ray_node_mem_total",
                          "ray_node_gpus_utilization", "ray_node_gram_used"})
TASK_METRICS = frozenset({"ray_tasks"})


def _families(text: str, names: frozenset):
    """The parsed metric families among `names` (gauges: a sample is named like its family).

    A node's endpoint exports hundreds of families once Ray Data and Ray Train have run, and
    prometheus_client's parser is pure Python, and a sample parses twice: the lines of other
    families are dropped before parsing."""
    from prometheus_client.parser import text_string_to_metric_families

    keep = []
    for line in text.splitlines():
        if line.startswith("#"):          # "# HELP name ..." / "# TYPE name gauge"
            parts = line.split(None, 3)
            name = parts[2] if len(parts) > 2 else ""
        else:                             # "name{labels} value" / "name value"
            name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in names:
            keep.append(line)
    return text_string_to_metric_families("\n".join(keep) + "\n")


def parse_node_metrics(text: str) -> Dict[str, NodeUsage]:
    """Prometheus text from one node's endpoint -> usage per node IP (label `ip`)."""
    usage: Dict[str, NodeUsage] = {}
    gpu_util: Dict[str, List[float]] = {}
    for family in _families(text, NODE_METRICS):
        for s in family.samples:
            ip = s.labels.get("ip")
            if ip is None:
                continue
            u = usage.setdefault(ip, NodeUsage())
            if s.name == "ray_node_cpu_utilization":
                u.cpu_percent = s.value
            elif s.name == "ray_node_cpu_count":
                u.cpu_count = s.value
            elif s.name == "ray_node_mem_used":
                u.memory_used_gb = s.value / GB
            elif s.name == "ray_node_mem_total":
                u.memory_total_gb = s.value / GB
            elif s.name == "ray_node_gpus_utilization":
                gpu_util.setdefault(ip, []).append(s.value)
            elif s.name == "ray_node_gram_used":   # reported in MB
                u.gpu_memory_used_gb = (u.gpu_memory_used_gb or 0.0) + s.value / 1024
    for ip, values in gpu_util.items():
        usage[ip].gpu_percent = sum(values) / len(values)
    return {ip: u for ip, u in usage.items() if u.cpu_percent is not None or u.memory_used_gb is not None}


def failed_task_count_from_metrics(text: str) -> Optional[int]:
    """`ray_tasks{State="FAILED"}` summed: the fallback when the state API (dashboard) is off."""
    total, seen = 0.0, False
    for family in _families(text, TASK_METRICS):
        for s in family.samples:
            name = s.labels.get("Name", "")
            if (s.name == "ray_tasks" and s.labels.get("State") == "FAILED"
                    and not name.endswith(".__init__")   # see sampler.REAL_TASK_FAILURES
                    # Calls pending on Ray Train's synchronisation actor when the controller kills it
                    # at the end of a fit (sampler.killed_on_purpose; the metrics do not say why a
                    # call failed): a worker that really fails fails the run by itself.
                    and not name.startswith("SynchronizationActor.")):
                total, seen = total + s.value, True
    return int(total) if seen else None


def scrape(address: str, port: int, timeout: float = 3.0) -> str:
    # nosec B310: an http URL built from Ray's own node table, never user input
    with urllib.request.urlopen(f"http://{address}:{port}/metrics", timeout=timeout) as r:  # nosec B310
        return r.read().decode("utf-8", "replace")


"""Resource hours of a run from its samples, and their estimated cost from a price table.

The cluster's size is integrated over wall time: each sample's size holds from its time
until the next sample (the last one until the run's end). That is what a cluster of this
shape costs while it exists, used or idle; utilisation is reported beside it, not priced.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Dict, List, Sequence

from training.settings import PriceConfig
from training.observability.sampler import Sample


@dataclass
class Usage:
    wall_s: float
    node_hours: float
    cpu_hours: float
    gpu_hours: float
    memory_gb_hours: float

    def metrics(self) -> Dict[str, float]:
        return {f"usage_{k}": v for k, v in asdict(self).items()}


@dataclass
class Cost:
    total: float
    currency: str
    parts: Dict[str, float]   # cpu, memory, gpu, node -> cost

    def describe(self) -> str:
        return f"{self.total:.4f} {self.currency}"


def added(a: Usage, b: Usage) -> Usage:
    """Two stretches of a run's observed time together (the attempts of a resumed run)."""
    return Usage(*[getattr(a, f.name) + getattr(b, f.name) for f in fields(Usage)])


def usage(samples: Sequence[Sample], start: float, end: float) -> Usage:
    """Integrate the sampled cluster size over [start, end] (seconds since the epoch)."""
    points: List[Sample] = sorted((s for s in samples if s.t <= end), key=lambda s: s.t)
    hours = {"node": 0.0, "cpu": 0.0, "gpu": 0.0, "memory": 0.0}
    for i, s in enumerate(points):
        begin = start if i == 0 else max(s.t, start)   # the first sample also stands for the time before it
        until = points[i + 1].t if i + 1 < len(points) else end
        dt_h = max(0.0, until - begin) / 3600.0
        hours["node"] += s.nodes * dt_h
        hours["cpu"] += s.cpus * dt_h
        hours["gpu"] += s.gpus * dt_h
        hours["memory"] += s.memory_gb * dt_h
    return Usage(wall_s=max(0.0, end - start), node_hours=hours["node"], cpu_hours=hours["cpu"],
                 gpu_hours=hours["gpu"], memory_gb_hours=hours["memory"])


def cost(u: Usage, prices: PriceConfig) -> Cost:
    parts = {"cpu": u.cpu_hours * prices.cpu_hour, "memory": u.memory_gb_hours * prices.memory_gb_hour,
             "gpu": u.gpu_hours * prices.gpu_hour, "node": u.node_hours * prices.node_hour}
    return Cost(total=sum(parts.values()), currency=prices.currency, parts=parts)


def summary_line(u: Usage, c: Cost) -> str:
    return (f"Resources:     {u.node_hours:.4f} node-h, {u.cpu_hours:.4f} CPU-h, {u.gpu_hours:.4f} GPU-h, "
            f"{u.memory_gb_hours:.3f} GB-h memory over {u.wall_s:.1f}s; estimated cost {c.describe()} "
            "(observability.prices)")

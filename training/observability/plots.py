"""Utilisation over time (one run) and cost against wall time (many runs), as PNG."""

from __future__ import annotations

from typing import List, Sequence, Tuple

from training.observability.sampler import Sample


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def utilisation_plot(samples: Sequence[Sample], path: str, title: str) -> str:
    """CPU / GPU reserved and busy, memory and object store, over the run's elapsed seconds."""
    plt = _pyplot()
    t0 = samples[0].t
    x = [s.t - t0 for s in samples]
    fig, (cpu, mem) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    cpu.plot(x, [s.cpus for s in samples], "k--", label="CPUs in cluster")
    cpu.plot(x, [s.cpus - s.cpus_free for s in samples], label="CPUs reserved by tasks/actors")
    busy = [s.cpus_busy() for s in samples]
    if any(b is not None for b in busy):
        cpu.plot(x, [b or 0.0 for b in busy], label="CPUs busy on the nodes (node metrics)")
    if any(s.gpus for s in samples):
        cpu.plot(x, [s.gpus - s.gpus_free for s in samples], label="GPUs reserved")
    cpu.set_ylabel("CPUs / GPUs")
    cpu.legend(fontsize=8)
    cpu.grid(alpha=0.3)
    used = [sum(u.memory_used_gb or 0.0 for u in s.per_node.values()) for s in samples]
    mem.plot(x, [s.memory_gb for s in samples], "k--", label="memory for Ray (memory + object store)")
    mem.plot(x, used, label="memory used on the nodes")
    mem.plot(x, [s.object_store_gb - s.object_store_free_gb for s in samples], label="object store used")
    mem.set_ylabel("GB")
    mem.set_xlabel("seconds since the run started")
    mem.legend(fontsize=8)
    mem.grid(alpha=0.3)
    cpu.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cost_time_plot(runs: List[Tuple[str, float, float]], currency: str, path: str, title: str) -> str:
    """One point per run: (label, wall seconds, cost)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.scatter([r[1] / 60 for r in runs], [r[2] for r in runs], color="#3b7dd8")
    for label, wall, c in runs:
        ax.annotate(label, (wall / 60, c), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("wall time (minutes)")
    ax.set_ylabel(f"estimated cost ({currency})")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

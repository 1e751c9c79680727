"""Observability of a run: cluster utilisation over time, resource hours and estimated cost,
Ray logs and a cluster summary kept in MLflow after the cluster is gone, and plots.

Workloads use `observe` (see recorder.py); `python -m training.observability.compare` plots
cost against wall time for the runs of an experiment.
"""

from training.observability.recorder import Observer, observe

__all__ = ["Observer", "observe"]

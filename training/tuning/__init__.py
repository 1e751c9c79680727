"""Pieces of the tune workload: the search space, the trial functions, per-trial MLflow runs."""

"""The driver-side pieces every workload shares: Ray, MLflow, the run skeleton, the worker shape."""

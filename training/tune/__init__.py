"""The tune workload: a Ray Tune search (ASHA, Optuna TPE) over one GBDT library."""

"""The XGBoost, LightGBM and ensemble workloads. Ray-free at import: the registered model imports this package."""

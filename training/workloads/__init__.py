"""One module per workload; each exposes `run(cfg) -> RunResult`."""

from __future__ import annotations

from typing import Callable, Dict


MODULES = {"xgboost": "gbdt", "lightgbm": "gbdt", "ensemble": "gbdt", "tune": "tune", "bert": "bert"}


def registry() -> Dict[str, Callable]:
    """Workload name -> its `run`, importing only the module that is asked for (the BERT
    workload's imports alone take ~3 s)."""
    import importlib

    def runner(module: str) -> Callable:
        return lambda cfg: importlib.import_module(f"training.workloads.{module}").run(cfg)

    return {name: runner(module) for name, module in MODULES.items()}

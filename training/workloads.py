"""The workloads: which module runs each, and which schema its conf/workload/*.yaml names.

A new workload is a folder with a `config.py` (its schema, with a `check(root)` method) and a
`workload.py` (`run(cfg)`), plus one line in each table below.
"""

from __future__ import annotations

import importlib
from typing import Callable, Dict

# workload.name -> the module whose run(cfg) runs it (imported only when asked for: the BERT
# workload's imports alone are several seconds).
RUNNERS = {"xgboost": "training.gbdt.workload", "lightgbm": "training.gbdt.workload",
           "ensemble": "training.gbdt.workload", "tune": "training.tune.workload",
           "bert": "training.bert.workload"}

# The schema names in conf/workload/*.yaml's defaults list -> their dataclasses.
SCHEMAS = {"gbdt_schema": "training.gbdt.config.GBDTWorkloadConfig",
           "tune_schema": "training.tune.config.TuneWorkloadConfig",
           "bert_schema": "training.bert.config.BertWorkloadConfig"}


def registry() -> Dict[str, Callable]:
    """Workload name -> its `run`, importing only the module that is asked for."""
    def runner(module: str) -> Callable:
        return lambda cfg: importlib.import_module(module).run(cfg)

    return {name: runner(module) for name, module in RUNNERS.items()}

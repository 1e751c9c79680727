"""The workloads: which module runs each, and which schema its conf/workload/*.yaml names.

A new workload is a folder with a `config.py` (its schema, with a `check(root)` method) and a
`workload.py` (`run(cfg)`), plus one line in each table below.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict

from training.errors import UserError

# workload.name -> the module whose run(cfg) runs it (imported only when asked for: the BERT
# workload's imports alone are several seconds).
RUNNERS = {"xgboost": "training.gbdt.workload", "lightgbm": "training.gbdt.workload",
           "ensemble": "training.gbdt.workload", "tune": "training.tune.workload",
           "bert": "training.bert.workload"}

# workload.name -> the schema its preset must name: a preset of one schema with another
# workload's name would pass the checks and fail in the runner, on a field it lacks.
SCHEMA_OF = {"xgboost": "gbdt_schema", "lightgbm": "gbdt_schema", "ensemble": "gbdt_schema",
             "tune": "tune_schema", "bert": "bert_schema"}

# The schema names in conf/workload/*.yaml's defaults list -> their dataclasses.
SCHEMAS = {"gbdt_schema": "training.gbdt.config.GBDTWorkloadConfig",
           "tune_schema": "training.tune.config.TuneWorkloadConfig",
           "bert_schema": "training.bert.config.BertWorkloadConfig"}


def check_name(workload: Any) -> None:
    """`workload.name` picks the runner; the preset's schema must be the one that runner reads."""
    typed = f"{type(workload).__module__}.{type(workload).__qualname__}"
    schema = next((s for s, target in SCHEMAS.items() if target == typed), None)
    if schema is None:  # a user's preset without the schema in its defaults list: an untyped mapping
        raise UserError(f"the workload preset names no schema: start it with defaults: [<schema>, _self_], "
                        f"<schema> one of {', '.join(SCHEMAS)}")
    name = workload.name
    if name not in RUNNERS:
        raise UserError(f"unknown workload.name '{name}' (known: {', '.join(RUNNERS)})")
    if SCHEMA_OF[name] != schema:
        fits = [n for n, s in SCHEMA_OF.items() if s == schema]
        raise UserError(f"workload.name={name} does not match this preset's schema, {schema} (its names: "
                        f"{', '.join(fits)}); to run {name}, pick its preset: workload={name}")


def registry() -> Dict[str, Callable]:
    """Workload name -> its `run`, importing only the module that is asked for."""
    def runner(module: str) -> Callable:
        return lambda cfg: importlib.import_module(module).run(cfg)

    return {name: runner(module) for name, module in RUNNERS.items()}

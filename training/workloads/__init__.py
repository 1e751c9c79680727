"""One module per workload; each exposes `run(cfg) -> RunResult`."""

from __future__ import annotations

from typing import Callable, Dict


def registry() -> Dict[str, Callable]:
    from training.workloads import bert, gbdt, tune

    return {"xgboost": gbdt.run, "lightgbm": gbdt.run, "ensemble": gbdt.run, "tune": tune.run,
            "bert": bert.run}

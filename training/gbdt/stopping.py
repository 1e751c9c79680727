"""Early stopping of a member: the best validation round so far, and when to stop boosting.

Every worker of a member boosts in lockstep, so every worker must stop at the same round and
judge the same value. XGBoost combines its validation metric across workers already; a library
that scores each worker's validation shard on its own (LightGBM, `GBDTKind.local_validation`)
gets its value combined here, over XGBoost's collective, which the slot's backend keeps up for
the whole run (training/gbdt/backend.py).
"""

from __future__ import annotations

import math
from typing import List, Optional

import numpy as np


class EarlyStopping:
    """`patience`: rounds without a lower validation value before boosting stops (None: never).
    `history`: the values of the rounds done before (a resumed member), round 1 first."""

    def __init__(self, patience: Optional[int], history: List[float]):
        self.patience = patience
        self.best_round, self.best_value = 0, math.inf
        for done, value in enumerate(history, start=1):
            self.update(done, value)

    @property
    def enabled(self) -> bool:
        return bool(self.patience)

    def update(self, done: int, value: float) -> None:
        if value < self.best_value:  # the metrics used here (rmse, mae) are lower-is-better
            self.best_round, self.best_value = done, value

    def due(self, done: int, total: int) -> bool:
        """Stop after round `done`: no better value for `patience` rounds, before the last round."""
        return self.enabled and done < total and done - self.best_round >= self.patience

    def kept_rounds(self, done: int) -> int:
        """Rounds the final model keeps: the best round when early stopping is on, else all."""
        return self.best_round if self.enabled and self.best_round else done


def combined(value: float, rows: int, metric: str) -> float:
    """This worker's validation `metric` over its `rows` rows, combined with every other worker's
    into the value over the whole validation split (every worker must call it, each round)."""
    squared = metric == "rmse"
    mine = value * value if squared else value
    total = summed_over_workers(np.array([rows * mine if rows else 0.0, float(rows)], dtype=np.float64))
    mean = total[0] / total[1] if total[1] else math.nan
    return float(math.sqrt(mean) if squared else mean)


def summed_over_workers(part: np.ndarray) -> np.ndarray:
    """The element-wise sum of every worker's `part` (every worker must call it, in the same order)."""
    import xgboost.collective as collective

    return collective.allreduce(np.asarray(part, np.float64), collective.Op.SUM)
